//! The Kubernetes executor of isoflop.
//!
//! * [`config`]: the `executor: kubernetes` settings of a spec, validated.
//! * [`manifest`]: pure functions from (sweep, run, attempt, settings) to the attempt's
//!   batch/v1 Job and the Secret holding its token. Names are deterministic from run and
//!   attempt, so a retried create never makes a second Job.

pub mod config;
pub mod manifest;

pub use config::{KubernetesSpec, VolumeSpec};
pub use manifest::{AttemptRef, job_for, job_name, labels, secret_for};
