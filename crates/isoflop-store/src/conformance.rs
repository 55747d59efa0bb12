//! The behaviour every [`Store`] backend must show. Each backend's tests call [`run_all`]
//! on a fresh, empty store; a failure panics with what differed.

use crate::*;

fn new_run(id: &str, name: &str) -> NewRun {
    NewRun {
        run_id: id.into(),
        name: name.into(),
        corpus: "mix".into(),
        budget: 1e12,
        config_json: format!("{{\"id\":\"{id}\"}}"),
    }
}

fn sweep(name: &str, spec: &str) -> NewSweep {
    NewSweep { name: name.into(), spec_yaml: spec.into(), spec_path: format!("/specs/{name}.yaml") }
}

/// Runs every check below, in order, on one empty store.
pub fn run_all(store: &dyn Store) {
    submit_shares_runs_and_is_idempotent(store);
    transitions_are_checked_and_recorded(store);
    attempt_lifecycle(store);
    progress_checkpoints_and_evals(store);
}

/// The same run in two sweeps is stored once; resubmitting a sweep changes nothing.
pub fn submit_shares_runs_and_is_idempotent(store: &dyn Store) {
    let a = store.submit_sweep(&sweep("a", "spec-a"), &[new_run("r1", "one"), new_run("r2", "two")]).unwrap();
    assert_eq!(a, SubmitResult { runs: 2, reused: 0, existed: false });
    let b = store.submit_sweep(&sweep("b", "spec-b"), &[new_run("r2", "two-in-b"), new_run("r3", "three")]).unwrap();
    assert_eq!(b, SubmitResult { runs: 2, reused: 1, existed: false });
    let again = store.submit_sweep(&sweep("a", "spec-a"), &[new_run("r1", "one"), new_run("r2", "two")]).unwrap();
    assert_eq!(again, SubmitResult { runs: 2, reused: 2, existed: true });
    let err = store.submit_sweep(&sweep("a", "other"), &[new_run("r9", "nine")]).unwrap_err();
    assert!(matches!(err, StoreError::SweepConflict { .. }), "{err}");
    assert!(store.run("r9").unwrap().is_none(), "a rejected submit stores nothing");
    let runs_b = store.sweep_runs("b").unwrap();
    assert_eq!(runs_b.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["two-in-b", "three"]);
    assert!(runs_b.iter().all(|r| r.state == RunState::Queued));
    assert_eq!(store.sweeps().unwrap().len(), 2);
    let ev = store.events("r1").unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].from, ev[0].to), (RunState::Planned, RunState::Queued));
}

/// Illegal edges are refused and leave no trace; legal ones write an event.
pub fn transitions_are_checked_and_recorded(store: &dyn Store) {
    let err = store.transition("r1", RunState::Succeeded, &Change::default()).unwrap_err();
    assert!(matches!(err, StoreError::Transition { .. }), "{err}");
    assert_eq!(store.run("r1").unwrap().unwrap().state, RunState::Queued);
    assert_eq!(store.events("r1").unwrap().len(), 1);
    let from = store.transition("r1", RunState::Blocked, &Change { message: "no capacity".into(), ..Change::default() }).unwrap();
    assert_eq!(from, RunState::Queued);
    let r1 = store.run("r1").unwrap().unwrap();
    assert_eq!((r1.state, r1.message.as_str()), (RunState::Blocked, "no capacity"));
    store.transition("r1", RunState::Queued, &Change::default()).unwrap();
    assert!(matches!(store.transition("nope", RunState::Queued, &Change::default()), Err(StoreError::NotFound { .. })));
}

/// Launch, attach, lease, and end with each outcome.
pub fn attempt_lifecycle(store: &dyn Store) {
    let a = store.start_attempt("r1", "h1", 1_000).unwrap();
    assert_eq!(a.attempt, 1);
    store.set_executor_ref("r1", 1, "pid:42").unwrap();
    store.attach("r1", 1, 0, 2_000).unwrap();
    store.renew_lease("r1", 1, 3_000).unwrap();
    let active = store.active_attempts().unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!((active[0].executor_ref.as_str(), active[0].lease_expires_ms), ("pid:42", 3_000));
    // Interrupted: back to queued, no retry spent.
    let end = AttemptEnd {
        outcome: AttemptOutcome::Interrupted,
        failure_class: Some(FailureClass::Preempted),
        message: "SIGTERM".into(),
        not_before_ms: None,
        spend_retry: false,
    };
    store.end_attempt("r1", 1, &end, RunState::Queued).unwrap();
    assert!(matches!(store.end_attempt("r1", 1, &end, RunState::Queued), Err(StoreError::StaleAttempt { .. })));
    assert!(matches!(store.renew_lease("r1", 1, 4_000), Err(StoreError::StaleAttempt { .. })));
    let r1 = store.run("r1").unwrap().unwrap();
    assert_eq!((r1.state, r1.attempts, r1.retries_used), (RunState::Queued, 1, 0));
    // A counted failure with back-off.
    store.start_attempt("r1", "h2", 1_000).unwrap();
    store.attach("r1", 2, 100, 2_000).unwrap();
    let end = AttemptEnd {
        outcome: AttemptOutcome::Failed,
        failure_class: Some(FailureClass::Unknown),
        message: "killed by signal 9".into(),
        not_before_ms: Some(i64::MAX / 2),
        spend_retry: true,
    };
    store.end_attempt("r1", 2, &end, RunState::Queued).unwrap();
    let r1 = store.run("r1").unwrap().unwrap();
    assert_eq!((r1.attempts, r1.retries_used, r1.failure_class), (2, 1, Some(FailureClass::Unknown)));
    assert!(store.runs_in_state(RunState::Queued, Some(now_ms())).unwrap().iter().all(|r| r.run_id != "r1"));
    assert!(store.runs_in_state(RunState::Queued, None).unwrap().iter().any(|r| r.run_id == "r1"));
    let att = store.attempt("r1", 2).unwrap().unwrap();
    assert_eq!((att.outcome, att.resume_step), (AttemptOutcome::Failed, 100));
    let to: Vec<_> = store.events("r1").unwrap().iter().map(|e| e.to).collect();
    use RunState::*;
    assert_eq!(to, [Queued, Blocked, Queued, Launching, Running, Queued, Launching, Running, Queued]);
    assert_eq!(store.events_since(0).unwrap().len(), 2 + to.len(), "r1's events plus one each for r2 and r3");
}

/// Progress, checkpoints and evals round-trip.
pub fn progress_checkpoints_and_evals(store: &dyn Store) {
    let p = |attempt, step, loss| ProgressPoint {
        attempt,
        step,
        total_steps: 100,
        loss,
        lr: 1e-3,
        grad_norm: 1.0,
        tokens_seen: step * 10,
        tokens_per_second: 5.0,
        mfu: 0.0,
        elapsed_seconds: 1.0,
        at_ms: 7,
        micro_batch: (step == 20).then_some(4),
    };
    store.add_progress("r2", 1, &[p(1, 0, 5.5), p(1, 10, 4.0)]).unwrap();
    store.add_progress("r2", 1, &[p(1, 10, 4.0)]).unwrap();
    store.add_progress("r2", 2, &[p(2, 20, 3.0)]).unwrap();
    assert_eq!(store.progress("r2").unwrap().len(), 3);
    let latest = store.run("r2").unwrap().unwrap().progress.unwrap();
    assert_eq!((latest.step, latest.micro_batch), (20, Some(4)));
    assert_eq!(store.progress("r2").unwrap()[0].micro_batch, None);
    assert!(store.latest_checkpoint("r2").unwrap().is_none());
    for step in [10, 30, 20] {
        store
            .add_checkpoint("r2", 1, &CheckpointRow { step, attempt: 1, path: format!("/c/{step}"), tokens_seen: step, at_ms: 1 })
            .unwrap();
    }
    assert_eq!(store.latest_checkpoint("r2").unwrap().unwrap().path, "/c/30");
    assert_eq!(store.checkpoints("r2").unwrap().iter().map(|c| c.step).collect::<Vec<_>>(), [10, 20, 30]);
    store.set_resume_step("r1", 2, 30).unwrap();
    assert_eq!(store.attempt("r1", 2).unwrap().unwrap().resume_step, 30);
    let e = |d: &str, loss| EvalRow { distribution: d.into(), loss, bits_per_byte: loss / 2f64.ln(), tokens: 10, bytes: 10 };
    store.put_evals("r2", 2, &[e("code", 2.0), e("bible", 1.5)]).unwrap();
    store.put_evals("r2", 2, &[e("code", 1.9)]).unwrap();
    let evals = store.evals("r2").unwrap();
    assert_eq!(evals.iter().map(|e| (e.distribution.as_str(), e.loss)).collect::<Vec<_>>(), [("bible", 1.5), ("code", 1.9)]);
}
