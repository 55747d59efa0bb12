//! isoflop's durable state: sweeps, runs, attempts, events (every state transition),
//! progress points, checkpoints and eval results.
//!
//! [`Store`] is the one interface the coordinator and the CLI use. Its verbs are written once
//! ([`SqlStore`]) over a minimal transaction interface ([`sql::Tx`]) that two databases
//! implement: [`SqliteStore`], the embedded backend (WAL, foreign keys, versioned
//! migrations), and [`PgStore`], a cluster's PostgreSQL. Both run the same test suite
//! ([`conformance`]).
//!
//! Every change of a run's state is a **lifecycle verb** ([`Store::start_attempt`],
//! [`Store::attach`], [`Store::end_attempt`], [`Store::cancel_run`], ...): one transaction
//! that reads what it decides from (the attempt still active, the run's retries used, its
//! current state), checks the edge against [`RunState::can_transition`], writes the change
//! and its event, and returns the [`EventRow`] it recorded, so a caller broadcasts exactly
//! what was stored. A verb that is refused (an attempt no longer active, an illegal edge) is
//! an error the caller sees; a verb whose precondition no longer holds in a way that is not
//! an error (a lease renewed just in time) returns `None`.
//!
//! **Fencing.** An attempt's number is its fencing token: every write a worker causes
//! (attach, report, renew, end) names its attempt and is refused with
//! [`StoreError::StaleAttempt`], writing nothing, unless that attempt is active and the run's
//! newest; a new attempt cannot start while one is active. A worker that outlived its
//! coordinator, or a pod left behind by a lost node, records nothing for a run that moved on.

pub mod conformance;
pub mod copy;
mod migrate;
mod model;
mod postgres;
pub mod sql;
mod sqlite;
mod store;

pub use isoflop_core::spec::StoreLocation;
pub use model::*;
pub use postgres::{PgDb, PgLock, PgStore};
pub use sqlite::{SqliteDb, SqliteStore};
pub use store::SqlStore;

use isoflop_core::{FailureClass, RunState, TransitionError};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL URL: {message} (expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)")]
    PgUrl { message: String },
    #[error("PostgreSQL {target}: {source}")]
    PgConnect { target: String, source: ::postgres::Error },
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("database {path} has schema version {found}, newer than this build's {supported}")]
    TooNew { path: String, found: i64, supported: i64 },
    #[error("run {run_id}: {source}")]
    Transition { run_id: String, source: TransitionError },
    #[error("{what} `{key}` not found")]
    NotFound { what: &'static str, key: String },
    #[error(
        "sweep `{sweep}` exists with {missing} training run(s) this spec no longer plans (for example {example}): a sweep \
         can only grow (add budgets, widths, corpora or tasks); to shrink it or change its recipe, give the spec a new \
         `name:` (runs the two share are not trained again)"
    )]
    SweepConflict { sweep: String, missing: usize, example: String },
    #[error("sweep `{sweep}` has {active} job(s) still running or launching: cancel it first (`isoflop cancel {sweep}`)")]
    SweepActive { sweep: String, active: usize },
    #[error("run {run_id} attempt {attempt} is no longer active")]
    StaleAttempt { run_id: String, attempt: u64 },
    #[error("run {run_id} attempt {attempt} is still active: it must end before another starts")]
    AttemptLive { run_id: String, attempt: u64 },
    #[error("the target store is not empty ({sweeps} sweep(s), {runs} run(s)): copy into a new database")]
    NotEmpty { sweeps: usize, runs: usize },
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True for the user's mistakes: a URL that does not parse, a database newer than this
    /// build, a copy into a store that holds something.
    pub fn is_input(&self) -> bool {
        matches!(self, StoreError::PgUrl { .. } | StoreError::TooNew { .. } | StoreError::NotEmpty { .. })
    }
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Opens the store at `location`: a SQLite file (created if missing) or a PostgreSQL database,
/// migrated to this build's schema. Blocks: from async code, call it on a blocking thread.
pub fn open(location: &StoreLocation) -> Result<std::sync::Arc<dyn Store>> {
    Ok(match location {
        StoreLocation::Sqlite(path) => std::sync::Arc::new(SqliteStore::open(path)?),
        StoreLocation::Postgres(url) => std::sync::Arc::new(PgStore::connect(url)?),
    })
}

/// The storage interface of isoflop. Implementations are safe to share between threads;
/// each method is one transaction.
pub trait Store: Send + Sync {
    /// Records a sweep and its jobs (training runs, then evaluation jobs). Jobs already known
    /// (same id) are shared, not duplicated; new ones start `queued` (a `planned -> queued`
    /// event each). Submitting the same sweep name with the same spec again is a no-op that
    /// returns the same result. A different spec under an existing name that plans the same
    /// training runs and more (budgets, widths or tasks added) replaces the stored spec and
    /// adds the new jobs after the old ones; evaluation jobs it no longer plans stay stored and
    /// listed. A spec that no longer plans some stored training run (shrunk, or its recipe
    /// changed) is [`StoreError::SweepConflict`].
    fn submit_sweep(&self, sweep: &NewSweep, runs: &[NewRun]) -> Result<SubmitResult>;
    /// The store's identity: random, made once. Runs keep their artifacts under
    /// `STORE_ID/RUN_ID` ([`RunRow::artifacts_key`]) and checkpoints name it, so artifacts
    /// are never shared between stores.
    fn store_id(&self) -> Result<String>;
    /// A sweep by name.
    fn sweep(&self, name: &str) -> Result<Option<SweepRow>>;
    /// Deletes a sweep and every job only it holds, with all their history (attempts,
    /// events, progress, checkpoints, results); jobs another sweep shares stay (a training run
    /// also stays while a kept evaluation job scores it). Nothing is deleted with `dry_run`.
    /// [`StoreError::SweepActive`] while one of the jobs it would delete is active;
    /// [`StoreError::NotFound`] for an unknown sweep. Returns what was (or would be) deleted,
    /// for the caller to remove their artifacts.
    fn delete_sweep(&self, name: &str, dry_run: bool) -> Result<Deleted>;
    /// All sweeps, newest first (ties in submission time: the later submission first).
    fn sweeps(&self) -> Result<Vec<SweepRow>>;
    /// The runs of a sweep in plan order, each with its newest progress point.
    fn sweep_runs(&self, sweep: &str) -> Result<Vec<RunRow>>;
    /// The jobs of a sweep in plan order: ids, states and kinds only (one light read).
    fn sweep_members(&self, sweep: &str) -> Result<Vec<SweepMember>>;
    /// One run, as seen from its owner: the first sweep that submitted it.
    fn run(&self, run_id: &str) -> Result<Option<RunRow>>;
    /// The runs a user's key names: the run with that id, else every run whose id starts with
    /// it or whose name (in any sweep) is it; each as seen from its owner sweep.
    fn find_runs(&self, key: &str) -> Result<Vec<RunRow>>;
    /// Runs in a state, in plan order.
    fn runs_in_state(&self, state: RunState) -> Result<Vec<RunRow>>;
    /// The first `limit` runs, in plan order, that the scheduler may launch at `now_ms`:
    /// `queued`, their back-off passed, and (evaluation jobs) their checkpoint recorded. One
    /// query that reads no more than it returns.
    fn launchable(&self, now_ms: i64, limit: usize) -> Result<Vec<RunRow>>;

    /// Moves a run to `to` if the edge is legal, recording an event. The lifecycle verbs below
    /// are what the coordinator uses; this is the primitive they share.
    fn transition(&self, run_id: &str, to: RunState, change: &Change) -> Result<EventRow>;
    /// `queued|blocked -> launching` and a new attempt with its token hash and lease;
    /// [`StoreError::AttemptLive`] while the run has an active attempt (two attempts of a run
    /// are never both live).
    fn start_attempt(&self, run_id: &str, token_hash: &str, lease_expires_ms: i64) -> Result<(AttemptRow, EventRow)>;
    /// Records what the executor knows the attempt by (a pid, a Job name).
    fn set_executor_ref(&self, run_id: &str, attempt: u64, executor_ref: &str) -> Result<()>;
    /// An attempt.
    fn attempt(&self, run_id: &str, attempt: u64) -> Result<Option<AttemptRow>>;
    /// Every attempt of a run, oldest first.
    fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRow>>;
    /// Active attempts (outcome `active`) of all runs.
    fn active_attempts(&self) -> Result<Vec<AttemptRow>>;
    /// The worker attached: `launching|blocked -> running`, its resume step and a fresh lease.
    /// [`StoreError::StaleAttempt`] if the attempt has ended.
    fn attach(&self, run_id: &str, attempt: u64, resume_step: u64, lease_expires_ms: i64) -> Result<EventRow>;
    /// A worker's report, all or nothing: the lease renewed, the step it resumed from, its
    /// progress points (idempotent per step), its checkpoints, and the checkpoints it found
    /// damaged (each recorded as a note event: `from == to`, the run's state unchanged; the
    /// row of that step goes when an earlier attempt recorded it, before this report's own
    /// checkpoints are recorded, so a save of this attempt at that step stays). Returns those
    /// events. [`StoreError::StaleAttempt`] if the attempt has
    /// ended (nothing is written).
    fn report(&self, run_id: &str, attempt: u64, report: &Report) -> Result<Vec<EventRow>>;
    /// Extends the lease of an active attempt (an adopted worker's grace to reconnect).
    fn renew_lease(&self, run_id: &str, attempt: u64, lease_expires_ms: i64) -> Result<()>;
    /// The executor cannot place the active, current attempt: `launching -> blocked` with the
    /// reason. `None` when the attempt is not that (already blocked, placed, ended).
    fn block_attempt(&self, run_id: &str, attempt: u64, message: &str) -> Result<Option<EventRow>>;
    /// A blocked attempt was placed: `blocked -> launching` with a fresh start-up lease.
    /// `None` when the run is not blocked on that attempt.
    fn place_attempt(&self, run_id: &str, attempt: u64, lease_expires_ms: i64) -> Result<Option<EventRow>>;
    /// Ends an active attempt and moves its run, deciding inside the transaction (see
    /// [`Ending`]). [`StoreError::StaleAttempt`] if it is no longer active.
    fn end_attempt(&self, run_id: &str, attempt: u64, ending: &Ending) -> Result<EventRow>;
    /// Fails an active attempt as `node_lost` if its lease ran out before `now_ms` and its run
    /// is not blocked (a blocked attempt has no worker yet). `None` when the lease was renewed,
    /// the run is blocked, or the attempt has ended.
    fn expire_lease(&self, run_id: &str, attempt: u64, now_ms: i64, retries: Retries) -> Result<Option<EventRow>>;
    /// Cancels an unfinished run (its active attempt, if any, ends `cancelled`). `None` when
    /// the run has already finished.
    fn cancel_run(&self, run_id: &str) -> Result<Option<Cancelled>>;
    /// Records the checkpoint a cancelled attempt wrote as it stopped (its worker was asked to
    /// stop after the cancel ended the attempt), so a resume continues from it. Only while the
    /// attempt is the run's newest and the run is still cancelled; `false` otherwise (the run
    /// was resumed and another attempt may write that step).
    fn stop_checkpoint(&self, run_id: &str, attempt: u64, checkpoint: &CheckpointRow) -> Result<bool>;
    /// Requeues a run that ended failed (diverged ones only with `include_diverged`) or
    /// cancelled, with a fresh retry budget. `None` when it is not eligible.
    fn resume_run(&self, run_id: &str, include_diverged: bool) -> Result<Option<EventRow>>;

    /// All progress points of a run, oldest first.
    fn progress(&self, run_id: &str) -> Result<Vec<ProgressPoint>>;
    /// [`Store::progress`] of every job of a sweep, read at once (the web page's curves and
    /// best losses: one query, not one per run). Jobs without points are absent.
    fn sweep_progress(&self, sweep: &str) -> Result<std::collections::HashMap<String, Vec<ProgressPoint>>>;
    /// All recorded checkpoints of a run, oldest step first.
    fn checkpoints(&self, run_id: &str) -> Result<Vec<CheckpointRow>>;
    /// The newest checkpoint of a run.
    fn latest_checkpoint(&self, run_id: &str) -> Result<Option<CheckpointRow>>;
    /// A training run's held-out text losses: per distribution, the result of its text
    /// evaluation job on the latest evaluated checkpoint (its final one once evaluated).
    fn evals(&self, run_id: &str) -> Result<Vec<EvalRow>>;
    /// The stored results of an evaluation job, by subset then metric.
    fn eval_results(&self, job_id: &str) -> Result<Vec<isoflop_core::EvalMetric>>;
    /// For every job of a sweep (by run id): its attempts, and what [`Store::evals`] (a
    /// training run) or [`Store::eval_results`] (an evaluation job) gives, read at once in one
    /// transaction (a run list of 10,000 runs was 20,000 reads). Jobs with none are absent.
    fn sweep_details(&self, sweep: &str) -> Result<std::collections::HashMap<String, JobDetails>>;
    /// The per-item results of a multiple-choice evaluation job, by item.
    fn eval_items(&self, job_id: &str) -> Result<Vec<isoflop_core::choice::ItemScore>>;
    /// The checkpoint steps of a training run that evaluation jobs score (kept on disk).
    fn eval_steps(&self, run_id: &str) -> Result<Vec<u64>>;
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

pub use isoflop_core::Retries;
