//! `executor`: where runs execute (worker processes here, Kubernetes Jobs, or workers an outside
//! launcher starts from a spool directory) and their retry and lease settings.

use super::{SpecError, one};
use crate::kubernetes::KubernetesSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where runs execute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecutorSpec {
    /// Worker processes on this machine.
    Local {
        #[serde(default = "one")]
        max_parallel: u64,
        #[serde(default = "one")]
        threads_per_run: u64,
        #[serde(default = "default_retries")]
        max_retries: u64,
        #[serde(default = "default_lease")]
        lease_seconds: u64,
    },
    /// One Kubernetes Job per attempt (see `docs/kubernetes.md`).
    Kubernetes(Box<KubernetesSpec>),
    /// Each attempt's launch written into a spool directory for a launcher outside isoflop
    /// (a batch system's submit script, a load generator) to start the worker.
    External(ExternalSpec),
}

/// `executor: {kind: external, spool: DIR, ...}`: attempts handed out through `DIR/pending/`
/// (see `docs/ARCHITECTURE.md`, "External launchers").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSpec {
    /// The spool directory, an absolute path the coordinator and the launcher both see.
    pub spool: PathBuf,
    #[serde(default = "one")]
    pub max_parallel: u64,
    #[serde(default = "one")]
    pub threads_per_run: u64,
    #[serde(default = "default_retries")]
    pub max_retries: u64,
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
    /// How long a launched attempt may take to attach (a batch queue's wait included).
    #[serde(default = "default_start_grace")]
    pub start_grace_seconds: u64,
}

impl ExecutorSpec {
    /// Checks the values of an executor section alone (errors name `executor.KEY` in `file`);
    /// used by the sweep spec and by `isoflop serve`'s config.
    pub fn validate(&self, file: &Path) -> Result<(), SpecError> {
        let err = |key: &str, msg: String| Err(SpecError::at(file, format!("executor.{key}"), msg));
        match self {
            ExecutorSpec::Local { max_parallel, threads_per_run, lease_seconds, .. } => {
                check_counts(*max_parallel, *threads_per_run, *lease_seconds).or_else(|(k, m)| err(k, m.into()))
            }
            ExecutorSpec::Kubernetes(k) => k.validate().or_else(|e| err(&e.key, e.message)),
            ExecutorSpec::External(x) => {
                if !x.spool.is_absolute() {
                    return err(
                        "spool",
                        format!("`{}`: expected an absolute path (the launcher reads it too)", x.spool.display()),
                    );
                }
                check_counts(x.max_parallel, x.threads_per_run, x.lease_seconds).or_else(|(k, m)| err(k, m.into()))
            }
        }
    }

    /// Whether `artifacts` is where both the coordinator and the workers see it: always for
    /// local workers; for Kubernetes an absolute path on one of the executor's volumes.
    pub fn artifacts_reachable(&self, artifacts: Option<&Path>) -> bool {
        match self {
            ExecutorSpec::Local { .. } | ExecutorSpec::External(_) => true,
            ExecutorSpec::Kubernetes(k) => {
                artifacts.is_some_and(|a| a.is_absolute() && k.volumes.iter().any(|v| a.starts_with(&v.mount_path)))
            }
        }
    }

    /// Counted retries per run.
    pub fn max_retries(&self) -> u64 {
        match self {
            ExecutorSpec::Local { max_retries, .. } => *max_retries,
            ExecutorSpec::Kubernetes(k) => k.max_retries,
            ExecutorSpec::External(x) => x.max_retries,
        }
    }

    /// Seconds without a report after which a worker is presumed lost.
    pub fn lease_seconds(&self) -> u64 {
        match self {
            ExecutorSpec::Local { lease_seconds, .. } => *lease_seconds,
            ExecutorSpec::Kubernetes(k) => k.lease_seconds,
            ExecutorSpec::External(x) => x.lease_seconds,
        }
    }

    /// CPU threads of each worker.
    pub fn threads_per_run(&self) -> u64 {
        match self {
            ExecutorSpec::Local { threads_per_run, .. } => *threads_per_run,
            ExecutorSpec::Kubernetes(k) => k.threads_per_run,
            ExecutorSpec::External(x) => x.threads_per_run,
        }
    }

    /// Attempts in flight at once.
    pub fn max_parallel(&self) -> u64 {
        match self {
            ExecutorSpec::Local { max_parallel, .. } => *max_parallel,
            ExecutorSpec::Kubernetes(k) => k.max_parallel,
            ExecutorSpec::External(x) => x.max_parallel,
        }
    }
}

/// The rules every executor's parallelism, threads and lease share: the key that breaks one,
/// and what was expected.
pub(crate) fn check_counts(
    max_parallel: u64,
    threads_per_run: u64,
    lease_seconds: u64,
) -> Result<(), (&'static str, &'static str)> {
    if max_parallel == 0 {
        return Err(("max_parallel", "expected at least 1"));
    }
    if threads_per_run == 0 {
        return Err(("threads_per_run", "expected at least 1"));
    }
    if lease_seconds < 2 {
        return Err(("lease_seconds", "expected at least 2 seconds"));
    }
    Ok(())
}

fn default_retries() -> u64 {
    3
}
fn default_lease() -> u64 {
    60
}
fn default_start_grace() -> u64 {
    300
}

impl Default for ExecutorSpec {
    fn default() -> Self {
        ExecutorSpec::Local { max_parallel: 1, threads_per_run: 1, max_retries: 3, lease_seconds: 60 }
    }
}
