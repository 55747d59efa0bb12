//! Where attempts run. [`Executor`] is the seam between the coordinator's bookkeeping and the
//! machinery that starts workers; `local` spawns processes on this machine.

pub mod local;

pub use local::LocalExecutor;

use isoflop_core::FailureClass;
use std::path::PathBuf;

/// Everything an executor needs to start one attempt's worker.
#[derive(Clone)]
pub struct LaunchSpec {
    pub run_id: String,
    /// The sweep that launched the run (a run shared by sweeps is trained once).
    pub sweep: String,
    pub attempt: u64,
    /// Bearer token of this attempt (secret: not printed by `Debug`).
    pub token: String,
    /// URL at which the worker reaches the coordinator's worker API.
    pub coordinator_url: String,
    /// File that receives the worker's stdout and stderr.
    pub log_path: PathBuf,
}

impl std::fmt::Debug for LaunchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchSpec")
            .field("run_id", &self.run_id)
            .field("sweep", &self.sweep)
            .field("attempt", &self.attempt)
            .field("token", &"<redacted>")
            .field("coordinator_url", &self.coordinator_url)
            .field("log_path", &self.log_path)
            .finish()
    }
}

/// How a worker ended, as the executor saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExitReport {
    pub run_id: String,
    pub attempt: u64,
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal number, if a signal ended it.
    pub signal: Option<i32>,
    /// The failure class, when the executor knows it (a pod OOMKilled, a node gone); used
    /// only if the worker did not report an outcome itself.
    pub class: Option<FailureClass>,
    /// What the executor saw, for people (`pod OOMKilled`, the scheduler's reason).
    pub reason: Option<String>,
}

/// What an executor tells the coordinator about an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorEvent {
    /// The worker ended.
    Exited(ExitReport),
    /// The attempt cannot be placed now; `message` says why (the scheduler's words).
    Blocked { run_id: String, attempt: u64, message: String },
    /// A blocked attempt was placed; its worker is starting.
    Placed { run_id: String, attempt: u64 },
}

impl From<ExitReport> for ExecutorEvent {
    fn from(e: ExitReport) -> Self {
        ExecutorEvent::Exited(e)
    }
}

impl ExitReport {
    /// Human description: `exit code 1`, `killed by signal 9 (SIGKILL)`, or the executor's
    /// reason followed by the exit code.
    pub fn describe(&self) -> String {
        let status = self.describe_status();
        match &self.reason {
            Some(r) if self.code.is_some() || self.signal.is_some() => format!("{r} ({status})"),
            Some(r) => r.clone(),
            None => status,
        }
    }

    fn describe_status(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => {
                let name = nix::sys::signal::Signal::try_from(s).map(|s| s.as_str()).unwrap_or("?");
                format!("killed by signal {s} ({name})")
            }
            (None, None) => "ended for an unknown reason".into(),
        }
    }
}

/// Errors starting or signalling workers.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("cannot start worker for run {run_id}: {source}")]
    Spawn { run_id: String, source: std::io::Error },
    #[error("cannot open log file {path}: {source}")]
    Log { path: PathBuf, source: std::io::Error },
    /// An executor backed by a remote system (Kubernetes) refused or failed the request.
    #[error("{0}")]
    Remote(String),
}

/// Starts and stops workers. Exits (and, for cluster executors, placement) are reported as
/// [`ExecutorEvent`]s on the channel given at construction.
pub trait Executor: Send + Sync {
    /// Short name (`local`).
    fn name(&self) -> &'static str;
    /// How many attempts may run at once.
    fn slots(&self) -> usize;
    /// Starts a worker; returns what the executor knows it by (stored with the attempt).
    fn launch(&self, spec: &LaunchSpec) -> Result<String, ExecutorError>;
    /// Asks a worker to checkpoint and stop (SIGTERM).
    fn stop(&self, run_id: &str, attempt: u64);
    /// Ends a worker at once (SIGKILL).
    fn kill(&self, run_id: &str, attempt: u64);
    /// Whether the executor still tracks a live worker for the attempt.
    fn is_tracking(&self, run_id: &str, attempt: u64) -> bool;
    /// Best effort for attempts of an earlier coordinator: stop a worker known only by the
    /// reference stored with its attempt.
    fn stop_orphan(&self, executor_ref: &str, run_id: &str);
    /// A run was cancelled: remove whatever the executor keeps for it (Kubernetes: all its
    /// Jobs, finished or not, and their pods).
    fn forget_run(&self, _run_id: &str) {}
    /// Whether workers outlive the coordinator (cluster Jobs): a stopping coordinator then
    /// leaves them running for the next one to adopt instead of stopping them.
    fn survives_restart(&self) -> bool {
        false
    }
}
