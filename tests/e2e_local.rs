//! End to end on this machine: real corpora, the real `isoflop` binary, real tch training on
//! CPU in worker processes, the coordinator in-process, SQLite.

mod common;

use common::{TINY_SWEEP, isoflop, show, spawn_run, wait_for, write_spec};
use isoflop_core::RunState;
use isoflop_store::{AttemptOutcome, SqliteStore, Store};

#[test]
fn tiny_sweep_trains_every_run_and_stores_every_loss() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), TINY_SWEEP);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("isoflop-1.5e+09-d16-L1-B8-mix") && stdout.contains("* = lowest mean loss"), "{stdout}");

    let store = SqliteStore::open(dir.path().join("state/isoflop.db")).unwrap();
    let runs = common::training(&store, "tiny");
    assert_eq!(runs.len(), 4, "2 budgets x 2 widths");
    let dists = ["bible", "dictionary", "manpages", "python", "shakespeare"];
    for r in &runs {
        assert_eq!(r.state, RunState::Succeeded, "{}: {}", r.name, r.message);
        assert_eq!(r.attempts, 1);
        let progress = store.progress(&r.run_id).unwrap();
        let initial = progress.iter().find(|p| p.step == 0).expect("a step-0 progress point").loss;
        assert!((initial - 259f64.ln()).abs() < 0.5, "{}: initial loss {initial}", r.name);
        let last = progress.last().unwrap();
        assert_eq!(last.step, last.total_steps, "{} ends at its planned step", r.name);
        assert!(progress.iter().all(|p| p.micro_batch == Some(8)), "{}: the micro-batch in use is stored", r.name);
        let evals = store.evals(&r.run_id).unwrap();
        assert_eq!(evals.iter().map(|e| e.distribution.as_str()).collect::<Vec<_>>(), dists, "{}", r.name);
        for e in &evals {
            assert!(
                e.loss.is_finite() && e.loss < initial,
                "{} on {}: {} !< step-0 loss {initial}",
                r.name,
                e.distribution,
                e.loss
            );
            assert!(e.bits_per_byte > 0.0 && e.tokens > 0 && e.bytes > 0);
        }
        let events: Vec<_> = store.events(&r.run_id).unwrap().iter().map(|e| e.to).collect();
        use RunState::*;
        assert_eq!(events, [Queued, Launching, Running, Succeeded], "{}", r.name);
    }

    // Status from the store, as JSON.
    let out = isoflop(&["status", "tiny", "--format", "json", "--store", dir.path().join("state/isoflop.db").to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 4);
    assert!(v["runs"][0]["evals"]["python"]["bits_per_byte"].as_f64().unwrap() > 0.0);

    // Logs of a run's attempt, and of the evaluation job that scored it.
    let db = dir.path().join("state/isoflop.db");
    let out = isoflop(&["logs", &runs[0].run_id[..8], "--store", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("checkpoint at step"), "{}", show(&out));
    // An attempt that does not exist is bad input, naming what exists (it exited 0).
    let out = isoflop(&["logs", &runs[0].run_id[..8], "--attempt", "9", "--store", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no attempt 9: it has only attempt 1"), "{}", show(&out));
    let out = isoflop(&["logs", &format!("{}/heldout", runs[0].name), "--store", db.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("worker: eval python bpb"), "{}", show(&out));

    // The same command again retrains nothing.
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(common::training(&store, "tiny").iter().all(|r| r.attempts == 1));

    // A second sweep sharing runs trains only what is new: here, nothing.
    let other =
        write_spec(dir.path(), &TINY_SWEEP.replace("name: tiny", "name: tiny-subset").replace("[1.5e9, 3.0e9]", "[3.0e9]"));
    let out = isoflop(&["run", other.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 runs (2 already succeeded"), "{}", show(&out));
    assert!(common::training(&store, "tiny-subset").iter().all(|r| r.attempts == 1 && r.state == RunState::Succeeded));
}

/// `runtime.precision: bf16` reaches the worker: the runs train in bf16 mixed precision (the
/// worker log says so) with the requested micro-batch, which the store and status report.
#[test]
fn bf16_sweep_trains_with_micro_batches() {
    let dir = tempfile::tempdir().unwrap();
    let body = TINY_SWEEP
        .replace("name: tiny", "name: tiny-bf16")
        .replace("[1.5e9, 3.0e9]", "[1.5e9]")
        .replace("progress_every: 5}", "progress_every: 5, precision: bf16, micro_batch: 4}");
    let spec = write_spec(dir.path(), &body);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let db = dir.path().join("state/isoflop.db");
    let store = SqliteStore::open(&db).unwrap();
    let runs = common::training(&store, "tiny-bf16");
    assert_eq!(runs.len(), 2);
    for r in &runs {
        assert_eq!(r.state, RunState::Succeeded, "{}: {}", r.name, r.message);
        let progress = store.progress(&r.run_id).unwrap();
        let (first, last) = (progress.first().unwrap(), progress.last().unwrap());
        assert!(last.loss < first.loss - 0.5, "{}: {} -> {}", r.name, first.loss, last.loss);
        assert!(progress.iter().all(|p| p.micro_batch == Some(4)), "{}", r.name);
        assert!(store.evals(&r.run_id).unwrap().iter().all(|e| e.loss.is_finite() && e.loss < first.loss));
        let out = isoflop(&["logs", &r.run_id[..8], "--store", db.to_str().unwrap()]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("cpu bf16"), "{}", show(&out));
    }
    let out = isoflop(&["status", "tiny-bf16", "--format", "json", "--store", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"][0]["micro_batch"], 4, "{v}");
    let out = isoflop(&["status", "tiny-bf16", "--store", db.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("micro"), "{}", show(&out));
}

/// Issue 12, features 9 and 12: `isoflop sweeps` lists the sweep with its compute done of
/// planned, start and end; `curves` prints every progress point; `status --format json` has
/// start, end and duration per run and attempt; `export SWEEP --csv` writes the table that
/// `fit --from-csv` (with the options it names) fits exactly as `fit SWEEP` does.
#[test]
fn sweeps_curves_and_an_exported_table_that_fits_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), TINY_SWEEP);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let db = dir.path().join("state/isoflop.db");
    let db_arg = db.to_str().unwrap();
    let store = SqliteStore::open(&db).unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = isoflop(args);
        assert!(out.status.success(), "{}", show(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let v = json(&["sweeps", "--store", db_arg, "--format", "json"]);
    let s = &v["sweeps"][0];
    assert_eq!(
        (s["sweep"].as_str(), s["runs"].as_u64(), s["evals"].as_u64(), s["succeeded"].as_u64()),
        (Some("tiny"), Some(4), Some(4), Some(8))
    );
    assert_eq!(s["flops_planned"].as_f64(), Some(2.0 * 1.5e9 + 2.0 * 3.0e9));
    assert_eq!(s["flops_done"], s["flops_planned"]);
    assert!(s["ended_ms"].as_i64().unwrap() >= s["started_ms"].as_i64().unwrap());
    let out = isoflop(&["sweeps", "--store", db_arg]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(100%)"), "{}", show(&out));

    let run = &common::training(&store, "tiny")[0];
    let out = isoflop(&["curves", &run.run_id[..8], "--store", db_arg]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("attempt,step,total_steps,tokens_seen,loss,lr,grad_norm"), "{text}");
    assert_eq!(lines.count(), store.progress(&run.run_id).unwrap().len(), "one row per stored point");
    let c = json(&["curves", &run.name, "--store", db_arg, "--format", "json"]);
    let last = c["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["step"].clone(), last["loss"].as_f64()),
        (last["total_steps"].clone(), run.progress.as_ref().map(|p| p.loss))
    );

    let st = json(&["status", "tiny", "--store", db_arg, "--format", "json"]);
    let r = &st["runs"][0];
    let (start, end) = (r["started_ms"].as_i64().unwrap(), r["ended_ms"].as_i64().unwrap());
    assert!(end >= start && r["duration_seconds"].as_f64().unwrap() >= 0.0, "{r}");
    let a = &r["attempt_list"][0];
    assert_eq!((a["attempt"].as_u64(), a["outcome"].as_str()), (Some(1), Some("succeeded")), "{r}");
    assert!(st["eval_jobs"][0]["attempt_list"][0]["duration_seconds"].as_f64().is_some());

    let csv = dir.path().join("tiny.csv");
    let out = isoflop(&["export", "tiny", "--csv", "--out", csv.to_str().unwrap(), "--store", db_arg]);
    assert!(out.status.success(), "{}", show(&out));
    let hint = String::from_utf8_lossy(&out.stderr).into_owned();
    let flags = hint.split(&format!("--from-csv {} ", csv.display())).nth(1).and_then(|t| t.split('`').next()).unwrap();
    let mut args = vec!["fit", "--from-csv", csv.to_str().unwrap(), "--format", "json"];
    args.extend(flags.split_whitespace());
    let from_csv = json(&args);
    let from_sweep = json(&["fit", "tiny", "--store", db_arg, "--format", "json"]);
    assert_eq!(from_csv, from_sweep, "the same fit, interval for interval ({flags})");
}

/// Issue 12, feature 10: a sweep extended by a budget trains only the new runs (`plan --diff`
/// shows them first); a spec that drops runs is refused, naming one; `delete` removes the
/// runs only that sweep holds, with their artifacts, and keeps those another sweep shares.
#[test]
fn a_sweep_grows_by_its_spec_and_is_deleted_without_its_shared_runs() {
    let dir = tempfile::tempdir().unwrap();
    let one = TINY_SWEEP.replace("[1.5e9, 3.0e9]", "[1.5e9]");
    let spec = write_spec(dir.path(), &one);
    let spec_arg = spec.to_str().unwrap();
    let out = isoflop(&["run", spec_arg, "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let db = dir.path().join("state/isoflop.db");
    let db_arg = db.to_str().unwrap();
    let store = SqliteStore::open(&db).unwrap();
    let before = common::training(&store, "tiny");
    assert_eq!(before.len(), 2);

    // Add a budget: the diff shows the two new runs, the run trains only them.
    write_spec(dir.path(), TINY_SWEEP);
    let out = isoflop(&["plan", spec_arg, "--diff"]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("2 training run(s) added, 2 kept, 0 dropped") && text.matches("isoflop-3e+09").count() == 2, "{text}");
    let out = isoflop(&["run", spec_arg, "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("4 runs (2 already succeeded)") && !said.contains("shared with other sweeps"), "{said}");
    let after = common::training(&store, "tiny");
    assert_eq!(after.len(), 4);
    assert_eq!(
        after[..2].iter().map(|r| &r.run_id).collect::<Vec<_>>(),
        before.iter().map(|r| &r.run_id).collect::<Vec<_>>(),
        "old runs first"
    );
    for r in &after {
        assert_eq!((r.state, r.attempts), (RunState::Succeeded, 1), "{} trained once", r.name);
    }
    assert!(after[..2].iter().zip(&before).all(|(a, b)| a.updated_ms == b.updated_ms), "the old runs were not touched");

    // Drop the first budget: refused by plan --diff and by run, naming a run it drops.
    write_spec(dir.path(), &TINY_SWEEP.replace("[1.5e9, 3.0e9]", "[3.0e9]"));
    for args in [vec!["plan", spec_arg, "--diff"], vec!["run", spec_arg, "--plain"]] {
        let out = isoflop(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("can only grow") && err.contains("isoflop-1.5e+09") && err.contains("new `name:`"), "{err}");
    }
    assert_eq!(common::training(&store, "tiny").len(), 4, "nothing changed");

    // A second sweep shares one run; deleting `tiny` keeps it (and its evaluation job).
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let other_spec = write_spec(
        &other,
        &one.replace("name: tiny", "name: other")
            .replace("hidden: [16, 32]", "hidden: [16]")
            .replace("state/isoflop.db", "../state/isoflop.db"),
    );
    let out = isoflop(&["run", other_spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let shared = common::training(&store, "other")[0].clone();
    let out = isoflop(&["delete", "tiny", "--store", db_arg]);
    assert_eq!(out.status.code(), Some(2), "no terminal to ask: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"), "{}", show(&out));
    assert_eq!(common::training(&store, "tiny").len(), 4, "nothing deleted without a yes");
    let out = isoflop(&["delete", "tiny", "--yes", "--store", db_arg]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("3 training run(s), 3 evaluation job(s)") && text.contains("kept 2 shared job(s)"), "{text}");
    assert!(store.sweep("tiny").unwrap().is_none());
    for r in after.iter().filter(|r| r.run_id != shared.run_id) {
        assert!(store.run(&r.run_id).unwrap().is_none(), "{} deleted", r.name);
        assert!(!dir.path().join("state/runs").join(&r.artifacts_key).exists(), "{} artifacts removed", r.name);
    }
    assert_eq!(store.run(&shared.run_id).unwrap().unwrap().state, RunState::Succeeded);
    assert!(dir.path().join("state/runs").join(&shared.artifacts_key).exists(), "the shared run keeps its checkpoints");
    let out = isoflop(&["status", "other", "--store", db_arg]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("[other] 2/2 done"), "{}", show(&out));
}

/// One run long enough to be interrupted twice (about 3,900 steps: on a 2-core CPU the tiny
/// model trains at ~600 steps/s, so a shorter run can finish before a Ctrl-C reaches it).
fn long_run() -> String {
    TINY_SWEEP
        .replace("name: tiny", "name: long")
        .replace("[1.5e9, 3.0e9]", "[1.6e11]")
        .replace("hidden: [16, 32]", "hidden: [32]")
        .replace("max_parallel: 2", "max_parallel: 1")
        .replace("checkpoint_every: 20", "checkpoint_every: 25")
}

#[test]
fn killed_worker_and_interrupted_sweep_resume_from_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &long_run());
    let db = dir.path().join("state/isoflop.db");
    let child = spawn_run(&spec);
    let store = wait_for(&SqliteStore::in_memory().unwrap(), 60, "the store", |_| {
        SqliteStore::open(&db).ok().filter(|s| !s.sweeps().unwrap().is_empty())
    });
    let run_id = common::training(&store, "long")[0].run_id.clone();
    let planned =
        serde_json::from_str::<isoflop_core::RunConfig>(&store.run(&run_id).unwrap().unwrap().config_json).unwrap().recipe.steps;
    assert!(planned >= 300, "the run is long enough to interrupt twice ({planned} steps)");

    // 1. SIGKILL the worker once it has a checkpoint past step 0.
    let ckpt = wait_for(&store, 120, "a checkpoint", |s| s.latest_checkpoint(&run_id).unwrap().filter(|c| c.step >= 50));
    let attempt = store.attempt(&run_id, 1).unwrap().unwrap();
    let pid: i32 = attempt.executor_ref.strip_prefix("pid:").unwrap().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();

    // The coordinator notices, records the failure with its class, and relaunches from the
    // newest checkpoint.
    let second = wait_for(&store, 60, "attempt 2 to attach", |s| s.attempt(&run_id, 2).unwrap().filter(|a| a.resume_step > 0));
    let first = store.attempt(&run_id, 1).unwrap().unwrap();
    assert_eq!(first.outcome, AttemptOutcome::Failed);
    assert_eq!(first.failure_class, Some(isoflop_core::FailureClass::Unknown));
    assert!(first.message.contains("signal 9"), "{}", first.message);
    let last_step_of_first = store.progress(&run_id).unwrap().iter().filter(|p| p.attempt == 1).map(|p| p.step).max().unwrap();
    assert!(second.resume_step >= ckpt.step, "resumed from step {} (checkpoint {} existed)", second.resume_step, ckpt.step);
    assert_eq!(second.resume_step % 25, 0, "resumed from a checkpoint");
    // It loses at most the steps since its newest checkpoint (plus one report interval of
    // progress the coordinator had not seen yet).
    assert!(
        last_step_of_first < second.resume_step + 25 + 5,
        "attempt 1 reached {last_step_of_first}, resumed at {}",
        second.resume_step
    );

    // 2. Ctrl-C the whole sweep once attempt 2 has checkpointed further.
    wait_for(&store, 120, "a checkpoint of attempt 2", |s| {
        s.latest_checkpoint(&run_id).unwrap().filter(|c| c.attempt == 2 && c.step > second.resume_step)
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    let interrupted = store.attempt(&run_id, 2).unwrap().unwrap();
    assert_eq!(interrupted.outcome, AttemptOutcome::Interrupted, "{}", show(&out));
    // Stopped by its own sweep, not preempted from outside (issue 12, defect 8).
    assert_eq!(interrupted.failure_class, Some(isoflop_core::FailureClass::Interrupted), "{}", show(&out));
    let r = store.run(&run_id).unwrap().unwrap();
    assert_eq!(r.state, RunState::Queued);
    let stopped_at = store.latest_checkpoint(&run_id).unwrap().unwrap().step;
    assert!(stopped_at > second.resume_step, "a checkpoint was written on SIGTERM");

    // 3. The same command again continues from that checkpoint and finishes the plan.
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let r = store.run(&run_id).unwrap().unwrap();
    assert_eq!((r.state, r.attempts), (RunState::Succeeded, 3));
    let third = store.attempt(&run_id, 3).unwrap().unwrap();
    assert_eq!(third.resume_step, stopped_at);
    let last = store.progress(&run_id).unwrap().into_iter().last().unwrap();
    assert_eq!(last.step, planned);
    assert_eq!(store.evals(&run_id).unwrap().len(), 5);
    eprintln!(
        "resume evidence: killed at/after checkpoint {} -> attempt 2 resumed at {}; Ctrl-C -> checkpoint {} -> attempt 3 resumed at {}; finished at {planned}",
        ckpt.step, second.resume_step, stopped_at, third.resume_step
    );
}

/// Issue 12, defect 3: after `kill -9` of `isoflop run`, `status` marks its active runs stale
/// (no coordinator holds the store) with the time since their last report, instead of showing
/// them running forever; the rerun finishes them with one final train loss, the same in the
/// run's note, its last progress point and `status`.
#[test]
fn a_killed_sweep_shows_stale_runs_and_reruns_to_one_final_loss() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &long_run());
    let db = dir.path().join("state/isoflop.db");
    let db_arg = db.to_str().unwrap();
    let mut child = spawn_run(&spec);
    let store = wait_for(&SqliteStore::in_memory().unwrap(), 60, "the store", |_| {
        SqliteStore::open(&db).ok().filter(|s| !s.sweeps().unwrap().is_empty())
    });
    let run_id = common::training(&store, "long")[0].run_id.clone();
    wait_for(&store, 120, "progress", |s| s.progress(&run_id).unwrap().into_iter().find(|p| p.step >= 50));
    child.kill().unwrap();
    child.wait().unwrap();
    let out = isoflop(&["status", "long", "--store", db_arg]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("running (stale)") && text.contains("no coordinator holds this store"), "{text}");
    assert!(text.contains(" ago"), "the time since the last report: {text}");
    let out = isoflop(&["status", "long", "--store", db_arg, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["coordinator_running"], false);
    let run = v["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == run_id.as_str()).unwrap().clone();
    assert_eq!(run["stale"], true);
    assert!(
        run["heartbeat_age_seconds"].as_f64().is_some_and(|a| (0.0..120.0).contains(&a)),
        "seconds since its last report: {run}"
    );

    // The killed coordinator's worker lives on (its own process group). The rerun stops it
    // and waits for it to exit before the run's next attempt starts (issue 13: an orphan went
    // on writing checkpoints beside the new attempt).
    let orphan: i32 = store.attempt(&run_id, 1).unwrap().unwrap().executor_ref.strip_prefix("pid:").unwrap().parse().unwrap();
    let alive = move || {
        let stat = std::fs::read_to_string(format!("/proc/{orphan}/stat")).unwrap_or_default();
        stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()).is_some_and(|s| s != 'Z' && s != 'X')
    };
    assert!(alive(), "the orphan still runs after its coordinator was killed");
    let watcher = std::thread::spawn(move || {
        while alive() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        isoflop_core::Clock::now_ms(&isoflop_core::SystemClock)
    });

    // The rerun recovers and finishes it: one final train loss everywhere.
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let orphan_gone_ms = watcher.join().unwrap();
    let second = store.attempt(&run_id, 2).unwrap().unwrap();
    // The watcher samples every 20 ms: it notices the exit up to that much after it.
    assert!(
        second.started_ms + 25 >= orphan_gone_ms,
        "attempt 2 started {} ms before the orphan exited",
        orphan_gone_ms - second.started_ms
    );
    assert!(store.progress(&run_id).unwrap().iter().all(|p| p.attempt != 1 || p.at_ms <= second.started_ms));
    let r = store.run(&run_id).unwrap().unwrap();
    assert_eq!(r.state, RunState::Succeeded);
    let last = r.progress.clone().unwrap();
    let planned = serde_json::from_str::<isoflop_core::RunConfig>(&r.config_json).unwrap().recipe.steps;
    assert_eq!(last.step, planned, "status shows the final step");
    assert_eq!(r.message, format!("final loss {:.4}", last.loss), "the note and the last point agree");
    let out = isoflop(&["status", "long", "--store", db_arg, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["coordinator_running"], false, "nobody holds the store after the run");
    let run = v["runs"].as_array().unwrap().iter().find(|x| x["run_id"] == run_id.as_str()).unwrap().clone();
    assert_eq!((run["loss"].as_f64(), run["stale"].as_bool()), (Some(last.loss), Some(false)), "{run}");
    let first = &run["attempt_list"][0];
    assert_eq!((first["outcome"].as_str(), first["failure_class"].as_str()), (Some("interrupted"), Some("interrupted")), "{run}");
}

#[test]
fn failed_runs_are_classified_and_resume_requeues_only_what_it_should() {
    let dir = tempfile::tempdir().unwrap();
    // A private copy of the corpus whose training shard we can take away.
    let corpus = common::copy_corpus(&dir.path().join("corpus"));
    let body = TINY_SWEEP
        .replace("@MANIFEST@", &corpus.join("manifest.json").display().to_string())
        .replace("[1.5e9, 3.0e9]", "[1.5e9]")
        .replace("hidden: [16, 32]", "hidden: [16]");
    let spec = write_spec(dir.path(), &body);
    let db = dir.path().join("state/isoflop.db");
    let db_arg = db.to_str().unwrap();

    // 1. The training shard's tokens are corrupted after planning, at the same size (it
    //    trained and succeeded before issue 12's defect 2 was fixed): the worker's digest
    //    check fails the attempt with a user error, which is not retried.
    let train = corpus.join("train.bin");
    let saved = dir.path().join("train.bin.saved");
    std::fs::copy(&train, &saved).unwrap();
    let store = SqliteStore::open(&db).unwrap();
    let loaded = isoflop_core::spec::SweepSpec::load(&spec).unwrap();
    let planned = isoflop_coordinator::resolve::PlannedSweep::from_spec(&loaded).unwrap();
    store.submit_sweep(&planned.sweep, &planned.new_runs()).unwrap();
    common::flip_a_token(&train);
    let out = isoflop(&["resume", "tiny", "--store", db_arg, "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = &common::training(&store, "tiny")[0];
    assert_eq!(
        (r.state, r.failure_class, r.attempts),
        (RunState::Failed, Some(isoflop_core::FailureClass::UserError), 1),
        "{}",
        r.message
    );
    assert!(r.message.contains("train.bin") && r.message.contains("corrupt"), "the failure names the file: {}", r.message);

    // `isoflop data verify` finds it too, naming the file (exit 2).
    let out = isoflop(&["data", "verify", corpus.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("train.bin"), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("BAD"), "{}", show(&out));

    // 2. Put it back: `isoflop resume` requeues the failed run and completes it.
    std::fs::copy(&saved, &train).unwrap();
    let out = isoflop(&["data", "verify", corpus.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let out = isoflop(&["resume", "tiny", "--store", db_arg, "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("requeued 1 run(s)"), "{}", show(&out));
    let r = &common::training(&store, "tiny")[0];
    assert_eq!((r.state, r.attempts), (RunState::Succeeded, 2));
    assert_eq!(store.evals(&r.run_id).unwrap().len(), 5);

    // 3. Resume leaves succeeded runs alone.
    let out = isoflop(&["resume", "tiny", "--store", db_arg, "--no-run"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("requeued 0 run(s)"), "{}", show(&out));
}

/// Issue 12, defect 1: a run shared by a second sweep whose corpus lies elsewhere (a copy:
/// the same digests) reads the second sweep's shards when the second sweep launches it, and a
/// failure in the first sweep (its shard clobbered) is tried again for the second.
#[test]
fn a_shared_run_reads_the_data_of_the_sweep_that_launches_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut specs = Vec::new();
    for name in ["one", "two"] {
        let corpus = common::copy_corpus(&dir.path().join(name).join("corpus"));
        let body = TINY_SWEEP
            .replace("name: tiny", &format!("name: {name}"))
            .replace("@MANIFEST@", &corpus.join("manifest.json").display().to_string())
            .replace("[1.5e9, 3.0e9]", "[1.5e9]")
            .replace("hidden: [16, 32]", "hidden: [16]")
            .replace("state/isoflop.db", "../state/isoflop.db");
        specs.push(write_spec(&dir.path().join(name), &body));
    }
    let db = dir.path().join("state/isoflop.db");
    let db_arg = db.to_str().unwrap();
    // 1. Sweep `one` fails its run: its training shard is corrupted after planning.
    let store = SqliteStore::open(&db).unwrap();
    let loaded = isoflop_core::spec::SweepSpec::load(&specs[0]).unwrap();
    let planned = isoflop_coordinator::resolve::PlannedSweep::from_spec(&loaded).unwrap();
    store.submit_sweep(&planned.sweep, &planned.new_runs()).unwrap();
    common::flip_a_token(&dir.path().join("one/corpus/train.bin"));
    let out = isoflop(&["resume", "one", "--store", db_arg, "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let run = common::training(&store, "one")[0].clone();
    assert_eq!((run.state, run.failure_class), (RunState::Failed, Some(isoflop_core::FailureClass::UserError)));
    assert!(run.message.contains("one/corpus/train.bin"), "{}", run.message);

    // 2. Sweep `two` plans the same run over its own copy: it is tried again there and reads
    //    two's shard (before the fix: reported failed, never attempted, or reading one's shard).
    let out = isoflop(&["run", specs[1].to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("queued again"), "{}", show(&out));
    let r = store.run(&run.run_id).unwrap().unwrap();
    assert_eq!((r.state, r.attempts), (RunState::Succeeded, 2), "{}", r.message);
    let config: isoflop_core::RunConfig = serde_json::from_str(&r.config_json).unwrap();
    assert!(config.data.train.path.contains("two/corpus/train.bin"), "{}", config.data.train.path);
    let log =
        std::fs::read_to_string(isoflop_coordinator::log_path(&dir.path().join("state/runs"), &r.artifacts_key, 2)).unwrap();
    assert!(log.contains("two/corpus") && !log.contains("one/corpus"), "attempt 2 reads two's corpus only:\n{log}");
}

/// Issue 12, defect 4: a new store over the artifacts directory of another trains its runs
/// itself: it adopted the other store's checkpoints (trained on other data: it "succeeded" in
/// 3 s) and appended its attempt logs to the other's files.
#[test]
fn a_new_store_over_old_artifacts_shares_no_checkpoint_or_log() {
    let dir = tempfile::tempdir().unwrap();
    let body = |db: &str| {
        TINY_SWEEP
            .replace("[1.5e9, 3.0e9]", "[1.5e9]")
            .replace("hidden: [16, 32]", "hidden: [16]")
            .replace("store: {sqlite: state/isoflop.db}", &format!("store: {{sqlite: state/{db}, artifacts: shared-runs}}"))
    };
    let spec = write_spec(dir.path(), &body("first.db"));
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let first = SqliteStore::open(dir.path().join("state/first.db")).unwrap();
    let old = common::training(&first, "tiny")[0].clone();

    let spec = write_spec(dir.path(), &body("second.db"));
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let second = SqliteStore::open(dir.path().join("state/second.db")).unwrap();
    let new = common::training(&second, "tiny")[0].clone();
    assert_eq!(new.run_id, old.run_id, "the same run");
    assert_ne!(new.artifacts_key, old.artifacts_key, "in its own store's directory");
    assert_eq!(second.attempt(&new.run_id, 1).unwrap().unwrap().resume_step, 0, "trained from step 0, not adopted");
    assert_eq!(second.progress(&new.run_id).unwrap()[0].step, 0);
    let arts = dir.path().join("shared-runs");
    let log = |key: &str| std::fs::read_to_string(isoflop_coordinator::log_path(&arts, key, 1)).unwrap();
    assert_eq!(log(&old.artifacts_key).matches("attempt 1:").count(), 1, "the first store's log is its own");
    assert_eq!(log(&new.artifacts_key).matches("attempt 1:").count(), 1);
}

#[test]
fn diverged_runs_fail_and_resume_only_with_include_diverged() {
    let dir = tempfile::tempdir().unwrap();
    let body = TINY_SWEEP
        .replace("name: tiny", "name: boom")
        .replace("[1.5e9, 3.0e9]", "[1.5e9]")
        .replace("hidden: [16, 32]", "hidden: [16]")
        .replace("lr_constant: 0.1", "lr_constant: 1.0e12")
        .replace("lr_max: 0.01", "lr_max: 1.0e12")
        .replace("grad_clip: 1.0", "grad_clip: 0.0");
    let spec = write_spec(dir.path(), &body);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed(diverged)"), "{}", show(&out));
    let db = dir.path().join("state/isoflop.db");
    let store = SqliteStore::open(&db).unwrap();
    let r = &common::training(&store, "boom")[0];
    assert_eq!((r.state, r.failure_class, r.attempts), (RunState::Failed, Some(isoflop_core::FailureClass::Diverged), 1));
    let db_arg = db.to_str().unwrap();
    let out = isoflop(&["resume", "boom", "--store", db_arg, "--no-run"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("requeued 0 run(s)"), "{}", show(&out));
    let out = isoflop(&["resume", "boom", "--store", db_arg, "--no-run", "--include-diverged"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("requeued 1 run(s)"), "{}", show(&out));
    assert_eq!(common::training(&store, "boom")[0].state, RunState::Queued);
}

/// Issue 13 (defect: a full artifacts disk panicked workers, exit 101 with an empty log, runs
/// ended `unknown` with no word about disk space): the tiny sweep's artifacts directory on a
/// real 4 MiB tmpfs, filled but for 48 KiB, in a mount namespace of its own (`unshare -m`, or
/// `-Urm` for a user who is not root). Every run's checkpoint cannot be written: `isoflop run`
/// ends 1, each run failed saying the disk is full, nothing in the store (on another disk) lost.
/// With the space freed, `isoflop resume` trains every run to the end.
#[test]
fn a_full_artifacts_disk_fails_runs_saying_so_and_resume_completes_them() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let body = TINY_SWEEP
        .replace("[1.5e9, 3.0e9]", "[1.5e9]")
        .replace("executor: {kind: local, max_parallel: 2}", "executor: {kind: local, max_parallel: 2, max_retries: 1}")
        .replace(
            "store: {sqlite: state/isoflop.db}",
            &format!("store: {{sqlite: state/isoflop.db, artifacts: {}}}", artifacts.display()),
        );
    let spec = write_spec(dir.path(), &body);
    let db = dir.path().join("state/isoflop.db");
    let script = r#"set -e
mount -t tmpfs -o size=4m isoflop-full "$ART"
head -c $((4 * 1024 * 1024 - 48 * 1024)) /dev/zero > "$ART/filler"
set +e
"$ISOFLOP" run "$SPEC" --plain > "$OUT/first.out" 2>&1
echo $? > "$OUT/first.code"
df -k "$ART" > "$OUT/df" 2>&1
rm -f "$ART/filler"
"$ISOFLOP" resume tiny --store "$DB" --plain > "$OUT/resume.out" 2>&1
echo $? > "$OUT/resume.code"
"#;
    // A directory this process made is owned by its effective user.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&artifacts).unwrap()) == 0;
    let out = std::process::Command::new("unshare")
        .args(if root { &["-m", "--propagation", "private"][..] } else { &["-Urm", "--propagation", "private"][..] })
        .args(["sh", "-c", script])
        .env("ART", &artifacts)
        .env("ISOFLOP", common::bin())
        .env("SPEC", &spec)
        .env("DB", &db)
        .env("OUT", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "the mount namespace with a small tmpfs could not be made: {}", show(&out));
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    assert_eq!(
        read("first.code").trim(),
        "1",
        "isoflop run on a full disk ends 1 (some runs failed):\n{}\n{}",
        read("first.out"),
        read("df")
    );

    let store = SqliteStore::open(&db).unwrap();
    let attempts_of = |run: &str| store.attempts(run).unwrap();
    let runs = common::training(&store, "tiny");
    assert_eq!(runs.len(), 2);
    for r in &runs {
        let first = &attempts_of(&r.run_id)[0];
        eprintln!("{} attempt 1 on the full disk: {:?} ({:?}): {}", r.name, first.outcome, first.failure_class, first.message);
        assert_eq!(first.outcome, AttemptOutcome::Failed, "{}: {first:?}", r.name);
        assert!(
            first.message.contains("the disk is full") && first.message.contains("bytes are free"),
            "{}: the failure says the disk is full: {:?}\n{}",
            r.name,
            first.message,
            read("first.out")
        );
        assert!(!first.message.contains("101"), "no worker panicked: {}", first.message);
    }
    assert_eq!(read("resume.code").trim(), "0", "resume after the space was freed:\n{}", read("resume.out"));
    for r in common::training(&store, "tiny") {
        assert_eq!(r.state, RunState::Succeeded, "{}: {}", r.name, r.message);
        assert_eq!(store.evals(&r.run_id).unwrap().len(), 5);
    }
}
