//! seccomp-BPF programs: the stage filter and the test-only "weaker platform" filters.
//!
//! The stage filter returns `EPERM` for the system calls job code never needs and that would
//! let it inspect or escape the sandbox (ptrace, `process_vm_*`, mounts, namespaces, bpf,
//! perf, keyrings, modules, kexec, userfaultfd), and for `clone` with any namespace flag
//! (otherwise `clone(CLONE_NEWUSER)` would bypass the `unshare` rule). Everything else is
//! allowed: this is a deny list on top of uid separation and Landlock, not a full allow list.
//!
//! `seccompiler` compiles the rules but matches syscall numbers only for the native ABI, so a
//! hand-written prefix runs first:
//! - on x86-64, any number with the x32 bit (`0x40000000`) returns `ENOSYS`, exactly what a
//!   kernel built without x32 support (most distributions) answers, so the x32 aliases of the
//!   denied calls cannot be used;
//! - `clone3` returns `ENOSYS` (its flags live in memory a filter cannot read); libc and the Go
//!   runtime then fall back to `clone`, whose flags the filter checks.
//!
//! Any other architecture value (i386 through `int 0x80` on x86-64, arm32 on aarch64) kills the
//! process: that is `seccompiler`'s own architecture check.

use std::collections::BTreeMap;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

/// A compiled program, ready for `install`.
pub type Program = Vec<libc::sock_filter>;

/// The system calls the stage filter denies with `EPERM`, by name (for reports and tests).
pub const DENIED: &[(&str, libc::c_long)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("userfaultfd", libc::SYS_userfaultfd),
    // POSIX message queues outlive their creator and are found only where `/dev/mqueue` is
    // mounted: a stage may not create one.
    ("mq_open", libc::SYS_mq_open),
];

/// Namespace flags refused in `clone`'s first argument.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

const SYS_CLONE3: u32 = 435;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

#[cfg(target_arch = "x86_64")]
const ARCH: (TargetArch, u32) = (TargetArch::x86_64, 0xC000_003E);
#[cfg(target_arch = "aarch64")]
const ARCH: (TargetArch, u32) = (TargetArch::aarch64, 0xC000_00B7);

/// Building a filter failed (a bug in the rules, not a platform limit).
#[derive(Debug, thiserror::Error)]
#[error("cannot compile the seccomp filter: {0}")]
pub struct FilterError(String);

/// The stage filter, with the x32/clone3 prefix.
pub fn stage_filter() -> Result<Program, FilterError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(_, nr)| (*nr, Vec::new())).collect();
    let mut clone_rules = Vec::new();
    for flag in CLONE_NAMESPACE_FLAGS {
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(*flag),
            *flag,
        )
        .map_err(|e| FilterError(e.to_string()))?;
        clone_rules.push(SeccompRule::new(vec![cond]).map_err(|e| FilterError(e.to_string()))?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let mut program = prefix();
    program.extend(compile(rules, libc::EPERM)?);
    Ok(program)
}

/// A capability the agent pretends the platform lacks (tests only), by running itself behind a
/// seccomp filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestDeny {
    /// `landlock_*` system calls fail with `ENOSYS`, as on a kernel without Landlock (gVisor).
    Landlock,
    /// `setuid`, `setreuid` and `setresuid` fail with `EPERM`, as without `CAP_SETUID`.
    Setresuid,
    /// `openat2` fails with `ENOSYS`, as before Linux 5.6: `taskfs` walks paths instead.
    Openat2,
}

/// Test-only filters emulating a weaker platform: one program per errno.
pub fn test_deny_filters(deny: &[TestDeny]) -> Result<Vec<Program>, FilterError> {
    let mut programs = Vec::new();
    for d in deny {
        let (calls, errno): (&[libc::c_long], i32) = match d {
            TestDeny::Landlock => (
                &[
                    libc::SYS_landlock_create_ruleset,
                    libc::SYS_landlock_add_rule,
                    libc::SYS_landlock_restrict_self,
                ],
                libc::ENOSYS,
            ),
            TestDeny::Setresuid => (
                &[libc::SYS_setuid, libc::SYS_setreuid, libc::SYS_setresuid],
                libc::EPERM,
            ),
            TestDeny::Openat2 => (&[libc::SYS_openat2], libc::ENOSYS),
        };
        let rules = calls.iter().map(|nr| (*nr, Vec::new())).collect();
        programs.push(compile(rules, errno)?);
    }
    Ok(programs)
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<Program, FilterError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        ARCH.0,
    )
    .map_err(|e| FilterError(e.to_string()))?;
    let bpf: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| FilterError(e.to_string()))?;
    Ok(bpf
        .into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect())
}

const fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

const LD_ABS_W: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// `offsetof(struct seccomp_data, arch)` and `nr`.
const ARCH_OFFSET: u32 = 4;
const NR_OFFSET: u32 = 0;

/// The hand-written prefix; on a foreign architecture it falls through to `seccompiler`'s
/// program, which kills the process.
fn prefix() -> Program {
    let enosys = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    if cfg!(target_arch = "x86_64") {
        vec![
            stmt(LD_ABS_W, ARCH_OFFSET),
            jump(JEQ_K, ARCH.1, 0, 5),
            stmt(LD_ABS_W, NR_OFFSET),
            jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
            stmt(RET_K, enosys),
            jump(JEQ_K, SYS_CLONE3, 0, 1),
            stmt(RET_K, enosys),
        ]
    } else {
        vec![
            stmt(LD_ABS_W, ARCH_OFFSET),
            jump(JEQ_K, ARCH.1, 0, 3),
            stmt(LD_ABS_W, NR_OFFSET),
            jump(JEQ_K, SYS_CLONE3, 0, 1),
            stmt(RET_K, enosys),
        ]
    }
}

/// Installs `program` on the calling thread (`flags` = 0) or the whole process
/// (`SECCOMP_FILTER_FLAG_TSYNC`). Needs `no_new_privs` or `CAP_SYS_ADMIN`; does not set
/// `no_new_privs` itself, so reports stay honest. Allocation-free; returns the errno.
pub fn install(program: &[libc::sock_filter], flags: libc::c_ulong) -> Result<(), i32> {
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points to `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(super::sys::errno())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_filter_compiles_with_prefix() {
        let key = |i: &libc::sock_filter| (i.code, i.jt, i.jf, i.k);
        let p = stage_filter().unwrap();
        let pre = prefix();
        assert!(p.iter().zip(&pre).all(|(a, b)| key(a) == key(b)));
        assert!(p.len() > pre.len() + DENIED.len());
        assert!(p.len() < 4096);
        // Every jump in the prefix lands inside the program.
        for (i, ins) in pre.iter().enumerate() {
            assert!(i + 1 + usize::from(ins.jf) <= pre.len());
        }
    }

    #[test]
    fn test_deny_filters_one_per_errno() {
        let p = test_deny_filters(&[TestDeny::Landlock, TestDeny::Setresuid]).unwrap();
        assert_eq!(p.len(), 2);
        assert!(test_deny_filters(&[]).unwrap().is_empty());
    }
}
