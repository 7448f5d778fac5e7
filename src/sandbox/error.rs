//! [`LayerError`]: a sandbox layer that could not be applied, shared by `layers` (stages)
//! and `probe` (the agent's own hardening and test-only emulation).

use std::io;

/// A requested layer could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("sandbox layer `{layer}` failed: {what}: {source}")]
pub struct LayerError {
    /// The layer's name, as in [`LayerReport::name`].
    pub layer: &'static str,
    /// The operation that failed.
    pub what: String,
    /// The OS error (its `raw_os_error` is the errno).
    #[source]
    pub source: io::Error,
}

impl LayerError {
    pub(crate) fn new(
        layer: &'static str,
        what: impl Into<String>,
        source: io::Error,
    ) -> LayerError {
        LayerError {
            layer,
            what: what.into(),
            source,
        }
    }

    /// The errno, when the failure came from a system call.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}
