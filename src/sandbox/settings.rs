//! The sandbox's settings, owned here and filled in by `config`: the minimum isolation level,
//! the dedicated uid range, the rlimits and the test-only platform emulation.

use std::ops::RangeInclusive;

pub use super::filter::TestDeny;
use super::probe::Verdict;

/// Settings of the stage sandbox.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SCALR_AGENT_MIN_ISOLATION`: tasks on a platform whose verdict is below it are refused.
    pub min_isolation: Verdict,
    /// `SCALR_AGENT_TASK_UID_RANGE`: one uid (and the gid of the same number) per running task.
    pub uid_range: RangeInclusive<u32>,
    pub rlimits: RlimitSettings,
    /// `SCALR_AGENT_SANDBOX_TEST_DENY`: test-only emulation of a weaker platform.
    pub test_deny: Vec<TestDeny>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            min_isolation: Verdict::Degraded,
            uid_range: DEFAULT_UID_RANGE,
            rlimits: RlimitSettings::default(),
            test_deny: Vec::new(),
        }
    }
}

/// Resource limits applied to every stage process (`RLIMIT_CORE` is always 0, `RLIMIT_AS` is
/// never set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RlimitSettings {
    pub nofile: u64,
    pub fsize_bytes: u64,
    /// Counted per uid: applied only when the task has a dedicated uid.
    pub nproc: u64,
}

impl Default for RlimitSettings {
    fn default() -> Self {
        RlimitSettings {
            nofile: 8192,
            fsize_bytes: 10240 << 20,
            nproc: 4096,
        }
    }
}

/// Default `SCALR_AGENT_TASK_UID_RANGE`.
pub const DEFAULT_UID_RANGE: RangeInclusive<u32> = 20000..=20999;
