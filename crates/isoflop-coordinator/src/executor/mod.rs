//! Where attempts run. [`Executor`] is the seam between the coordinator's bookkeeping and the
//! machinery that starts workers: [`local`] spawns processes on this machine, the Kubernetes
//! executor (`isoflop-k8s`) creates Jobs, [`external`] hands attempts to an outside launcher
//! through a spool directory, and [`Detached`] serves a coordinator that only
//! answers control calls.

pub mod detached;
pub mod external;
pub mod local;

pub use detached::Detached;
pub use external::{ExternalExecutor, ExternalLaunch};
pub use local::LocalExecutor;

/// The longest [`Executor::stop_orphan`] waits for an orphaned worker: SIGTERM, a grace, then
/// SIGKILL and a last wait.
pub const ORPHAN_STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(40);

/// An attempt an earlier coordinator started, as the store knows it. Its `executor_ref` is
/// empty when that coordinator died between starting the worker and recording its reference:
/// an executor that can find the worker another way (by run and attempt) must.
#[derive(Debug, Clone, Copy)]
pub struct Orphan<'a> {
    pub run_id: &'a str,
    pub attempt: u64,
    pub executor_ref: &'a str,
}

impl<'a> Orphan<'a> {
    /// The stored attempt `a` as an orphan.
    pub fn of(a: &'a isoflop_store::AttemptRow) -> Self {
        Orphan { run_id: &a.run_id, attempt: a.attempt, executor_ref: &a.executor_ref }
    }
}

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
    /// The directory of the run's files under the artifacts root (its id, or the id it had
    /// before a migration re-keyed it).
    pub artifacts_key: String,
    /// An evaluation job (an executor may give it other resources than training).
    pub eval: bool,
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
            .field("artifacts_key", &self.artifacts_key)
            .field("eval", &self.eval)
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

/// Errors starting workers or reading what they left.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("cannot start worker for run {run_id}: {source}")]
    Spawn { run_id: String, source: std::io::Error },
    #[error("started a worker for run {run_id} but the system gave it no process id")]
    NoPid { run_id: String },
    #[error("cannot open log file {path}: {source}")]
    Log { path: PathBuf, source: std::io::Error },
    #[error("this coordinator only answers control calls; it launches no workers")]
    Detached,
    #[error("spool {path}: {source}")]
    Spool { path: PathBuf, source: std::io::Error },
    /// The cluster refused or failed a request (the message is the API server's).
    #[error("cluster: {0}")]
    Cluster(String),
}

/// Starts and stops workers. Exits (and, for cluster executors, placement) are reported as
/// [`ExecutorEvent`]s on the channel given at construction.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
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
    /// Best effort for attempts of an earlier coordinator: stop a worker known only by what
    /// the store kept of its attempt. May block until it is gone (at most
    /// [`ORPHAN_STOP_LIMIT`]) when [`Executor::orphan_alive`] said it runs.
    fn stop_orphan(&self, orphan: &Orphan<'_>);
    /// Whether a worker of an earlier coordinator, known by what the store kept of its
    /// attempt, still runs on this machine (so that [`Executor::stop_orphan`] waits for it).
    /// The coordinator then stops it in the background and keeps its attempt live meanwhile.
    fn orphan_alive(&self, _orphan: &Orphan<'_>) -> bool {
        false
    }
    /// Runs were cancelled: remove whatever the executor keeps for them (Kubernetes: all their
    /// Jobs, finished or not, with their pods and Secrets). This is the one place cluster
    /// objects of a run are deleted; the work may finish in the background (see
    /// [`Executor::shutdown`]).
    fn forget_runs(&self, _run_ids: &[String]) {}
    /// Whether workers outlive the coordinator (cluster Jobs): a stopping coordinator then
    /// leaves them running for the next one to adopt instead of stopping them.
    fn survives_restart(&self) -> bool {
        false
    }
    /// The log of a running attempt read from where it runs, when its log file is not written
    /// yet (Kubernetes: its pod's log, copied to the file when the attempt ends). `None` when
    /// the executor has none to give.
    async fn live_log(&self, _run_id: &str, _attempt: u64) -> Result<Option<String>, ExecutorError> {
        Ok(None)
    }
    /// Waits for the executor's background work (creates, deletes, log copies) to finish and
    /// stops its watchers. Called once, after the scheduler has stopped.
    async fn shutdown(&self) {}
    /// Whether the executor can launch and follow workers now (`/readyz`); why not, if not.
    /// Local processes always can; Kubernetes once its watchers have listed and while they
    /// watch without errors.
    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }
}
