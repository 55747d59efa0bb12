//! Evaluation jobs end to end with the real binary and real training: adding a task to a
//! finished sweep trains nothing and runs only the missing evaluation jobs; checkpoints at
//! fractions of training are kept and scored; a store written by release 0.1.0 upgrades
//! without retraining or re-evaluating.

mod common;

use common::{TINY_SWEEP, isoflop, show, write_spec};
use isoflop_core::RunState;
use isoflop_store::{RunRow, SqliteStore, Store};
use std::collections::HashMap;
use std::path::Path;

/// Training attempts, and evaluation attempts by job id.
fn attempts(store: &SqliteStore, sweep: &str) -> (u64, HashMap<String, u64>) {
    let jobs = store.sweep_runs(sweep).unwrap();
    let train = jobs.iter().filter(|r| r.is_training()).map(|r| r.attempts).sum();
    (train, jobs.iter().filter(|r| !r.is_training()).map(|r| (r.run_id.clone(), r.attempts)).collect())
}

fn evals(store: &SqliteStore, sweep: &str) -> Vec<RunRow> {
    store.sweep_runs(sweep).unwrap().into_iter().filter(|r| !r.is_training()).collect()
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn adding_a_task_to_a_finished_sweep_trains_nothing_and_runs_only_the_missing_evaluations() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state/isoflop.db");
    // The held-out task at the end and half way through training.
    let first = TINY_SWEEP.replace("executor:", "eval: {at_fractions: [0.5]}\nexecutor:");
    let spec = write_spec(dir.path(), &first);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let store = SqliteStore::open(&db).unwrap();
    let (train, before) = attempts(&store, "tiny");
    assert_eq!((train, before.len()), (4, 8), "4 runs, each evaluated at 2 checkpoints");
    assert!(before.values().all(|&a| a == 1));
    for r in store.sweep_runs("tiny").unwrap().iter().filter(|r| r.is_training()) {
        assert_eq!(r.state, RunState::Succeeded);
        let steps = store.eval_steps(&r.run_id).unwrap();
        assert_eq!(steps.len(), 2, "{}", r.name);
        // Both checkpoints evaluation jobs read are on disk (checkpoint_every 20 would have
        // pruned the half-way one otherwise).
        for c in store.checkpoints(&r.run_id).unwrap().iter().filter(|c| steps.contains(&c.step)) {
            assert!(Path::new(&c.path).join("state.safetensors").is_file(), "{}: {}", r.name, c.path);
        }
        let evals = store.evals(&r.run_id).unwrap();
        assert_eq!(evals.len(), 5, "the final checkpoint's held-out losses: {evals:?}");
    }
    let half: Vec<RunRow> = evals(&store, "tiny").into_iter().filter(|j| j.name.contains('@')).collect();
    assert_eq!(half.len(), 4);
    for j in &half {
        assert_eq!(j.state, RunState::Succeeded, "{}: {}", j.name, j.message);
        let final_job = evals(&store, "tiny").into_iter().find(|f| f.name == j.name.split('@').next().unwrap()).unwrap();
        let bpb = |id: &str| -> f64 {
            let m = store.eval_results(id).unwrap();
            m.iter().filter(|m| m.metric == "bpb").map(|m| m.value).sum::<f64>()
        };
        assert!(bpb(&final_job.run_id) < bpb(&j.run_id), "{}: training goes on improving", j.name);
    }
    let kept = dir_size(&dir.path().join("state/runs"));
    println!("checkpoints and logs kept for evaluation: {kept} bytes");

    // Add a task: the Bible scored after the first 30 tokens of each document.
    let second = first.replace(
        "eval: {at_fractions: [0.5]}",
        "eval:\n  at_fractions: [0.5]\n  tasks: [{name: bible-late, text: {shards: [bible], skip_tokens: 30}}]",
    );
    let spec = write_spec(dir.path(), &second);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("4 runs (4 already succeeded") && stdout.contains("16 evaluation jobs (8 already succeeded"),
        "{stdout}"
    );
    let (train, after) = attempts(&store, "tiny");
    assert_eq!(train, 4, "no training attempt");
    assert_eq!(after.len(), 16, "one new job per run and evaluated checkpoint");
    for (id, n) in &after {
        assert_eq!(*n, 1, "{id}: every job ran once, the old ones not again");
    }
    for j in evals(&store, "tiny").iter().filter(|j| j.name.contains("bible-late")) {
        assert_eq!(j.state, RunState::Succeeded, "{}: {}", j.name, j.message);
        let m = store.eval_results(&j.run_id).unwrap();
        let tokens = m.iter().find(|m| m.metric == "tokens").unwrap().value;
        let heldout = evals(&store, "tiny").into_iter().find(|h| h.name == j.name.replace("bible-late", "heldout")).unwrap();
        let all = store.eval_results(&heldout.run_id).unwrap();
        let all_tokens = all.iter().find(|m| m.subset == "bible" && m.metric == "tokens").unwrap().value;
        assert!(tokens < all_tokens, "{}: the skipped tokens are not scored ({tokens} vs {all_tokens})", j.name);
    }
    let out = isoflop(&["status", "tiny", "--format", "json", "--store", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = v["eval_jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 16);
    assert!(jobs.iter().all(|j| j["state"] == "succeeded" && j["results"].as_object().is_some_and(|r| !r.is_empty())));
    assert_eq!(v["runs"].as_array().unwrap().len(), 4);

    // Remove the task again: nothing runs, nothing stored is deleted.
    let spec = write_spec(dir.path(), &first);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(attempts(&store, "tiny"), (4, after), "no attempt at all");
    assert!(evals(&store, "tiny").iter().all(|j| !store.eval_results(&j.run_id).unwrap().is_empty()));

    // A spec that changes the training runs is still refused under the same name.
    let spec = write_spec(dir.path(), &first.replace("[1.5e9, 3.0e9]", "[1.5e9]"));
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

/// The fixture `tests/data/store-0.1.0` (written by `isoflop run` of release 0.1.0, whose
/// runs were scored by their training attempts) upgrades on open: running its spec again
/// trains nothing and evaluates nothing, and status, logs and the final table read as before.
#[test]
fn a_store_of_release_0_1_0_upgrades_without_retraining_or_reevaluating() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/store-0.1.0");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    let db = dir.path().join("isoflop.db");
    let old_evals: Vec<(String, f64)> = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn.prepare("SELECT distribution, loss FROM evals ORDER BY loss").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
    };
    let out = isoflop(&["run", dir.path().join("spec.yaml").to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("4 runs (4 already succeeded, continuing)"), "{stdout}");
    assert!(stdout.contains("4 evaluation jobs (4 already succeeded"), "{stdout}");
    let store = SqliteStore::open(&db).unwrap();
    let (train, evals) = attempts(&store, "fixture");
    assert_eq!(train, 4, "the 4 attempts of 0.1.0, none more");
    assert!(evals.len() == 4 && evals.values().all(|&a| a == 0), "results carried over, nothing re-run: {evals:?}");
    let mut now: Vec<(String, f64)> = store
        .sweep_runs("fixture")
        .unwrap()
        .iter()
        .filter(|r| r.is_training())
        .flat_map(|r| store.evals(&r.run_id).unwrap())
        .map(|e| (e.distribution, e.loss))
        .collect();
    now.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(now, old_evals);
    // The logs of the old attempts are found where 0.1.0 wrote them.
    let run = store.sweep_runs("fixture").unwrap().into_iter().find(|r| r.is_training()).unwrap();
    let out = isoflop(&["logs", &run.run_id, "--store", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("worker: eval early"), "{}", show(&out));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Multiple-choice tasks on a finished sweep: MMLU from the pinned wheel, Anthropic's evals
/// from ../shared, and a task a user defines as YAML and JSONL. No training attempt; one job
/// per run and task; per-item rows stored for every scored question; the planner refuses a
/// choice longer than the model's window before anything runs.
#[test]
fn multiple_choice_tasks_score_every_item_and_train_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state/isoflop.db");
    let spec = write_spec(dir.path(), TINY_SWEEP);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(attempts(&store, "tiny").0, 4);

    // A user's task: arithmetic questions, gold by the text of the answer.
    std::fs::write(
        dir.path().join("sums.jsonl"),
        (0..12)
            .map(|i| {
                let kind = if i % 2 == 0 { "even" } else { "odd" };
                format!(
                    "{{\"q\": \"{i}+1=\", \"opts\": [\"{}\", \"{}\"], \"answer\": \"{}\", \"kind\": \"{kind}\"}}\n",
                    i + 1,
                    i + 2,
                    i + 1
                )
            })
            .collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sums.yaml"),
        "items: sums.jsonl\ncontext: \"{q}\"\nchoices: {field: opts}\ngold: \"{answer}\"\nsubset: \"{kind}\"\nshots: 1\n\
         groups: {numbers: [even, odd]}\n",
    )
    .unwrap();
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/anthropic-evals");
    assert!(shared.is_dir(), "{} is missing: the test reads ../shared", shared.display());
    let tasks = format!(
        "eval:\n  tasks:\n    - {{name: mmlu, mmlu: {{shots: 1, per_subset: 1}}}}\n    \
         - {{name: risk, anthropic: {{path: {}, sets: [survival-instinct, myopic-reward], per_subset: 3}}}}\n    \
         - {{name: sums, multiple_choice: {{file: sums.yaml}}}}\n    \
         - {{name: english, english: {{nltk: {}, skip_tokens: 30}}}}\nexecutor:",
        shared.display(),
        shared.parent().unwrap().join("nltk").display()
    );
    let with_tasks = TINY_SWEEP.replace("executor:", &tasks);

    // First a definition whose choice cannot fit seq_len 32: refused, nothing stored.
    std::fs::write(dir.path().join("long.jsonl"), format!("{{\"q\": \"x\", \"a\": \"{}\", \"b\": \"y\"}}\n", "z".repeat(40)))
        .unwrap();
    std::fs::write(dir.path().join("long.yaml"), "items: long.jsonl\ncontext: \"{q}\"\nchoices: [\"{a}\", \"{b}\"]\ngold: 0\n")
        .unwrap();
    let bad = with_tasks.replace("file: sums.yaml", "file: long.yaml");
    let spec = write_spec(dir.path(), &bad);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("eval.tasks[2].multiple_choice") && err.contains("item long/1: choice 0 is 41 tokens"), "{err}");
    assert_eq!(evals(&store, "tiny").len(), 4, "the refused spec added no job");

    let spec = write_spec(dir.path(), &with_tasks);
    let started = std::time::Instant::now();
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    println!("3 multiple-choice tasks and 2 varieties of English on 4 runs: {:.1} s", started.elapsed().as_secs_f64());
    let (train, jobs) = attempts(&store, "tiny");
    assert_eq!((train, jobs.len()), (4, 4 * 5), "no training; 4 new jobs per run");
    assert!(jobs.values().all(|&a| a == 1), "{jobs:?}");
    let expect = [("mmlu", 57, 57 + 4), ("risk", 6, 2), ("sums", 10, 2 + 1)];
    for j in evals(&store, "tiny") {
        assert_eq!(j.state, RunState::Succeeded, "{}: {}", j.name, j.message);
        if j.name.ends_with("/english") {
            let m = store.eval_results(&j.run_id).unwrap();
            let bpb = |s: &str| m.iter().find(|x| x.subset == s && x.metric == "bpb").map(|x| x.value);
            assert!(bpb("american").is_some_and(|b| b > 0.5) && bpb("australian").is_some_and(|b| b > 0.5), "{m:?}");
            let tokens = m.iter().find(|x| x.subset == "american" && x.metric == "tokens").unwrap().value;
            assert!(tokens > 1000.0 && tokens < 2048.0, "2048 tokens less the first 30 of each document: {tokens}");
        }
        let Some(&(task, items, subsets)) = expect.iter().find(|(t, _, _)| j.name.ends_with(&format!("/{t}"))) else {
            continue;
        };
        let rows = store.eval_items(&j.run_id).unwrap();
        assert_eq!(rows.len(), items, "{}: one row per scored item", j.name);
        let m = store.eval_results(&j.run_id).unwrap();
        let get = |s: &str, k: &str| m.iter().find(|x| x.subset == s && x.metric == k).map(|x| x.value);
        assert_eq!(get("all", "items"), Some(items as f64), "{}", j.name);
        let named: std::collections::BTreeSet<&str> = m.iter().map(|x| x.subset.as_str()).collect();
        assert_eq!(named.len(), subsets + 1, "{}: subsets, groups and all: {named:?}", j.name);
        // The stored items give the stored means again.
        let acc = rows.iter().map(|r| r.metrics().acc).sum::<f64>() / rows.len() as f64;
        assert!((get("all", "acc").unwrap() - acc).abs() < 1e-12, "{}", j.name);
        let bpb = get("all", "bpb").unwrap();
        assert!(bpb.is_finite() && bpb > 0.0, "{}: {bpb}", j.name);
        if task == "mmlu" {
            for g in ["stem", "humanities", "social_sciences", "other"] {
                assert!(get(g, "acc").is_some(), "{}: group {g}", j.name);
            }
            assert_eq!(get("stem", "items"), Some(19.0));
        }
        if task == "sums" {
            assert_eq!((get("even", "items"), get("odd", "items"), get("numbers", "items")), (Some(5.0), Some(5.0), Some(10.0)));
        }
    }
    let out = isoflop(&["status", "tiny", "--store", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("acc_norm") && table.contains("(57 items)"), "{table}");

    // The fitter reads one task's results: its subsets and groups are the distributions.
    let fit = |args: &[&str]| {
        let mut all = vec!["fit", "tiny", "--store", db.to_str().unwrap(), "--no-parametric", "--bootstrap", "10"];
        all.extend_from_slice(args);
        isoflop(&all)
    };
    let out = fit(&["--task", "english", "--baseline", "american", "--format", "json"]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"australian\"") && text.contains("\"american\""), "{text}");
    assert!(text.contains("\"questions_resampled\": false"), "text has no questions: {text}");
    let out = fit(&["--task", "sums", "--metric", "error", "--baseline", "even", "--format", "json"]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"questions_resampled\": true") && text.contains("\"numbers\""), "{text}");
    let out = fit(&["--task", "mmlu"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("resampling whole runs and the task's questions"), "{}", show(&out));
    let out = fit(&["--task", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no succeeded evaluation of task `nope` (its tasks: english, heldout, mmlu, risk, sums)"),
        "{}",
        show(&out)
    );
    let out = fit(&["--task", "sums", "--metric", "acc"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected one of bpb, error, error_norm, prob_error, nll"),
        "{}",
        show(&out)
    );

    // Run again: nothing to do.
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(attempts(&store, "tiny"), (4, jobs));
}

/// The report `isoflop run` writes has a section per task family: the held-out text, a
/// variety-of-English text task (each distribution at its own minimum, against American
/// English) and MMLU (its four groups read at the held-out compute-optimal sizes, against
/// the aggregate), each with its relative laws and verdicts; `isoflop report` writes the same
/// files with the same defaults, and `isoflop fit --task` gives the same intervals.
#[test]
fn the_run_report_has_a_section_per_task_with_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let nltk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/nltk");
    assert!(nltk.is_dir(), "{} is missing: the test reads ../shared", nltk.display());
    // 3 budgets x 4 widths whose held-out minima are bracketed (about 30 s on 2 cores).
    let spec = TINY_SWEEP
        .replace("name: tiny", "name: small")
        .replace("budgets: [1.5e9, 3.0e9]", "budgets: [8.0e9, 1.6e10, 3.2e10]")
        .replace("hidden: [16, 32]", "hidden: [8, 16, 32, 64]")
        .replace("heads: {head_size: 16}", "heads: {head_size: 8}")
        .replace("checkpoint_every: 20", "checkpoint_every: 1000")
        .replace(
            "executor:",
            &format!(
                "eval:\n  tasks:\n    - {{name: mmlu, mmlu: {{shots: 0, per_subset: 1}}}}\n    \
                 - {{name: english, english: {{nltk: {}, skip_tokens: 30}}}}\nexecutor:",
                nltk.display()
            ),
        );
    let spec = write_spec(dir.path(), &spec);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3 sections") && stdout.contains("relative laws: heldout: "), "{stdout}");
    assert!(stdout.contains("; english: ") && stdout.contains("; mmlu: "), "{stdout}");

    let reports = dir.path().join("state/reports/small");
    let html = std::fs::read_to_string(reports.join("report.html")).unwrap();
    for s in ["Verdicts", "Held-out text", "Task english", "Task mmlu", "mmlu/relative-gaps.svg", "english/distribution-loss.svg"]
    {
        assert!(html.contains(s), "report.html lacks {s}");
    }
    let json = |p: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let names = |v: &serde_json::Value, key: &str, field: &str| -> Vec<String> {
        v[key].as_array().unwrap().iter().map(|d| d[field].as_str().unwrap().to_string()).collect()
    };
    let mmlu = json(&reports.join("mmlu/report.json"));
    assert_eq!(mmlu["frontier"], "heldout");
    assert_eq!(mmlu["questions_resampled"], true);
    assert_eq!(names(&mmlu, "distributions", "name"), ["all", "heldout", "humanities", "other", "social_sciences", "stem"]);
    assert_eq!(names(&mmlu, "relative", "target"), ["humanities", "other", "social_sciences", "stem"]);
    // Every budget where the held-out minimum is bracketed is read there.
    let heldout = mmlu["distributions"].as_array().unwrap().iter().find(|d| d["name"] == "heldout").unwrap();
    let bracketed: Vec<serde_json::Value> = heldout["isoflop"]["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["bracketed"] == true)
        .map(|b| b["budget"].clone())
        .collect();
    assert!(bracketed.len() >= 2, "{heldout}");
    for r in mmlu["relative"].as_array().unwrap() {
        assert_eq!(r["baseline"], "all");
        assert!(r["delta_beta_ci"].is_array() && r["verdict"].is_string(), "{r}");
        assert_eq!(r["budgets"].as_array().unwrap(), &bracketed, "{r}");
    }
    let english = json(&reports.join("english/report.json"));
    assert!(english.get("frontier").is_none(), "text at its own minima");
    assert_eq!(names(&english, "relative", "target"), ["australian"]);
    assert_eq!(english["relative"][0]["baseline"], "american");
    assert!(names(&json(&reports.join("report.json")), "relative", "target").contains(&"bible".to_string()));

    // `isoflop report` writes the same report: one set of defaults.
    let db = dir.path().join("state/isoflop.db");
    let again = dir.path().join("again");
    let out = isoflop(&["report", "small", "--store", db.to_str().unwrap(), "--out", again.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    for f in ["report.json", "mmlu/report.json", "english/report.json"] {
        assert_eq!(std::fs::read(reports.join(f)).unwrap(), std::fs::read(again.join(f)).unwrap(), "{f} differs");
    }
    // `isoflop fit --task mmlu` fits every subject too, with the same intervals for the groups.
    let out = isoflop(&["fit", "small", "--store", db.to_str().unwrap(), "--task", "mmlu", "--format", "json"]);
    assert!(out.status.success(), "{}", show(&out));
    let fit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fit["distributions"].as_array().unwrap().len(), 57 + 4 + 1 + 1);
    let stem = |v: &serde_json::Value| v["relative"].as_array().unwrap().iter().find(|r| r["target"] == "stem").unwrap().clone();
    assert_eq!(stem(&fit)["delta_beta_ci"], stem(&mmlu)["delta_beta_ci"]);
    let out =
        isoflop(&["fit", "small", "--store", db.to_str().unwrap(), "--task", "mmlu", "--frontier", "own", "--format", "json"]);
    assert!(out.status.success(), "{}", show(&out));
    let own: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(own.get("frontier").is_none() && !names(&own, "distributions", "name").contains(&"heldout".to_string()));
}
