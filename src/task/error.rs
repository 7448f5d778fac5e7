//! The runner's failures before a task's steps, each the task's `errored` reason (its text
//! goes, masked, into the task's log and `result.json`): refused by the isolation decision or
//! the run mode ([`RunError`]), not prepared ([`SetupError`], see `setup`), hook lines that are
//! not valid shell ([`HookCheckError`], see `hooks`). In a file of their own so that the
//! runner, the setup and the hooks name them without referring to each other in a circle.

use std::path::PathBuf;

/// Why the runner did not get to the task's steps (the task is `errored`; the text goes,
/// masked, into its log and `result.json`).
#[derive(Debug, thiserror::Error)]
pub(super) enum RunError {
    /// Below `SCALR_AGENT_MIN_ISOLATION`: the isolation decision's explanation.
    #[error("{0}")]
    Refused(String),
    #[error("run mode `dry` never applies: this apply task is refused")]
    DryApply,
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Cgroup(#[from] crate::sandbox::cgroup::CgroupError),
    /// The blocking thread creating the cgroup did not return.
    #[error(transparent)]
    Blocking(#[from] tokio::task::JoinError),
}

/// Why a task could not be prepared (the task is `errored`; the text goes, masked, into its
/// log and `result.json`).
#[derive(Debug, thiserror::Error)]
pub(super) enum SetupError {
    #[error("this machine's architecture has no tool builds")]
    NoBuilds,
    /// The task directory, the configuration, the policies or the working directory.
    #[error(transparent)]
    Input(#[from] super::prepare::PrepareError),
    /// A hook line that is not valid shell, or its check could not run (see `hooks`).
    #[error(transparent)]
    Hooks(#[from] HookCheckError),
    /// Boxed: the cache's error is large, and this one travels through every `?`.
    #[error(transparent)]
    Tool(Box<crate::software::SoftwareError>),
    #[error(transparent)]
    Uid(#[from] crate::sandbox::uid::LeaseError),
    #[error("the working directory is outside the task directory")]
    OutsideWorkdir,
    #[error("plan_artifacts: {0}")]
    PlanArtifact(#[source] crate::taskfs::TaskFileError),
    /// Writing or linking a file of the task directory.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("giving {} to its task uid: {source}", root.display())]
    Chown {
        root: PathBuf,
        source: std::io::Error,
    },
    /// A platform identity token file (see `identity`).
    #[error(transparent)]
    Identity(#[from] super::identity::TokenFileError),
}

impl From<crate::software::SoftwareError> for SetupError {
    fn from(e: crate::software::SoftwareError) -> SetupError {
        SetupError::Tool(Box::new(e))
    }
}

/// Why the workspace's hook lines did not pass their check (the task is `errored`).
#[derive(Debug, thiserror::Error)]
pub(super) enum HookCheckError {
    /// The `sh -n` check could not be started or waited for.
    #[error(transparent)]
    Check(#[from] crate::sandbox::stage::SpawnError),
    /// `field`: the hook's field in the task (`workspace.hooks.pre_plan`); `message`: what
    /// the shell said about it.
    #[error("{field}: not valid shell: {message}")]
    NotShell { field: String, message: String },
}
