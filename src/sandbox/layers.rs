//! Applying a [`Policy`] in the forked child, right before exec. (Interim: process-control
//! layers only.)

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};

use super::policy::{LayerReport, Policy};

/// A layer that was requested but could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("sandbox layer {layer}: {source}")]
pub struct LayerError {
    pub layer: &'static str,
    pub source: nix::Error,
}

/// Applies the layers in order. Runs in the child of the single-threaded helper.
pub fn apply(_policy: &Policy) -> Result<Vec<LayerReport>, LayerError> {
    let err = |layer| move |source| LayerError { layer, source };
    nix::unistd::setsid().map_err(err("session"))?;
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: resetting a disposition to SIG_DFL installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(err("signals"))?;
    Ok(vec![LayerReport {
        name: "session".into(),
        applied: true,
        detail: "new session and process group; signals reset".into(),
    }])
}
