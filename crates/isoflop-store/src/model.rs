//! Rows the store reads and writes.

use isoflop_core::{FailureClass, RunState};

/// A sweep to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSweep {
    pub name: String,
    pub spec_yaml: String,
    pub spec_path: String,
}

/// One planned job of a sweep: a training run, or an evaluation job (`eval` set).
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub run_id: String,
    pub name: String,
    pub corpus: String,
    pub budget: f64,
    pub config_json: String,
    /// What an evaluation job scores; `None` for a training run.
    pub eval: Option<EvalOf>,
}

/// What an evaluation job is: a task on one checkpoint of a training run. It becomes
/// launchable once that checkpoint is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOf {
    /// The training run whose checkpoint it scores.
    pub parent: String,
    /// The checkpoint's step.
    pub step: u64,
    /// The task's name.
    pub task: String,
    /// `text` or `multiple_choice`.
    pub family: String,
}

/// What submitting a sweep did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitResult {
    /// Training runs of the sweep.
    pub runs: usize,
    /// Training runs that existed before (shared with another sweep, or this sweep again).
    pub reused: usize,
    /// Evaluation jobs of the sweep.
    pub evals: usize,
    /// Evaluation jobs that existed before.
    pub evals_reused: usize,
    /// True when the sweep existed already with the same spec.
    pub existed: bool,
    /// True when the sweep existed with another spec that plans every stored training run
    /// (and perhaps more runs or evaluation jobs): the stored spec was replaced.
    pub updated: bool,
    /// Jobs this sweep shares with another that had failed (not diverged) or been cancelled
    /// there: queued again for this sweep, with a fresh retry budget.
    pub requeued: usize,
    /// Training runs of the sweep that had succeeded already (in this or another sweep).
    pub succeeded: usize,
}

/// A job of a sweep as [`crate::Store::sweep_members`] lists it: no more than the scheduler's
/// settings and a submission's checks need (a run list is [`crate::Store::sweep_runs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepMember {
    pub run_id: String,
    pub state: RunState,
    /// A training run (not an evaluation job).
    pub training: bool,
}

/// What [`crate::Store::delete_sweep`] removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deleted {
    /// Jobs only the sweep held, removed with their history.
    pub jobs: Vec<DeletedJob>,
    /// Jobs it shares with other sweeps, kept.
    pub shared: usize,
}

/// One deleted job.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedJob {
    pub run_id: String,
    pub name: String,
    /// Its directory under the artifacts root.
    pub artifacts_key: String,
    /// A training run (else an evaluation job).
    pub training: bool,
}

/// A stored sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRow {
    pub name: String,
    pub spec_yaml: String,
    pub spec_path: String,
    pub created_ms: i64,
}

/// A stored run, as seen from one sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub run_id: String,
    /// The sweep it is seen from: the one asked about, or its owner (the first sweep that
    /// submitted it) when the run was looked up by id or state.
    pub sweep: String,
    pub name: String,
    pub corpus: String,
    pub budget: f64,
    pub config_json: String,
    pub state: RunState,
    pub failure_class: Option<FailureClass>,
    pub message: String,
    pub attempts: u64,
    pub retries_used: u64,
    pub not_before_ms: i64,
    pub updated_ms: i64,
    /// Newest progress point, if any.
    pub progress: Option<ProgressPoint>,
    /// What an evaluation job scores; `None` for a training run.
    pub eval: Option<EvalOf>,
    /// The directory of its checkpoints and logs under the artifacts root: `STORE_ID/RUN_ID`
    /// ([`crate::Store::store_id`]); for runs stored before store ids existed, the run id, or
    /// the id it had before a store migration re-keyed it.
    pub artifacts_key: String,
}

impl RunRow {
    /// True for a training run, false for an evaluation job.
    pub fn is_training(&self) -> bool {
        self.eval.is_none()
    }
}

/// A listed job with its results: a training run's held-out losses ([`crate::Store::evals`]),
/// or an evaluation job's metrics ([`crate::Store::eval_results`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RunResults {
    pub run: RunRow,
    pub evals: Vec<EvalRow>,
    pub metrics: Vec<isoflop_core::EvalMetric>,
    /// Its attempts, oldest first (empty where a caller did not ask).
    pub attempts: Vec<AttemptRow>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Active,
    Succeeded,
    Failed,
    /// Stopped after a checkpoint (Ctrl-C, shutdown); resumes without spending a retry.
    Interrupted,
    Cancelled,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Active => "active",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Interrupted => "interrupted",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Succeeded, Self::Failed, Self::Interrupted, Self::Cancelled].into_iter().find(|o| o.as_str() == s)
    }
}

/// A stored attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub run_id: String,
    pub attempt: u64,
    pub token_hash: String,
    pub outcome: AttemptOutcome,
    pub failure_class: Option<FailureClass>,
    pub message: String,
    pub executor_ref: String,
    pub resume_step: u64,
    pub lease_expires_ms: i64,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
}

/// How an active attempt ends; [`crate::Store::end_attempt`] decides the run's next state
/// from it and from what it reads in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The worker finished and the run succeeded: a training run with nothing more, an
    /// evaluation job with its results (stored in the same transaction).
    Succeeded {
        results: Vec<isoflop_core::EvalMetric>,
        /// Per item, for multiple-choice jobs.
        items: Vec<isoflop_core::choice::ItemScore>,
        message: String,
    },
    /// The attempt failed with `class`. The run's retries used are read in the transaction and
    /// [`isoflop_core::after_failure`] decides: requeued (after a back-off, maybe spending a
    /// retry) or failed for good.
    Failed { class: FailureClass, message: String, retries: crate::Retries },
    /// The worker stopped after a checkpoint (a stop request, SIGTERM), or its coordinator
    /// went away: the run is requeued without spending a retry and resumes from its newest
    /// checkpoint. `checkpoint` is the one the worker wrote on stopping, if it says; `class`
    /// says who stopped it: `interrupted` (the sweep's own coordinator) or `preempted`
    /// (anything outside the sweep).
    Interrupted { checkpoint: Option<CheckpointRow>, class: FailureClass, message: String },
}

/// What a worker's report carries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// The renewed lease.
    pub lease_expires_ms: i64,
    /// The step the worker actually resumed from (its first report only).
    pub resumed_from: Option<u64>,
    pub progress: Vec<ProgressPoint>,
    pub checkpoints: Vec<CheckpointRow>,
    /// Checkpoints the worker found damaged and set aside (its first report only): the store
    /// forgets their rows and records each as a note event.
    pub rejected: Vec<RejectedCheckpoint>,
}

/// A checkpoint a worker found damaged before resuming.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RejectedCheckpoint {
    pub step: u64,
    pub path: String,
    pub reason: String,
}

/// A cancelled run: the event recorded, and the attempt that was live, if one was.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancelled {
    pub event: EventRow,
    pub live_attempt: Option<u64>,
}

/// One progress point.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressPoint {
    pub attempt: u64,
    pub step: u64,
    pub total_steps: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_seen: u64,
    pub tokens_per_second: f64,
    pub mfu: f64,
    pub elapsed_seconds: f64,
    pub at_ms: i64,
    /// Sequences per forward/backward pass the worker was using (smaller than requested
    /// after an out-of-memory retry); `None` when the worker did not say.
    pub micro_batch: Option<u64>,
}

impl ProgressPoint {
    /// A reported progress point of `attempt`, received at `at_ms`.
    pub fn new(attempt: u64, at_ms: i64, p: &isoflop_core::Progress) -> Self {
        ProgressPoint {
            attempt,
            step: p.step,
            total_steps: p.total_steps,
            loss: p.loss,
            lr: p.lr,
            grad_norm: p.grad_norm,
            tokens_seen: p.tokens_seen,
            tokens_per_second: p.tokens_per_second,
            mfu: p.mfu,
            elapsed_seconds: p.elapsed_seconds,
            at_ms,
            micro_batch: p.micro_batch,
        }
    }

    /// The point as reported.
    pub fn progress(&self) -> isoflop_core::Progress {
        isoflop_core::Progress {
            step: self.step,
            total_steps: self.total_steps,
            loss: self.loss,
            lr: self.lr,
            grad_norm: self.grad_norm,
            tokens_seen: self.tokens_seen,
            tokens_per_second: self.tokens_per_second,
            mfu: self.mfu,
            elapsed_seconds: self.elapsed_seconds,
            micro_batch: self.micro_batch,
        }
    }
}

/// A saved checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    pub step: u64,
    pub attempt: u64,
    pub path: String,
    pub tokens_seen: u64,
    pub at_ms: i64,
}

/// Loss of a training run on one held-out text distribution: the results of its text
/// evaluation jobs on its final checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    pub distribution: String,
    pub loss: f64,
    pub bits_per_byte: f64,
    pub tokens: u64,
    pub bytes: u64,
}

/// A recorded state transition.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub id: i64,
    pub run_id: String,
    pub attempt: Option<u64>,
    pub at_ms: i64,
    pub from: RunState,
    pub to: RunState,
    pub failure_class: Option<FailureClass>,
    pub message: String,
}

/// What a sweep's run list shows of one job besides its row (see `Store::sweep_details`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobDetails {
    /// Oldest first.
    pub attempts: Vec<AttemptRow>,
    /// A training run's held-out text losses (as `Store::evals`).
    pub evals: Vec<EvalRow>,
    /// An evaluation job's results (as `Store::eval_results`).
    pub metrics: Vec<isoflop_core::EvalMetric>,
}
