//! The behaviour every [`Store`] backend must show. Each backend's tests call [`run_all`]
//! on a fresh, empty store that reads its time from the given [`ManualClock`]; a failure
//! panics with what differed.

use crate::*;
use isoflop_core::{Clock, ManualClock};
use std::time::Duration;

/// The clock a conformance store starts at.
pub const T0: i64 = 1_000_000;

fn new_run(id: &str, name: &str) -> NewRun {
    NewRun {
        run_id: id.into(),
        name: name.into(),
        corpus: "mix".into(),
        budget: 1e12,
        config_json: format!("{{\"id\":\"{id}\"}}"),
        eval: None,
    }
}

fn new_eval(id: &str, parent: &str, step: u64) -> NewRun {
    let eval = Some(EvalOf { parent: parent.into(), step, task: "heldout".into(), family: "text".into() });
    NewRun { name: format!("{parent}/heldout@{step}"), eval, ..new_run(id, "") }
}

fn sweep(name: &str, spec: &str) -> NewSweep {
    NewSweep { name: name.into(), spec_yaml: spec.into(), spec_path: format!("/specs/{name}.yaml") }
}

const RETRIES: Retries = Retries { max: 2, backoff_base: Duration::from_secs(2) };

fn point(attempt: u64, step: u64, loss: f64) -> ProgressPoint {
    ProgressPoint {
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
    }
}

fn ckpt(step: u64, attempt: u64, tokens_seen: u64) -> CheckpointRow {
    CheckpointRow { step, attempt, path: format!("/c/{step}"), tokens_seen, at_ms: 1 }
}

fn text_result(d: &str, loss: f64) -> Vec<isoflop_core::EvalMetric> {
    let m = |metric: &str, value: f64| isoflop_core::EvalMetric { subset: d.into(), metric: metric.into(), value };
    vec![m("loss", loss), m("bpb", loss / 2f64.ln()), m("tokens", 10.0), m("bytes", 10.0)]
}

/// Runs every check below, in order, on one empty store whose clock is `clock` (at [`T0`]).
pub fn run_all(store: &dyn Store, clock: &ManualClock) {
    submit_shares_runs_and_is_idempotent(store);
    transitions_are_checked_and_recorded(store);
    attempt_lifecycle(store, clock);
    reports_are_all_or_nothing(store);
    evaluation_jobs_wait_for_their_checkpoint_and_store_results_atomically(store);
    blocking_and_lease_expiry_decide_from_the_row(store, clock);
    cancel_and_resume_decide_in_the_transaction(store);
    runs_are_found_by_id_prefix_or_name(store);
    a_run_joining_a_sweep_takes_its_data_paths_and_a_new_try(store);
    a_sweep_grows_by_an_edited_spec_and_never_shrinks(store);
    deleting_a_sweep_keeps_what_another_shares(store);
    a_stale_attempt_writes_nothing(store, clock);
    a_large_submission_is_stored_whole(store);
    a_rejected_checkpoint_removes_an_earlier_attempts_row_only(store);
}

/// The same run in two sweeps is stored once; resubmitting a sweep changes nothing; a run
/// looked up by id is seen from its owner, the first sweep that submitted it.
pub fn submit_shares_runs_and_is_idempotent(store: &dyn Store) {
    let a = store.submit_sweep(&sweep("a", "spec-a"), &[new_run("r1", "one"), new_run("r2", "two")]).unwrap();
    let result = |runs, reused, existed| SubmitResult {
        runs,
        reused,
        evals: 0,
        evals_reused: 0,
        existed,
        updated: false,
        requeued: 0,
        succeeded: 0,
    };
    assert_eq!(a, result(2, 0, false));
    let b = store.submit_sweep(&sweep("b", "spec-b"), &[new_run("r2", "two-in-b"), new_run("r3", "three")]).unwrap();
    assert_eq!(b, result(2, 1, false));
    let again = store.submit_sweep(&sweep("a", "spec-a"), &[new_run("r1", "one"), new_run("r2", "two")]).unwrap();
    assert_eq!(again, result(2, 2, true));
    let err = store.submit_sweep(&sweep("a", "other"), &[new_run("r9", "nine")]).unwrap_err();
    assert!(matches!(err, StoreError::SweepConflict { .. }), "{err}");
    assert!(store.run("r9").unwrap().is_none(), "a rejected submit stores nothing");
    let runs_b = store.sweep_runs("b").unwrap();
    assert_eq!(
        runs_b.iter().map(|r| (r.sweep.as_str(), r.name.as_str())).collect::<Vec<_>>(),
        [("b", "two-in-b"), ("b", "three")]
    );
    assert!(runs_b.iter().all(|r| r.state == RunState::Queued));
    let r2 = store.run("r2").unwrap().unwrap();
    assert_eq!((r2.sweep.as_str(), r2.name.as_str()), ("a", "two"), "owner: the first sweep to submit it");
    let sweeps: Vec<String> = store.sweeps().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(sweeps, ["b", "a"], "newest first, even within one millisecond");
    let ev = store.events("r1").unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].from, ev[0].to, ev[0].at_ms), (RunState::Planned, RunState::Queued, T0));
}

/// Illegal edges are refused and leave no trace; legal ones write the event they return.
pub fn transitions_are_checked_and_recorded(store: &dyn Store) {
    let err = store.transition("r1", RunState::Succeeded, &Change::default()).unwrap_err();
    assert!(matches!(err, StoreError::Transition { .. }), "{err}");
    assert_eq!(store.run("r1").unwrap().unwrap().state, RunState::Queued);
    assert_eq!(store.events("r1").unwrap().len(), 1);
    let ev = store.transition("r1", RunState::Blocked, &Change { message: "no capacity".into(), ..Change::default() }).unwrap();
    assert_eq!((ev.from, ev.to, ev.message.as_str()), (RunState::Queued, RunState::Blocked, "no capacity"));
    assert_eq!(store.events("r1").unwrap().last(), Some(&ev), "the returned event is the stored one");
    let r1 = store.run("r1").unwrap().unwrap();
    assert_eq!((r1.state, r1.message.as_str()), (RunState::Blocked, "no capacity"));
    store.transition("r1", RunState::Queued, &Change::default()).unwrap();
    assert!(matches!(store.transition("nope", RunState::Queued, &Change::default()), Err(StoreError::NotFound { .. })));
}

/// Launch, attach, and end interrupted, failed (counted, with back-off by the store's clock)
/// and failed for good once the retries are spent.
pub fn attempt_lifecycle(store: &dyn Store, clock: &ManualClock) {
    let (a, ev) = store.start_attempt("r1", "h1", T0 + 1_000).unwrap();
    assert_eq!((a.attempt, ev.from, ev.to, ev.attempt), (1, RunState::Queued, RunState::Launching, Some(1)));
    store.set_executor_ref("r1", 1, "pid:42").unwrap();
    assert!(matches!(store.set_executor_ref("r1", 9, "pid:1"), Err(StoreError::NotFound { .. })), "the row must exist");
    let ev = store.attach("r1", 1, 0, T0 + 2_000).unwrap();
    assert_eq!((ev.from, ev.to), (RunState::Launching, RunState::Running));
    store.renew_lease("r1", 1, T0 + 3_000).unwrap();
    let active = store.active_attempts().unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!((active[0].executor_ref.as_str(), active[0].lease_expires_ms), ("pid:42", T0 + 3_000));
    // Interrupted after a checkpoint the worker reported with its tokens: the row keeps them
    // when the outcome's checkpoint does not say; no retry spent.
    let report = Report { lease_expires_ms: T0 + 4_000, checkpoints: vec![ckpt(30, 1, 300)], ..Report::default() };
    store.report("r1", 1, &report).unwrap();
    let stop =
        Ending::Interrupted { checkpoint: Some(ckpt(30, 1, 0)), class: FailureClass::Preempted, message: "SIGTERM".into() };
    let ev = store.end_attempt("r1", 1, &stop).unwrap();
    assert_eq!((ev.from, ev.to, ev.failure_class), (RunState::Running, RunState::Queued, Some(FailureClass::Preempted)));
    assert_eq!(store.latest_checkpoint("r1").unwrap().unwrap().tokens_seen, 300, "a SIGTERM checkpoint keeps its tokens");
    assert!(matches!(store.end_attempt("r1", 1, &stop), Err(StoreError::StaleAttempt { .. })));
    assert!(matches!(store.renew_lease("r1", 1, T0), Err(StoreError::StaleAttempt { .. })));
    assert!(matches!(store.attach("r1", 1, 0, T0), Err(StoreError::StaleAttempt { .. })));
    let r1 = store.run("r1").unwrap().unwrap();
    assert_eq!((r1.state, r1.attempts, r1.retries_used), (RunState::Queued, 1, 0));
    // A counted failure: the store reads the retries used and backs off from its clock.
    let fail = |msg: &str| Ending::Failed { class: FailureClass::Unknown, message: msg.into(), retries: RETRIES };
    for (attempt, backoff) in [(2, 2_000), (3, 4_000)] {
        store.start_attempt("r1", "h", T0 + 1_000).unwrap();
        store.attach("r1", attempt, 30, T0 + 2_000).unwrap();
        let ev = store.end_attempt("r1", attempt, &fail("killed by signal 9")).unwrap();
        assert_eq!((ev.to, ev.failure_class), (RunState::Queued, Some(FailureClass::Unknown)));
        let r1 = store.run("r1").unwrap().unwrap();
        assert_eq!((r1.attempts, r1.retries_used, r1.not_before_ms), (attempt, attempt - 1, clock.now_ms() + backoff));
        assert!(store.launchable(clock.now_ms(), usize::MAX).unwrap().iter().all(|r| r.run_id != "r1"));
        clock.advance(Duration::from_millis(backoff as u64));
        assert!(store.launchable(clock.now_ms(), usize::MAX).unwrap().iter().any(|r| r.run_id == "r1"));
    }
    // The retries are spent: the next counted failure is final.
    store.start_attempt("r1", "h", T0).unwrap();
    let ev = store.end_attempt("r1", 4, &fail("again")).unwrap();
    assert_eq!((ev.from, ev.to), (RunState::Launching, RunState::Failed));
    let att = store.attempt("r1", 2).unwrap().unwrap();
    assert_eq!((att.outcome, att.resume_step), (AttemptOutcome::Failed, 30));
    let to: Vec<_> = store.events("r1").unwrap().iter().map(|e| e.to).collect();
    use RunState::*;
    assert_eq!(
        to,
        [
            Queued, Blocked, Queued, Launching, Running, Queued, Launching, Running, Queued, Launching, Running, Queued,
            Launching, Failed
        ]
    );
}

/// A report is renewed lease, resume step, progress and checkpoints together, or nothing.
pub fn reports_are_all_or_nothing(store: &dyn Store) {
    store.start_attempt("r2", "h", T0 + 1_000).unwrap();
    store.attach("r2", 1, 0, T0 + 2_000).unwrap();
    let report = Report {
        lease_expires_ms: T0 + 5_000,
        resumed_from: Some(10),
        progress: vec![point(1, 0, 5.5), point(1, 10, 4.0), point(1, 20, 3.0)],
        checkpoints: vec![ckpt(10, 1, 100), ckpt(20, 1, 200), ckpt(30, 1, 300)],
        rejected: vec![],
    };
    assert_eq!(store.report("r2", 1, &report).unwrap(), vec![], "no note without a rejected checkpoint");
    store
        .report("r2", 1, &Report { lease_expires_ms: T0 + 6_000, progress: vec![point(1, 20, 3.0)], ..Report::default() })
        .unwrap();
    assert_eq!(store.progress("r2").unwrap().len(), 3, "idempotent per step");
    let at_once = store.sweep_progress("a").unwrap();
    assert_eq!(at_once.get("r2"), Some(&store.progress("r2").unwrap()), "a sweep's progress at once is each run's own");
    assert!(!at_once.contains_key("r1") && store.sweep_progress("nope").unwrap().is_empty());
    let a = store.attempt("r2", 1).unwrap().unwrap();
    assert_eq!((a.resume_step, a.lease_expires_ms), (10, T0 + 6_000));
    let latest = store.run("r2").unwrap().unwrap().progress.unwrap();
    assert_eq!((latest.step, latest.micro_batch), (20, Some(4)));
    assert_eq!(store.progress("r2").unwrap()[0].micro_batch, None);
    // A damaged checkpoint the worker set aside: a note event (no state change) says so; the
    // row stays, as the attempt itself recorded it (see below for an earlier attempt's).
    let damaged = RejectedCheckpoint { step: 30, path: "/ckpt/30".into(), reason: "12 bytes, the manifest says 900".into() };
    let before = store.events("r2").unwrap().len();
    let notes = store
        .report("r2", 1, &Report { lease_expires_ms: T0 + 6_000, rejected: vec![damaged.clone()], ..Report::default() })
        .unwrap();
    assert_eq!(notes.len(), 1);
    let n = &notes[0];
    assert_eq!((n.from, n.to, n.attempt, n.failure_class), (RunState::Running, RunState::Running, Some(1), None));
    assert!(n.message.contains("step 30") && n.message.contains("12 bytes"), "{}", n.message);
    let events = store.events("r2").unwrap();
    assert_eq!((events.len(), events.last()), (before + 1, Some(n)));
    assert_eq!(store.run("r2").unwrap().unwrap().state, RunState::Running);
    assert_eq!(store.checkpoints("r2").unwrap().iter().map(|c| c.step).collect::<Vec<_>>(), [10, 20, 30]);
    // A report for an ended attempt writes nothing.
    let stale = Report {
        progress: vec![point(4, 50, 1.0)],
        checkpoints: vec![ckpt(50, 4, 1)],
        rejected: vec![RejectedCheckpoint { step: 30, ..damaged }],
        ..report
    };
    let events = store.events("r1").unwrap().len();
    let err = store.report("r1", 4, &stale);
    assert!(matches!(err, Err(StoreError::StaleAttempt { .. })), "{err:?}");
    assert!(store.progress("r1").unwrap().is_empty() && store.latest_checkpoint("r1").unwrap().unwrap().step == 30);
    assert_eq!(store.events("r1").unwrap().len(), events, "a stale report records no note");
}

/// A training run succeeds; a changed evaluation section adds evaluation jobs to its sweep
/// (and only those); a job is launchable once its checkpoint is recorded; a success writes its
/// results and ends the attempt in one transaction, a stale one writes none.
pub fn evaluation_jobs_wait_for_their_checkpoint_and_store_results_atomically(store: &dyn Store) {
    let ev = store
        .end_attempt("r2", 1, &Ending::Succeeded { results: vec![], items: vec![], message: "final loss 1.2".into() })
        .unwrap();
    assert_eq!((ev.from, ev.to, ev.message.as_str()), (RunState::Running, RunState::Succeeded, "final loss 1.2"));
    // r2 has checkpoints at steps 10 and 20 (see the report check); r1 none at 99.
    let jobs = [new_run("r1", "one"), new_run("r2", "two"), new_eval("e2", "r2", 20), new_eval("e1", "r1", 99)];
    let res = store.submit_sweep(&sweep("a", "spec-a with evals"), &jobs).unwrap();
    assert_eq!(
        res,
        SubmitResult { runs: 2, reused: 2, evals: 2, evals_reused: 0, existed: false, updated: true, requeued: 0, succeeded: 1 },
        "r2 had succeeded"
    );
    assert_eq!(store.sweep("a").unwrap().unwrap().spec_yaml, "spec-a with evals", "the new spec is stored");
    let again = store.submit_sweep(&sweep("a", "spec-a with evals"), &jobs).unwrap();
    assert_eq!((again.evals, again.evals_reused, again.existed), (2, 2, true));
    // The same spec submitted from another place: the sweep's spec path follows it.
    let moved = NewSweep { spec_path: "/moved/a.yaml".into(), ..sweep("a", "spec-a with evals") };
    assert!(store.submit_sweep(&moved, &jobs).unwrap().existed);
    assert_eq!(store.sweep("a").unwrap().unwrap().spec_path, "/moved/a.yaml");
    let remote = NewSweep { spec_path: String::new(), ..sweep("a", "spec-a with evals") };
    store.submit_sweep(&remote, &jobs).unwrap();
    assert_eq!(store.sweep("a").unwrap().unwrap().spec_path, "/moved/a.yaml", "an empty path changes nothing");
    let listed: Vec<_> =
        store.sweep_runs("a").unwrap().into_iter().map(|r| (r.is_training(), r.run_id)).map(|(t, id)| (id, t)).collect();
    assert_eq!(listed, [("r1".into(), true), ("r2".into(), true), ("e2".into(), false), ("e1".into(), false)]);
    let e2 = store.run("e2").unwrap().unwrap();
    assert_eq!(e2.eval, Some(EvalOf { parent: "r2".into(), step: 20, task: "heldout".into(), family: "text".into() }));
    // Its files live under the store's own directory (issue 12, defect 4).
    let id = store.store_id().unwrap();
    assert!(id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!((e2.state, e2.artifacts_key), (RunState::Queued, format!("{id}/e2")));
    let ready: Vec<_> = store.launchable(T0 + 1, usize::MAX).unwrap().into_iter().map(|r| r.run_id).collect();
    let first: Vec<_> = store.launchable(T0 + 1, 1).unwrap().into_iter().map(|r| r.run_id).collect();
    assert_eq!(first, ready[..1], "a limit takes the first in plan order");
    assert!(ready.contains(&"e2".to_string()) && !ready.contains(&"e1".to_string()), "{ready:?}");
    assert!(store.runs_in_state(RunState::Queued).unwrap().iter().any(|r| r.run_id == "e1"), "listed, not launched");
    assert_eq!(store.eval_steps("r2").unwrap(), [20]);
    // A conflicting training set is refused, and the refused submit stores nothing.
    let err = store.submit_sweep(&sweep("a", "spec-a, other runs"), &[new_run("r1", "one"), new_eval("e9", "r1", 1)]);
    assert!(matches!(err, Err(StoreError::SweepConflict { .. })), "{err:?}");
    assert!(store.run("e9").unwrap().is_none());
    // The job runs and succeeds with its results.
    store.start_attempt("e2", "h", T0 + 1_000).unwrap();
    store.attach("e2", 1, 0, T0 + 2_000).unwrap();
    let results = [text_result("code", 2.0), text_result("bible", 1.5)].concat();
    let items: Vec<isoflop_core::choice::ItemScore> = (0..3)
        .map(|i| isoflop_core::choice::ItemScore {
            item: i,
            subset: if i == 0 { "anatomy".into() } else { "virology".into() },
            gold: i as u32 % 2,
            ll: vec![-1.25, -0.5 - i as f64],
            chars: vec![1, 1],
            bytes: vec![1, 2],
        })
        .collect();
    let done = Ending::Succeeded { results: results.clone(), items: items.clone(), message: "scored".into() };
    store.end_attempt("e2", 1, &done).unwrap();
    assert_eq!(store.eval_items("e2").unwrap(), items, "per-item rows round-trip exactly");
    assert!(store.eval_items("e1").unwrap().is_empty());
    let evals = store.evals("r2").unwrap();
    assert_eq!(
        evals.iter().map(|e| (e.distribution.as_str(), e.loss, e.tokens)).collect::<Vec<_>>(),
        [("bible", 1.5, 10), ("code", 2.0, 10)]
    );
    assert_eq!(store.eval_results("e2").unwrap().len(), results.len());
    let stale = Ending::Succeeded { results: text_result("code", 0.1), items: vec![], message: String::new() };
    assert!(matches!(store.end_attempt("e2", 1, &stale), Err(StoreError::StaleAttempt { .. })));
    assert_eq!(store.evals("r2").unwrap()[1].loss, 2.0, "a refused success stores nothing");
    assert_eq!(store.attempt("e2", 1).unwrap().unwrap().outcome, AttemptOutcome::Succeeded);
    assert!(store.evals("r1").unwrap().is_empty());
    // The run list's batch read gives what the per-job verbs give.
    let details = store.sweep_details("a").unwrap();
    for r in store.sweep_runs("a").unwrap() {
        let d = details.get(&r.run_id).cloned().unwrap_or_default();
        assert_eq!(d.attempts, store.attempts(&r.run_id).unwrap(), "{}", r.run_id);
        if r.is_training() {
            assert_eq!(d.evals, store.evals(&r.run_id).unwrap(), "{}", r.run_id);
        } else {
            assert_eq!(d.metrics, store.eval_results(&r.run_id).unwrap(), "{}", r.run_id);
        }
    }
    assert_eq!(details["r2"].evals.len(), 2);
    assert_eq!(details["e2"].metrics.len(), results.len());
}

/// Blocking, placing and lease expiry act only on the live attempt in the right state.
pub fn blocking_and_lease_expiry_decide_from_the_row(store: &dyn Store, clock: &ManualClock) {
    let now = clock.now_ms();
    store.start_attempt("r3", "h", now + 1_000).unwrap();
    let ev = store.block_attempt("r3", 1, "0/2 nodes have a free GPU").unwrap().unwrap();
    assert_eq!((ev.from, ev.to), (RunState::Launching, RunState::Blocked));
    assert_eq!(store.block_attempt("r3", 1, "again").unwrap(), None, "already blocked: no self-loop");
    assert_eq!(store.block_attempt("r3", 2, "no such attempt").unwrap(), None);
    // A blocked attempt has no worker: its lease does not expire.
    assert_eq!(store.expire_lease("r3", 1, now + 60_000, RETRIES).unwrap(), None);
    let ev = store.place_attempt("r3", 1, now + 90_000).unwrap().unwrap();
    assert_eq!((ev.from, ev.to, ev.message.as_str()), (RunState::Blocked, RunState::Launching, "placed"));
    assert_eq!(store.place_attempt("r3", 1, now).unwrap(), None, "not blocked any more");
    assert_eq!(store.attempt("r3", 1).unwrap().unwrap().lease_expires_ms, now + 90_000, "a fresh start-up lease");
    // Not expired yet, then expired: node_lost, requeued without spending a retry.
    assert_eq!(store.expire_lease("r3", 1, now + 90_000, RETRIES).unwrap(), None);
    let ev = store.expire_lease("r3", 1, now + 95_000, RETRIES).unwrap().unwrap();
    assert_eq!((ev.to, ev.failure_class), (RunState::Queued, Some(FailureClass::NodeLost)));
    assert!(ev.message.contains("lease expired 5 s ago"), "{}", ev.message);
    assert_eq!(store.run("r3").unwrap().unwrap().retries_used, 0);
    assert_eq!(store.expire_lease("r3", 1, now + 99_000, RETRIES).unwrap(), None, "ended already");
}

/// Cancel and resume read the run's state in their own transaction.
pub fn cancel_and_resume_decide_in_the_transaction(store: &dyn Store) {
    // A run with a live attempt: the attempt ends cancelled with the run.
    store.start_attempt("r3", "h", T0).unwrap();
    store.attach("r3", 2, 0, T0).unwrap();
    let c = store.cancel_run("r3").unwrap().unwrap();
    assert_eq!((c.event.from, c.event.to, c.live_attempt), (RunState::Running, RunState::Cancelled, Some(2)));
    assert_eq!(store.attempt("r3", 2).unwrap().unwrap().outcome, AttemptOutcome::Cancelled);
    assert_eq!(store.cancel_run("r3").unwrap(), None, "finished runs are left alone");
    let all = store.attempts("r3").unwrap();
    assert_eq!(all.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2], "every attempt, oldest first");
    assert!(all.iter().all(|a| a.ended_ms.is_some()) && all[1].outcome == AttemptOutcome::Cancelled);
    assert_eq!(store.cancel_run("r2").unwrap(), None, "a succeeded run is not cancelled");
    // The checkpoint the cancelled worker writes as it stops is recorded, so a resume starts
    // there (issue 12, defect 8), but only while the run stays cancelled on that attempt.
    assert!(!store.stop_checkpoint("r3", 1, &ckpt(45, 1, 450)).unwrap(), "not the newest attempt");
    assert!(store.stop_checkpoint("r3", 2, &ckpt(45, 9, 450)).unwrap());
    let stopped = store.latest_checkpoint("r3").unwrap().unwrap();
    assert_eq!((stopped.step, stopped.attempt, stopped.tokens_seen), (45, 2, 450), "recorded as attempt 2's");
    // Resume: cancelled and failed runs; diverged only when asked; never a succeeded one.
    let ev = store.resume_run("r3", false).unwrap().unwrap();
    assert_eq!((ev.from, ev.to), (RunState::Cancelled, RunState::Queued));
    assert!(!store.stop_checkpoint("r3", 2, &ckpt(50, 2, 500)).unwrap(), "resumed: a late stop checkpoint is refused");
    assert_eq!(store.latest_checkpoint("r3").unwrap().unwrap().step, 45);
    assert_eq!(store.resume_run("r2", true).unwrap(), None);
    assert_eq!(store.resume_run("r3", true).unwrap(), None, "queued already");
    store.start_attempt("r3", "h", T0).unwrap();
    let diverged = Ending::Failed { class: FailureClass::Diverged, message: "loss became NaN".into(), retries: RETRIES };
    store.end_attempt("r3", 3, &diverged).unwrap();
    assert_eq!(store.resume_run("r3", false).unwrap(), None);
    assert!(store.resume_run("r3", true).unwrap().is_some());
    let r1 = store.resume_run("r1", false).unwrap().unwrap();
    assert_eq!((r1.from, r1.to), (RunState::Failed, RunState::Queued));
    assert_eq!(store.run("r1").unwrap().unwrap().retries_used, 0, "a resume starts the retry budget afresh");
}

/// A user's key: the id, a unique id prefix or a run name in any sweep.
pub fn runs_are_found_by_id_prefix_or_name(store: &dyn Store) {
    let ids = |key: &str| store.find_runs(key).unwrap().into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(ids("r2"), ["r2"]);
    assert_eq!(ids("two-in-b"), ["r2"], "a name in the second sweep finds the shared run");
    assert_eq!(ids("three"), ["r3"]);
    assert_eq!(ids("r").len(), 3, "a prefix of several runs finds them all");
    assert_eq!(ids("r2/heldout@20"), ["e2"], "an evaluation job by its name");
    assert!(ids("x").is_empty());
    assert_eq!(store.find_runs("two-in-b").unwrap()[0].sweep, "a", "seen from its owner");
}

/// A run that a second sweep shares reads the data paths of the newest submission (its
/// identity is the data's digests, not where the files lie), and a run that failed or was
/// cancelled in the first sweep is queued again for the second; a diverged one is not.
pub fn a_run_joining_a_sweep_takes_its_data_paths_and_a_new_try(store: &dyn Store) {
    let at = |id: &str, path: &str| NewRun { config_json: format!("{{\"id\":\"{id}\",\"path\":\"{path}\"}}"), ..new_run(id, id) };
    store.submit_sweep(&sweep("first", "spec-first"), &[at("j1", "/one"), at("j2", "/one"), at("j3", "/one")]).unwrap();
    let fail = |id: &str, class: FailureClass| {
        let (a, _) = store.start_attempt(id, "h", T0 + 60_000).unwrap();
        let ending = Ending::Failed { class, message: "no such shard /one/train.bin".into(), retries: RETRIES };
        store.end_attempt(id, a.attempt, &ending).unwrap();
        assert_eq!(store.run(id).unwrap().unwrap().state, RunState::Failed);
    };
    fail("j1", FailureClass::UserError);
    fail("j2", FailureClass::Diverged);
    let res =
        store.submit_sweep(&sweep("second", "spec-second"), &[at("j1", "/two"), at("j2", "/two"), at("j3", "/two")]).unwrap();
    assert_eq!((res.runs, res.reused, res.requeued), (3, 3, 1), "{res:?}");
    for id in ["j1", "j2", "j3"] {
        assert!(store.run(id).unwrap().unwrap().config_json.contains("/two"), "{id} reads the newest submission's paths");
    }
    let j1 = store.run("j1").unwrap().unwrap();
    assert_eq!((j1.state, j1.retries_used), (RunState::Queued, 0), "failed in `first`, tried again for `second`");
    assert!(store.events("j1").unwrap().last().unwrap().message.contains("second"));
    assert_eq!(store.run("j2").unwrap().unwrap().state, RunState::Failed, "the same recipe would diverge again");
    // Submitting a sweep again requeues nothing it already holds (that is `resume`'s job), but
    // its paths win again.
    fail("j1", FailureClass::UserError);
    let res = store.submit_sweep(&sweep("first", "spec-first"), &[at("j1", "/one"), at("j2", "/one"), at("j3", "/one")]).unwrap();
    assert_eq!(res.requeued, 0);
    assert_eq!(store.run("j1").unwrap().unwrap().state, RunState::Failed);
    assert!(store.run("j3").unwrap().unwrap().config_json.contains("/one"));
}

/// Issue 12, feature 10: an edited spec that plans every stored run and more adds the new
/// runs after the old ones; one that drops a stored run (fewer budgets, another recipe) is
/// refused, naming a run it drops, and stores nothing.
pub fn a_sweep_grows_by_an_edited_spec_and_never_shrinks(store: &dyn Store) {
    store.submit_sweep(&sweep("grow", "v1"), &[new_run("g1", "small")]).unwrap();
    let res = store.submit_sweep(&sweep("grow", "v2"), &[new_run("g1", "small"), new_run("g2", "large")]).unwrap();
    assert_eq!((res.runs, res.reused, res.updated, res.existed), (2, 1, true, false), "{res:?}");
    assert_eq!(store.sweep("grow").unwrap().unwrap().spec_yaml, "v2");
    let names: Vec<String> = store.sweep_runs("grow").unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["small", "large"], "the new run listed after the old");
    let err = store.submit_sweep(&sweep("grow", "v3"), &[new_run("g2", "large"), new_run("g3", "other")]).unwrap_err();
    match &err {
        StoreError::SweepConflict { missing, example, .. } => assert_eq!((*missing, example.as_str()), (1, "small (g1)")),
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains("new `name:`"), "says how to start a new sweep: {err}");
    assert!(store.run("g3").unwrap().is_none() && store.sweep("grow").unwrap().unwrap().spec_yaml == "v2");
}

/// Issue 12, feature 10: deleting a sweep removes the jobs only it holds with all their
/// history, keeps what another sweep shares, and refuses while its own jobs run.
pub fn deleting_a_sweep_keeps_what_another_shares(store: &dyn Store) {
    store.submit_sweep(&sweep("keep", "k"), &[new_run("d2", "shared")]).unwrap();
    store.submit_sweep(&sweep("del", "d"), &[new_run("d1", "mine"), new_run("d2", "shared"), new_eval("de1", "d1", 5)]).unwrap();
    let (a, _) = store.start_attempt("d1", "h", T0 + 60_000).unwrap();
    let err = store.delete_sweep("del", false).unwrap_err();
    assert!(matches!(err, StoreError::SweepActive { active: 1, .. }), "{err}");
    let ending = Ending::Failed { class: FailureClass::UserError, message: "bad".into(), retries: RETRIES };
    store.end_attempt("d1", a.attempt, &ending).unwrap();
    let preview = store.delete_sweep("del", true).unwrap();
    let ids: Vec<&str> = preview.jobs.iter().map(|j| j.run_id.as_str()).collect();
    assert_eq!((ids.len(), preview.shared), (2, 1), "{preview:?}");
    assert!(ids.contains(&"d1") && ids.contains(&"de1"));
    assert!(store.sweep("del").unwrap().is_some() && store.run("d1").unwrap().is_some(), "a dry run deletes nothing");
    let done = store.delete_sweep("del", false).unwrap();
    assert_eq!(done, preview);
    assert!(store.sweep("del").unwrap().is_none() && store.run("d1").unwrap().is_none() && store.run("de1").unwrap().is_none());
    assert!(store.events("d1").unwrap().is_empty() && store.attempt("d1", 1).unwrap().is_none(), "its history too");
    assert_eq!(store.run("d2").unwrap().unwrap().sweep, "keep", "the shared run stays with the other sweep");
    assert_eq!(store.sweep_runs("keep").unwrap().len(), 1);
    assert!(matches!(store.delete_sweep("del", false), Err(StoreError::NotFound { .. })));
}

/// Verbs from many threads at once: eight workers run five attempts each of their run while
/// a canceller cancels and resumes four of the runs and a follower reads the event log by
/// cursor. Every verb either takes effect whole or is refused (a stale attempt, an illegal
/// edge); each run's events chain (one's `to` is the next's `from`); the follower, reading
/// while they write, sees exactly the stored log in order, skipping nothing; no attempt is
/// left active. A backend whose transactions run concurrently (PostgreSQL) must serialise
/// them to pass. Uses sweep `busy`.
pub fn concurrent_verbs_serialise(store: &dyn Store) {
    use std::sync::atomic::{AtomicBool, Ordering};
    const WORKERS: usize = 8;
    const ROUNDS: u64 = 5;
    let ids: Vec<String> = (0..WORKERS).map(|i| format!("busy{i}")).collect();
    let runs: Vec<NewRun> = ids.iter().map(|id| new_run(id, id)).collect();
    store.submit_sweep(&sweep("busy", "spec-busy"), &runs).unwrap();
    let start = store.events_since(0).unwrap().last().map_or(0, |e| e.id);
    let done = AtomicBool::new(false);
    let followed = std::thread::scope(|s| {
        let follower = s.spawn(|| {
            let mut cursor = start;
            let mut seen = Vec::new();
            loop {
                let last_pass = done.load(Ordering::SeqCst);
                for e in store.events_since(cursor).unwrap() {
                    assert!(e.id > cursor, "events_since({cursor}) returned event {}", e.id);
                    cursor = e.id;
                    seen.push(e);
                }
                if last_pass {
                    return seen;
                }
            }
        });
        let workers: Vec<_> = ids
            .iter()
            .map(|id| {
                s.spawn(move || {
                    let mut ended = 0;
                    while ended < ROUNDS {
                        let attempt = match store.start_attempt(id, "h", T0 + 60_000) {
                            Ok((a, _)) => a.attempt,
                            // Cancelled by the canceller, not resumed yet.
                            Err(StoreError::Transition { .. }) => {
                                std::thread::yield_now();
                                continue;
                            }
                            Err(e) => panic!("start_attempt {id}: {e}"),
                        };
                        let stale = |r: Result<()>| match r {
                            Ok(()) => false,
                            Err(StoreError::StaleAttempt { .. } | StoreError::Transition { .. }) => true,
                            Err(e) => panic!("{id}/{attempt}: {e}"),
                        };
                        if stale(store.attach(id, attempt, 0, T0 + 60_000).map(drop)) {
                            continue;
                        }
                        for step in 1..=3 {
                            let report = Report {
                                lease_expires_ms: T0 + 60_000,
                                progress: vec![point(attempt, step, 1.0)],
                                checkpoints: vec![ckpt(step, attempt, step * 10)],
                                ..Report::default()
                            };
                            if stale(store.report(id, attempt, &report).map(drop)) {
                                break;
                            }
                        }
                        let stop =
                            Ending::Interrupted { checkpoint: None, class: FailureClass::Interrupted, message: "round".into() };
                        if !stale(store.end_attempt(id, attempt, &stop).map(drop)) {
                            ended += 1;
                        }
                    }
                })
            })
            .collect();
        let canceller = s.spawn(|| {
            for k in 0..40 {
                let id = &ids[k % 4];
                store.cancel_run(id).unwrap();
                store.resume_run(id, false).unwrap();
            }
        });
        canceller.join().unwrap();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        follower.join().unwrap()
    });
    let stored = store.events_since(start).unwrap();
    assert_eq!(followed.len(), stored.len(), "the follower saw every event");
    assert!(followed == stored, "the follower saw the stored log, in order");
    for id in &ids {
        let ev = store.events(id).unwrap();
        for pair in ev.windows(2) {
            assert_eq!(pair[0].to, pair[1].from, "{id}: event {} then {}", pair[0].id, pair[1].id);
            assert!(pair[0].id < pair[1].id);
        }
        let run = store.run(id).unwrap().unwrap();
        assert_eq!(run.state, RunState::Queued, "{id} ends requeued");
        assert!(store.attempts(id).unwrap().iter().all(|a| a.outcome != AttemptOutcome::Active), "{id}");
        let interrupted = store.attempts(id).unwrap().iter().filter(|a| a.outcome == AttemptOutcome::Interrupted).count();
        assert_eq!(interrupted as u64, ROUNDS, "{id}: every round ended once");
    }
}

/// Fencing: an attempt's number is its token. While attempt 2 of a run is live, its lost
/// attempt 1 (a worker that outlived its coordinator) writes nothing: no progress, checkpoint,
/// result, lease or event, whatever it calls; and no third attempt starts while the second is
/// active, even from `blocked`. Uses sweep `fence`.
pub fn a_stale_attempt_writes_nothing(store: &dyn Store, clock: &ManualClock) {
    store.submit_sweep(&sweep("fence", "spec-fence"), &[new_run("f1", "fenced")]).unwrap();
    store.start_attempt("f1", "h1", T0 + 1_000).unwrap();
    store.attach("f1", 1, 0, T0 + 2_000).unwrap();
    let first = Report { lease_expires_ms: T0 + 2_000, progress: vec![point(1, 1, 5.0)], ..Report::default() };
    store.report("f1", 1, &first).unwrap();
    clock.advance(Duration::from_secs(5));
    store.expire_lease("f1", 1, clock.now_ms(), RETRIES).unwrap().expect("lost");
    clock.advance(Duration::from_secs(60));
    store.start_attempt("f1", "h2", clock.now_ms() + 1_000).unwrap();
    let blocked = store.block_attempt("f1", 2, "no node").unwrap();
    assert!(blocked.is_some());
    let err = store.start_attempt("f1", "h3", clock.now_ms() + 1_000).unwrap_err();
    assert!(matches!(err, StoreError::AttemptLive { attempt: 2, .. }), "never two live attempts: {err}");
    store.place_attempt("f1", 2, clock.now_ms() + 1_000).unwrap().expect("placed");
    store.attach("f1", 2, 0, clock.now_ms() + 2_000).unwrap();
    let (events, progress, attempts) =
        (store.events("f1").unwrap(), store.progress("f1").unwrap(), store.attempts("f1").unwrap());

    let stale = |r: Result<()>| assert!(matches!(r, Err(StoreError::StaleAttempt { attempt: 1, .. })), "{r:?}");
    let late = Report {
        lease_expires_ms: clock.now_ms() + 99_000,
        resumed_from: Some(7),
        progress: vec![point(1, 9, 0.5)],
        checkpoints: vec![ckpt(9, 1, 90)],
        rejected: vec![],
    };
    stale(store.report("f1", 1, &late).map(drop));
    stale(store.attach("f1", 1, 9, clock.now_ms() + 99_000).map(drop));
    stale(store.renew_lease("f1", 1, clock.now_ms() + 99_000));
    let success = Ending::Succeeded { results: text_result("d", 0.5), items: vec![], message: "late".into() };
    stale(store.end_attempt("f1", 1, &success).map(drop));
    let stop = Ending::Interrupted { checkpoint: Some(ckpt(9, 1, 90)), class: FailureClass::Preempted, message: "late".into() };
    stale(store.end_attempt("f1", 1, &stop).map(drop));
    assert!(!store.stop_checkpoint("f1", 1, &ckpt(9, 1, 90)).unwrap());
    assert_eq!(store.block_attempt("f1", 1, "late").unwrap(), None);
    assert_eq!(store.place_attempt("f1", 1, clock.now_ms()).unwrap(), None);
    assert_eq!(store.expire_lease("f1", 1, clock.now_ms() + 1_000_000, RETRIES).unwrap(), None);

    assert_eq!(store.events("f1").unwrap(), events, "no event");
    assert_eq!(store.progress("f1").unwrap(), progress, "no progress point");
    assert_eq!(store.attempts("f1").unwrap(), attempts, "no lease, resume step or outcome changed");
    assert!(store.checkpoints("f1").unwrap().is_empty() && store.eval_results("f1").unwrap().is_empty());
    let run = store.run("f1").unwrap().unwrap();
    assert_eq!((run.state, run.attempts), (RunState::Running, 2), "the live attempt is untouched");
}

/// A submission larger than one multi-row statement (300 training runs, 150 evaluation jobs,
/// an id listed twice, succeeded runs of earlier sweeps shared) stores every job once, in
/// plan order, each new one queued with its one `planned -> queued` event and its artifacts
/// under the store's id; [`Store::sweep_members`] lists what [`Store::sweep_runs`] does.
pub fn a_large_submission_is_stored_whole(store: &dyn Store) {
    let shared: Vec<RunRow> =
        store.runs_in_state(RunState::Succeeded).unwrap().into_iter().filter(|r| r.is_training()).take(2).collect();
    assert!(!shared.is_empty(), "earlier checks leave a succeeded run");
    let mut runs: Vec<NewRun> = (0..300).map(|i| new_run(&format!("big-{i:03}"), &format!("big {i}"))).collect();
    runs.extend(shared.iter().map(|r| NewRun { config_json: r.config_json.clone(), ..new_run(&r.run_id, "shared") }));
    runs.push(new_run("big-007", "listed twice"));
    runs.extend((0..150).map(|i| new_eval(&format!("big-eval-{i:03}"), &format!("big-{i:03}"), 10)));
    let out = store.submit_sweep(&sweep("big", "spec-big"), &runs).unwrap();
    let trained = 300 + shared.len() + 1;
    assert_eq!(
        out,
        SubmitResult {
            runs: trained,
            reused: shared.len() + 1,
            evals: 150,
            evals_reused: 0,
            existed: false,
            updated: false,
            requeued: 0,
            succeeded: shared.len()
        }
    );
    let listed = store.sweep_runs("big").unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.run_id.as_str()).collect();
    let mut want: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    want.remove(300 + shared.len()); // the second listing of big-007 adds no row
    assert_eq!(ids, want, "every job once, in plan order");
    let store_id = store.store_id().unwrap();
    for r in listed.iter().filter(|r| r.run_id.starts_with("big-")) {
        assert_eq!(r.state, RunState::Queued, "{}", r.run_id);
        assert_eq!(r.artifacts_key, format!("{store_id}/{}", r.run_id));
        let ev = store.events(&r.run_id).unwrap();
        assert_eq!(
            ev.iter().map(|e| (e.from, e.to)).collect::<Vec<_>>(),
            [(RunState::Planned, RunState::Queued)],
            "{}",
            r.run_id
        );
    }
    assert_eq!(store.run("big-eval-149").unwrap().unwrap().eval.unwrap().parent, "big-149");
    let members = store.sweep_members("big").unwrap();
    let from_runs: Vec<SweepMember> =
        listed.iter().map(|r| SweepMember { run_id: r.run_id.clone(), state: r.state, training: r.is_training() }).collect();
    assert_eq!(members, from_runs);
    assert_eq!(members.iter().filter(|m| !m.training).count(), 150);
    // Submitted again: nothing new.
    let again = store.submit_sweep(&sweep("big", "spec-big"), &runs).unwrap();
    assert_eq!((again.existed, again.reused, again.evals_reused), (true, trained, 150));
    assert_eq!(store.sweep_runs("big").unwrap().len(), listed.len());
}

/// A checkpoint a worker rejects was made by an earlier attempt: that row goes, and its
/// evaluation job waits; a save of the rejecting attempt at the same step, in the same report
/// or later, stays, and the job is ready again (the chaos drill: an attempt that retrained past
/// a truncated checkpoint while its coordinator was down reported both at once).
pub fn a_rejected_checkpoint_removes_an_earlier_attempts_row_only(store: &dyn Store) {
    store.submit_sweep(&sweep("rej", "spec-rej"), &[new_run("rj", "rj"), new_eval("rj-e", "rj", 20)]).unwrap();
    let ready = |s: &dyn Store| s.launchable(i64::MAX, usize::MAX).unwrap().iter().any(|r| r.run_id == "rj-e");
    let steps = |s: &dyn Store| s.checkpoints("rj").unwrap().iter().map(|c| (c.step, c.attempt)).collect::<Vec<_>>();
    let (a1, _) = store.start_attempt("rj", "h", T0 + 60_000).unwrap();
    store.attach("rj", a1.attempt, 0, T0 + 60_000).unwrap();
    let saved = Report { lease_expires_ms: T0 + 60_000, checkpoints: vec![ckpt(10, 1, 1), ckpt(20, 1, 2)], ..Report::default() };
    store.report("rj", 1, &saved).unwrap();
    assert!(ready(store), "its checkpoint is recorded");
    let stopped = Ending::Interrupted { checkpoint: None, class: FailureClass::Interrupted, message: "killed".into() };
    store.end_attempt("rj", 1, &stopped).unwrap();
    store.start_attempt("rj", "h", T0 + 60_000).unwrap();
    store.attach("rj", 2, 10, T0 + 60_000).unwrap();
    // The truncated step-20 checkpoint of attempt 1, rejected with a new save at 20 by attempt 2.
    let damaged = RejectedCheckpoint { step: 20, path: "/c/20".into(), reason: "truncated".into() };
    let both = Report {
        lease_expires_ms: T0 + 60_000,
        resumed_from: Some(10),
        checkpoints: vec![ckpt(20, 2, 3)],
        rejected: vec![damaged.clone()],
        ..Report::default()
    };
    assert_eq!(store.report("rj", 2, &both).unwrap().len(), 1, "the rejection is noted");
    assert_eq!(steps(store), [(10, 1), (20, 2)], "the new save stays");
    assert!(ready(store));
    // The same rejection again (a report retried, a marker lost) removes nothing of attempt 2.
    store.report("rj", 2, &Report { lease_expires_ms: T0 + 60_000, rejected: vec![damaged], ..Report::default() }).unwrap();
    assert_eq!(steps(store), [(10, 1), (20, 2)]);
    assert!(ready(store));
    // Attempt 3 rejects attempt 2's step 20: that row goes, and the evaluation job waits.
    store.end_attempt("rj", 2, &stopped).unwrap();
    store.start_attempt("rj", "h", T0 + 60_000).unwrap();
    store.attach("rj", 3, 10, T0 + 60_000).unwrap();
    let rejected = vec![RejectedCheckpoint { step: 20, path: "/c/20".into(), reason: "truncated again".into() }];
    store
        .report("rj", 3, &Report { lease_expires_ms: T0 + 60_000, resumed_from: Some(10), rejected, ..Report::default() })
        .unwrap();
    assert_eq!(steps(store), [(10, 1)]);
    assert!(!ready(store), "no checkpoint at its step");
}
