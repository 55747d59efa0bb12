//! `runtime`: settings that do not change a run's result (device, precision, micro-batch,
//! checkpoint and progress cadence), so they are not part of its identity.

use crate::device::Device;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Settings that do not change a run's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSpec {
    /// Steps between checkpoints (0: only at the end and on SIGTERM).
    pub checkpoint_every: u64,
    /// Steps between progress reports.
    pub progress_every: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: Device,
    /// Sequences per forward/backward pass (gradient accumulation); `None`: the whole batch.
    /// When it does not divide the batch, the last micro-batch of a step is smaller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro_batch: Option<u64>,
    /// Numeric precision of training: `fp32`, or `bf16` mixed precision (bf16 compute, fp32
    /// master weights, moments and checkpoints).
    #[serde(skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        RuntimeSpec {
            checkpoint_every: 200,
            progress_every: 10,
            device: Device::Cpu,
            micro_batch: None,
            precision: Precision::Fp32,
        }
    }
}

/// Numeric precision of training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32.
    #[default]
    Fp32,
    /// bf16 mixed precision: forward and backward in bf16, fp32 master weights, gradients
    /// (accumulated and clipped), moments and checkpoints.
    Bf16,
}

impl Precision {
    /// True for [`Precision::Fp32`].
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    /// The spec and wire spelling: `fp32` or `bf16`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision `{s}`: expected fp32 or bf16")),
        }
    }
}
