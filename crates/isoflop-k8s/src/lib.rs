//! The Kubernetes executor of isoflop.
//!
//! * the `executor: kubernetes` settings live in `isoflop_core::kubernetes` (validated with the spec).
//! * [`manifest`]: pure functions from (sweep, run, attempt, settings) to the attempt's
//!   batch/v1 Job and the Secret holding its token. Names are deterministic from run and
//!   attempt, so a retried create never makes a second Job.

pub mod api;
pub mod executor;
pub mod manifest;
pub mod rbac;
pub mod status;

pub use executor::{KubeExecutorError, KubernetesExecutor};
pub use isoflop_core::kubernetes::{KubernetesSpec, VolumeSpec};
pub use manifest::{AttemptRef, job_for, job_name, labels, secret_for};
