//! Every conversion between wire messages and isoflop's domain (`isoflop_core`) and store
//! (`isoflop_store`) types, as `From`/`TryFrom`, in one place. Enums travel as `i32`; an
//! unknown or unspecified value where one is required is a [`WireError`].

use crate::v1 as pb;
use isoflop_core::{Device, EvalMetric, EvalScore, FailureClass, Precision, Progress, RunState};
use isoflop_store::{AttemptRow, CheckpointRow, EvalOf, EvalRow, EventRow, ProgressPoint, RunResults, RunRow, SweepRow};

/// A message that does not carry what its receiver needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown or unspecified {what} `{value}`")]
    Enum { what: &'static str, value: i32 },
    #[error("bad {field}: {message}")]
    Field { field: &'static str, message: String },
}

impl From<RunState> for pb::RunState {
    fn from(s: RunState) -> Self {
        match s {
            RunState::Planned => pb::RunState::Planned,
            RunState::Queued => pb::RunState::Queued,
            RunState::Blocked => pb::RunState::Blocked,
            RunState::Launching => pb::RunState::Launching,
            RunState::Running => pb::RunState::Running,
            RunState::Succeeded => pb::RunState::Succeeded,
            RunState::Failed => pb::RunState::Failed,
            RunState::Cancelled => pb::RunState::Cancelled,
        }
    }
}

impl TryFrom<pb::RunState> for RunState {
    type Error = WireError;
    fn try_from(s: pb::RunState) -> Result<Self, WireError> {
        Ok(match s {
            pb::RunState::Planned => RunState::Planned,
            pb::RunState::Queued => RunState::Queued,
            pb::RunState::Blocked => RunState::Blocked,
            pb::RunState::Launching => RunState::Launching,
            pb::RunState::Running => RunState::Running,
            pb::RunState::Succeeded => RunState::Succeeded,
            pb::RunState::Failed => RunState::Failed,
            pb::RunState::Cancelled => RunState::Cancelled,
            pb::RunState::Unspecified => return Err(WireError::Enum { what: "run state", value: 0 }),
        })
    }
}

/// A run state as it travels (`i32`).
pub fn run_state(v: i32) -> Result<RunState, WireError> {
    pb::RunState::try_from(v).map_err(|_| WireError::Enum { what: "run state", value: v })?.try_into()
}

/// The wire value of a run state.
pub fn run_state_value(s: RunState) -> i32 {
    pb::RunState::from(s) as i32
}

impl From<FailureClass> for pb::FailureClass {
    fn from(c: FailureClass) -> Self {
        match c {
            FailureClass::Preempted => pb::FailureClass::Preempted,
            FailureClass::Interrupted => pb::FailureClass::Interrupted,
            FailureClass::NodeLost => pb::FailureClass::NodeLost,
            FailureClass::Oom => pb::FailureClass::Oom,
            FailureClass::Diverged => pb::FailureClass::Diverged,
            FailureClass::UserError => pb::FailureClass::UserError,
            FailureClass::Unknown => pb::FailureClass::Unknown,
        }
    }
}

impl TryFrom<pb::FailureClass> for FailureClass {
    type Error = WireError;
    fn try_from(c: pb::FailureClass) -> Result<Self, WireError> {
        Ok(match c {
            pb::FailureClass::Preempted => FailureClass::Preempted,
            pb::FailureClass::Interrupted => FailureClass::Interrupted,
            pb::FailureClass::NodeLost => FailureClass::NodeLost,
            pb::FailureClass::Oom => FailureClass::Oom,
            pb::FailureClass::Diverged => FailureClass::Diverged,
            pb::FailureClass::UserError => FailureClass::UserError,
            pb::FailureClass::Unknown => FailureClass::Unknown,
            pb::FailureClass::Unspecified => return Err(WireError::Enum { what: "failure class", value: 0 }),
        })
    }
}

/// An optional failure class as it travels: `unspecified` (0) is none. A value this build does
/// not know (a newer peer's class) reads as `unknown`, which retries with back-off.
pub fn failure_class(v: i32) -> Option<FailureClass> {
    match pb::FailureClass::try_from(v) {
        Ok(pb::FailureClass::Unspecified) => None,
        Ok(c) => Some(c.try_into().unwrap_or(FailureClass::Unknown)),
        Err(_) => Some(FailureClass::Unknown),
    }
}

/// The wire value of an optional failure class.
pub fn failure_class_value(c: Option<FailureClass>) -> i32 {
    c.map_or(pb::FailureClass::Unspecified, pb::FailureClass::from) as i32
}

/// The precision an assignment names; empty (a coordinator predating the field) is fp32.
pub fn precision(s: &str) -> Result<Precision, WireError> {
    if s.is_empty() { Ok(Precision::Fp32) } else { s.parse().map_err(|message| WireError::Field { field: "precision", message }) }
}

/// The device an assignment names.
pub fn device(s: &str) -> Result<Device, WireError> {
    s.parse().map_err(|message| WireError::Field { field: "device", message })
}

impl From<&Progress> for pb::Progress {
    fn from(p: &Progress) -> Self {
        pb::Progress {
            step: p.step,
            total_steps: p.total_steps,
            loss: p.loss,
            lr: p.lr,
            grad_norm: p.grad_norm,
            tokens_seen: p.tokens_seen,
            tokens_per_second: p.tokens_per_second,
            mfu: p.mfu,
            elapsed_seconds: p.elapsed_seconds,
            micro_batch: p.micro_batch,
        }
    }
}

impl From<&pb::Progress> for Progress {
    fn from(p: &pb::Progress) -> Self {
        Progress {
            step: p.step,
            total_steps: p.total_steps,
            loss: p.loss,
            lr: p.lr,
            grad_norm: p.grad_norm,
            tokens_seen: p.tokens_seen,
            tokens_per_second: p.tokens_per_second,
            mfu: p.mfu,
            elapsed_seconds: p.elapsed_seconds,
            micro_batch: p.micro_batch,
        }
    }
}

impl From<&ProgressPoint> for pb::Progress {
    fn from(p: &ProgressPoint) -> Self {
        (&p.progress()).into()
    }
}

impl From<&EvalScore> for pb::EvalResult {
    fn from(e: &EvalScore) -> Self {
        pb::EvalResult {
            distribution: e.distribution.clone(),
            loss: e.loss,
            bits_per_byte: e.bits_per_byte,
            tokens: e.tokens,
            bytes: e.bytes.round() as u64,
        }
    }
}

impl From<&pb::EvalResult> for EvalRow {
    fn from(e: &pb::EvalResult) -> Self {
        EvalRow {
            distribution: e.distribution.clone(),
            loss: e.loss,
            bits_per_byte: e.bits_per_byte,
            tokens: e.tokens,
            bytes: e.bytes,
        }
    }
}

impl From<&EvalRow> for pb::EvalResult {
    fn from(e: &EvalRow) -> Self {
        pb::EvalResult {
            distribution: e.distribution.clone(),
            loss: e.loss,
            bits_per_byte: e.bits_per_byte,
            tokens: e.tokens,
            bytes: e.bytes,
        }
    }
}

/// A saved checkpoint as reported; the caller sets `attempt` and `at_ms` (the receiver's).
impl From<&pb::CheckpointSaved> for CheckpointRow {
    fn from(c: &pb::CheckpointSaved) -> Self {
        CheckpointRow { step: c.step, attempt: 0, path: c.path.clone(), tokens_seen: c.tokens_seen, at_ms: 0 }
    }
}

/// The checkpoint an interrupted worker names, if it names one; the caller sets `attempt`
/// and `at_ms`.
impl From<&pb::Interrupted> for Option<CheckpointRow> {
    fn from(i: &pb::Interrupted) -> Self {
        (!i.checkpoint_path.is_empty()).then(|| CheckpointRow {
            step: i.checkpoint_step,
            attempt: 0,
            path: i.checkpoint_path.clone(),
            tokens_seen: i.tokens_seen,
            at_ms: 0,
        })
    }
}

/// A recorded state transition as a live event.
impl From<&EventRow> for pb::RunEvent {
    fn from(e: &EventRow) -> Self {
        pb::RunEvent {
            run_id: e.run_id.clone(),
            unix_millis: e.at_ms,
            event: Some(pb::run_event::Event::State(pb::StateChanged {
                from: run_state_value(e.from),
                to: run_state_value(e.to),
                failure_class: failure_class_value(e.failure_class),
                message: e.message.clone(),
            })),
        }
    }
}

impl From<&EvalMetric> for pb::EvalMetric {
    fn from(m: &EvalMetric) -> Self {
        pb::EvalMetric { subset: m.subset.clone(), metric: m.metric.clone(), value: m.value }
    }
}

impl From<&pb::EvalMetric> for EvalMetric {
    fn from(m: &pb::EvalMetric) -> Self {
        EvalMetric { subset: m.subset.clone(), metric: m.metric.clone(), value: m.value }
    }
}

impl From<&isoflop_core::choice::ItemScore> for pb::ItemScore {
    fn from(m: &isoflop_core::choice::ItemScore) -> Self {
        pb::ItemScore {
            item: m.item,
            subset: m.subset.clone(),
            gold: m.gold,
            ll: m.ll.clone(),
            chars: m.chars.clone(),
            bytes: m.bytes.clone(),
        }
    }
}

impl From<&pb::ItemScore> for isoflop_core::choice::ItemScore {
    fn from(m: &pb::ItemScore) -> Self {
        isoflop_core::choice::ItemScore {
            item: m.item,
            subset: m.subset.clone(),
            gold: m.gold,
            ll: m.ll.clone(),
            chars: m.chars.clone(),
            bytes: m.bytes.clone(),
        }
    }
}

/// A run or evaluation job with its results, as the control API lists it.
impl From<&RunResults> for pb::RunSummary {
    fn from(x: &RunResults) -> Self {
        let r = &x.run;
        pb::RunSummary {
            run_id: r.run_id.clone(),
            name: r.name.clone(),
            budget: r.budget,
            state: run_state_value(r.state),
            failure_class: failure_class_value(r.failure_class),
            message: r.message.clone(),
            attempts: r.attempts,
            progress: r.progress.as_ref().map(pb::Progress::from),
            evals: x.evals.iter().map(pb::EvalResult::from).collect(),
            corpus: r.corpus.clone(),
            config_json: r.config_json.clone(),
            sweep: r.sweep.clone(),
            eval: r.eval.as_ref().map(|e| pb::EvalJob {
                parent_run: e.parent.clone(),
                step: e.step,
                task: e.task.clone(),
                family: e.family.clone(),
            }),
            metrics: x.metrics.iter().map(pb::EvalMetric::from).collect(),
            progress_at_unix_millis: r.progress.as_ref().map_or(0, |p| p.at_ms),
            updated_unix_millis: r.updated_ms,
            attempt_list: x
                .attempts
                .iter()
                .map(|a| pb::AttemptSummary {
                    attempt: a.attempt,
                    outcome: a.outcome.as_str().to_string(),
                    failure_class: failure_class_value(a.failure_class),
                    message: a.message.clone(),
                    resume_step: a.resume_step,
                    started_unix_millis: a.started_ms,
                    ended_unix_millis: a.ended_ms.unwrap_or(0),
                })
                .collect(),
        }
    }
}

/// A listed run as the rows the status tables read. What the summary does not carry (retry
/// bookkeeping, update time, the artifacts directory) is zero or the run id.
impl TryFrom<&pb::RunSummary> for RunResults {
    type Error = WireError;
    fn try_from(s: &pb::RunSummary) -> Result<Self, WireError> {
        let run = RunRow {
            run_id: s.run_id.clone(),
            sweep: s.sweep.clone(),
            name: s.name.clone(),
            corpus: s.corpus.clone(),
            budget: s.budget,
            config_json: s.config_json.clone(),
            state: run_state(s.state)?,
            failure_class: failure_class(s.failure_class),
            message: s.message.clone(),
            attempts: s.attempts,
            retries_used: 0,
            not_before_ms: 0,
            updated_ms: s.updated_unix_millis,
            progress: s.progress.as_ref().map(|p| ProgressPoint::new(s.attempts, s.progress_at_unix_millis, &p.into())),
            eval: s.eval.as_ref().map(|e| EvalOf {
                parent: e.parent_run.clone(),
                step: e.step,
                task: e.task.clone(),
                family: e.family.clone(),
            }),
            artifacts_key: s.run_id.clone(),
        };
        let attempts = s
            .attempt_list
            .iter()
            .map(|a| {
                Ok(AttemptRow {
                    run_id: s.run_id.clone(),
                    attempt: a.attempt,
                    token_hash: String::new(),
                    outcome: isoflop_store::AttemptOutcome::parse(&a.outcome)
                        .ok_or_else(|| WireError::Field { field: "attempt_list.outcome", message: a.outcome.clone() })?,
                    failure_class: failure_class(a.failure_class),
                    message: a.message.clone(),
                    executor_ref: String::new(),
                    resume_step: a.resume_step,
                    lease_expires_ms: 0,
                    started_ms: a.started_unix_millis,
                    ended_ms: (a.ended_unix_millis > 0).then_some(a.ended_unix_millis),
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        Ok(RunResults {
            run,
            attempts,
            evals: s.evals.iter().map(EvalRow::from).collect(),
            metrics: s.metrics.iter().map(EvalMetric::from).collect(),
        })
    }
}

/// The training compute a run has done: its budget once succeeded, else the fraction of its
/// steps its newest progress point reached.
pub fn flops_done(r: &RunRow) -> f64 {
    match (r.state, &r.progress) {
        (RunState::Succeeded, _) => r.budget,
        (_, Some(p)) if p.total_steps > 0 => r.budget * p.step.min(p.total_steps) as f64 / p.total_steps as f64,
        _ => 0.0,
    }
}

/// A sweep with its runs' counts.
impl From<(&SweepRow, &[RunRow])> for pb::SweepStatus {
    fn from((s, runs): (&SweepRow, &[RunRow])) -> Self {
        let count = |f: &dyn Fn(RunState) -> bool| runs.iter().filter(|r| f(r.state)).count() as u32;
        pb::SweepStatus {
            sweep: s.name.clone(),
            total: runs.len() as u32,
            succeeded: count(&|s| s == RunState::Succeeded),
            failed: count(&|s| s == RunState::Failed),
            active: count(&|s| s.is_active()),
            queued: count(&|s| matches!(s, RunState::Queued | RunState::Blocked | RunState::Planned)),
            cancelled: count(&|s| s == RunState::Cancelled),
            created_unix_millis: s.created_ms,
            runs: runs.iter().filter(|r| r.is_training()).count() as u32,
            evals: runs.iter().filter(|r| !r.is_training()).count() as u32,
            ended_unix_millis: if !runs.is_empty() && runs.iter().all(|r| r.state.is_terminal()) {
                runs.iter().map(|r| r.updated_ms).max().unwrap_or(0)
            } else {
                0
            },
            flops_planned: runs.iter().filter(|r| r.is_training()).map(|r| r.budget).sum(),
            flops_done: runs.iter().filter(|r| r.is_training()).map(flops_done).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_and_unspecified_is_refused_where_required() {
        use RunState::*;
        for s in [Planned, Queued, Blocked, Launching, Running, Succeeded, Failed, Cancelled] {
            assert_eq!(run_state(run_state_value(s)), Ok(s));
        }
        assert!(run_state(0).is_err() && run_state(99).is_err());
        for c in FailureClass::ALL {
            assert_eq!(failure_class(failure_class_value(Some(c))), Some(c));
        }
        assert_eq!(failure_class(failure_class_value(None)), None);
        assert_eq!(failure_class(42), Some(FailureClass::Unknown), "a newer peer's class retries");
        assert_eq!(precision(""), Ok(Precision::Fp32));
        assert_eq!(precision("bf16"), Ok(Precision::Bf16));
        assert!(precision("fp16").is_err() && device("gpu").is_err());
        assert_eq!(device("cuda:1"), Ok(Device::Cuda(1)));
    }

    #[test]
    fn records_round_trip() {
        let p = Progress { step: 5, total_steps: 10, loss: 2.5, micro_batch: Some(4), mfu: 0.3, ..Progress::default() };
        assert_eq!(Progress::from(&pb::Progress::from(&p)), p);
        let e = EvalRow { distribution: "code".into(), loss: 1.0, bits_per_byte: 0.5, tokens: 7, bytes: 9 };
        assert_eq!(EvalRow::from(&pb::EvalResult::from(&e)), e);
        let score = EvalScore { distribution: "code".into(), loss: 1.0, bits_per_byte: 0.5, tokens: 7, bytes: 8.6 };
        assert_eq!(pb::EvalResult::from(&score).bytes, 9);
        let i = pb::Interrupted { checkpoint_step: 20, checkpoint_path: "/c/20".into(), tokens_seen: 640 };
        assert_eq!(Option::<CheckpointRow>::from(&i).map(|c| (c.step, c.tokens_seen)), Some((20, 640)));
        let none = pb::Interrupted { checkpoint_path: String::new(), ..i };
        assert_eq!(Option::<CheckpointRow>::from(&none), None);
    }
}
