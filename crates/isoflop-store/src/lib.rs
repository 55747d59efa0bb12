//! isoflop's durable state: sweeps, runs, attempts, events (every state transition),
//! progress points, checkpoints and eval results.
//!
//! [`Store`] is the one interface the coordinator and the CLI use; [`SqliteStore`] is the
//! embedded backend (WAL, foreign keys, versioned migrations). A PostgreSQL backend will
//! implement the same trait and run the same test suite. Every state change goes through
//! [`Store::transition`] (or a method built on it), which checks the edge against
//! [`RunState::can_transition`] and records an event in the same transaction.

pub mod conformance;
mod model;
mod sqlite;

pub use model::*;
pub use sqlite::SqliteStore;

use isoflop_core::{FailureClass, RunState, TransitionError};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database {path} has schema version {found}, newer than this build's {supported}")]
    TooNew { path: String, found: i64, supported: i64 },
    #[error("run {run_id}: {source}")]
    Transition { run_id: String, source: TransitionError },
    #[error("{what} `{key}` not found")]
    NotFound { what: &'static str, key: String },
    #[error("sweep `{sweep}` already exists with a different spec; choose another name")]
    SweepConflict { sweep: String },
    #[error("run {run_id} attempt {attempt} is no longer active")]
    StaleAttempt { run_id: String, attempt: u64 },
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The storage interface of isoflop. Implementations are safe to share between threads;
/// each method is one transaction.
pub trait Store: Send + Sync {
    /// Records a sweep and its runs. Runs already known (same id) are shared, not duplicated;
    /// new runs start `queued` (a `planned -> queued` event each). Submitting the same sweep
    /// name with the same spec again is a no-op that returns the same result; a different
    /// spec under an existing name is [`StoreError::SweepConflict`].
    fn submit_sweep(&self, sweep: &NewSweep, runs: &[NewRun]) -> Result<SubmitResult>;
    /// A sweep by name.
    fn sweep(&self, name: &str) -> Result<Option<SweepRow>>;
    /// All sweeps, newest first.
    fn sweeps(&self) -> Result<Vec<SweepRow>>;
    /// The runs of a sweep in plan order, each with its newest progress point.
    fn sweep_runs(&self, sweep: &str) -> Result<Vec<RunRow>>;
    /// One run (with the first sweep-scoped name it was given).
    fn run(&self, run_id: &str) -> Result<Option<RunRow>>;
    /// Runs in a state, in plan order; `queued` runs whose back-off has not passed are left out
    /// when `ready_at_ms` is given.
    fn runs_in_state(&self, state: RunState, ready_at_ms: Option<i64>) -> Result<Vec<RunRow>>;

    /// Moves a run to `to` if the edge is legal, recording an event.
    fn transition(&self, run_id: &str, to: RunState, change: &Change) -> Result<RunState>;
    /// `queued|blocked -> launching` and a new attempt with its token hash and lease.
    fn start_attempt(&self, run_id: &str, token_hash: &str, lease_expires_ms: i64) -> Result<AttemptRow>;
    /// Records what the executor knows the attempt by (a pid, a Job name).
    fn set_executor_ref(&self, run_id: &str, attempt: u64, executor_ref: &str) -> Result<()>;
    /// An attempt.
    fn attempt(&self, run_id: &str, attempt: u64) -> Result<Option<AttemptRow>>;
    /// Active attempts (outcome `active`) of all runs.
    fn active_attempts(&self) -> Result<Vec<AttemptRow>>;
    /// `launching -> running` when the worker attaches; records the resume step.
    fn attach(&self, run_id: &str, attempt: u64, resume_step: u64, lease_expires_ms: i64) -> Result<()>;
    /// Records the step an attempt's worker actually resumed from.
    fn set_resume_step(&self, run_id: &str, attempt: u64, step: u64) -> Result<()>;
    /// Extends the lease of an active attempt.
    fn renew_lease(&self, run_id: &str, attempt: u64, lease_expires_ms: i64) -> Result<()>;
    /// Ends an attempt and moves its run, in one transaction: the attempt's outcome is set
    /// (only if still active, else [`StoreError::StaleAttempt`]) and the run goes to `to`.
    fn end_attempt(&self, run_id: &str, attempt: u64, end: &AttemptEnd, to: RunState) -> Result<()>;

    /// Appends progress points of an attempt (idempotent per step).
    fn add_progress(&self, run_id: &str, attempt: u64, points: &[ProgressPoint]) -> Result<()>;
    /// All progress points of a run, oldest first.
    fn progress(&self, run_id: &str) -> Result<Vec<ProgressPoint>>;
    /// Records a checkpoint the worker saved.
    fn add_checkpoint(&self, run_id: &str, attempt: u64, ckpt: &CheckpointRow) -> Result<()>;
    /// All recorded checkpoints of a run, oldest step first.
    fn checkpoints(&self, run_id: &str) -> Result<Vec<CheckpointRow>>;
    /// The newest checkpoint of a run.
    fn latest_checkpoint(&self, run_id: &str) -> Result<Option<CheckpointRow>>;
    /// Stores the eval results of a run (replacing older ones per distribution).
    fn put_evals(&self, run_id: &str, attempt: u64, evals: &[EvalRow]) -> Result<()>;
    /// The eval results of a run.
    fn evals(&self, run_id: &str) -> Result<Vec<EvalRow>>;
    /// The state-transition events of a run, oldest first.
    fn events(&self, run_id: &str) -> Result<Vec<EventRow>>;
    /// State-transition events with id greater than `after`, across runs, oldest first.
    fn events_since(&self, after: i64) -> Result<Vec<EventRow>>;
}

/// What accompanies a state change (recorded with its event).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    pub attempt: Option<u64>,
    pub failure_class: Option<FailureClass>,
    pub message: String,
    /// For `-> queued`: the run may not launch before this time (back-off).
    pub not_before_ms: Option<i64>,
    /// For `-> queued` after a counted failure: spend one retry.
    pub spend_retry: bool,
    /// For `-> queued` on a user's resume: the retry budget starts afresh.
    pub reset_retries: bool,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
