//! What the helper applies to one stage process before exec. (Interim: the isolation layers
//! arrive with the sandbox work; today the helper applies only the process-control layers.)

use serde::{Deserialize, Serialize};

/// The isolation requested for one stage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Policy {}

/// One layer and whether it was applied.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerReport {
    pub name: String,
    pub applied: bool,
    pub detail: String,
}
