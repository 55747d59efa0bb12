//! The store conformance suite on SQLite, plus SQLite-specific behaviour.

use isoflop_core::ManualClock;
use isoflop_store::{SqliteStore, Store, StoreError, conformance};
use std::sync::Arc;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at(conformance::T0))
}

#[test]
fn conformance_in_memory() {
    let clock = clock();
    conformance::run_all(&SqliteStore::in_memory().unwrap().with_clock(clock.clone()), &clock);
}

#[test]
fn conformance_on_file_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/isoflop.db");
    let clock = clock();
    conformance::run_all(&SqliteStore::open(&path).unwrap().with_clock(clock.clone()), &clock);
    let again = SqliteStore::open(&path).unwrap();
    assert_eq!(again.sweeps().unwrap().len(), 9, "a, b, first, second, grow, keep, fence, big and rej (del was deleted)");
    assert_eq!(again.evals("r2").unwrap().len(), 2);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn concurrent_verbs_serialise() {
    let dir = tempfile::tempdir().unwrap();
    conformance::concurrent_verbs_serialise(&SqliteStore::open(dir.path().join("db")).unwrap());
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn upgrades_a_version_1_database_keeping_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(include_str!("../src/migrations/sqlite/0001_init.sql")).unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
    conn.execute(
        "INSERT INTO progress (run_id, attempt, step, total_steps, loss, lr, grad_norm, tokens_seen, tokens_per_second, \
         mfu, elapsed_seconds, at_ms) VALUES ('r', 1, 5, 10, 3.0, 0.1, 1.0, 50, 9.0, 0.0, 1.0, 7)",
        [],
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    let p = store.progress("r").unwrap();
    assert_eq!((p.len(), p[0].step, p[0].micro_batch), (1, 5, None), "old points have no micro-batch");
    let version: i64 = rusqlite::Connection::open(&path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 6);
}

/// A database written by release 0.1.0 (`tests/data/store-0.1.0`: four succeeded runs of a
/// tiny sweep, each scored on two held-out distributions by its training attempt) upgrades on
/// open: runs are re-keyed to ids without their eval settings, keep their history and their
/// files' directory, and each gets a succeeded `heldout` evaluation job holding its old results.
#[test]
fn upgrades_a_release_0_1_0_database_without_retraining() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/store-0.1.0/isoflop.db");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("isoflop.db");
    std::fs::copy(&fixture, &path).unwrap();
    let count = |sql: &str| -> i64 { rusqlite::Connection::open(&path).unwrap().query_row(sql, [], |r| r.get(0)).unwrap() };
    let before: Vec<i64> = ["attempts", "events", "progress", "checkpoints", "evals"]
        .iter()
        .map(|t| count(&format!("SELECT COUNT(*) FROM {t}")))
        .collect();
    let old_evals: Vec<(String, String, f64, f64)> = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut stmt =
            conn.prepare("SELECT run_id, distribution, loss, bits_per_byte FROM evals ORDER BY run_id, distribution").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().collect::<Result<_, _>>().unwrap()
    };
    assert_eq!((count("PRAGMA user_version"), old_evals.len()), (2, 8));

    let store = SqliteStore::open(&path).unwrap();
    let jobs = store.sweep_runs("fixture").unwrap();
    let (runs, evals): (Vec<_>, Vec<_>) = jobs.iter().partition(|r| r.is_training());
    assert_eq!((runs.len(), evals.len()), (4, 4));
    for r in &runs {
        let config: isoflop_core::RunConfig = serde_json::from_str(&r.config_json).unwrap();
        assert_eq!(config.run_id().0, r.run_id, "the stored config hashes to the new id");
        assert_ne!(r.artifacts_key, r.run_id, "re-keyed; files stay under the old id");
        assert_eq!(r.state, isoflop_core::RunState::Succeeded);
        assert!(r.progress.is_some(), "its progress moved with it");
        assert_eq!(store.attempt(&r.run_id, 1).unwrap().unwrap().outcome, isoflop_store::AttemptOutcome::Succeeded);
        assert!(store.latest_checkpoint(&r.run_id).unwrap().unwrap().path.contains(&r.artifacts_key));
        let got: Vec<(String, f64, f64)> =
            store.evals(&r.run_id).unwrap().into_iter().map(|e| (e.distribution, e.loss, e.bits_per_byte)).collect();
        let want: Vec<(String, f64, f64)> =
            old_evals.iter().filter(|e| e.0 == r.artifacts_key).map(|e| (e.1.clone(), e.2, e.3)).collect();
        assert_eq!(got, want, "the old results, now the evaluation job's");
        let job = evals.iter().find(|j| j.eval.as_ref().unwrap().parent == r.run_id).unwrap();
        assert_eq!((job.state, job.name.clone()), (isoflop_core::RunState::Succeeded, format!("{}/heldout", r.name)));
        let cfg: isoflop_core::EvalJobConfig = serde_json::from_str(&job.config_json).unwrap();
        assert_eq!((cfg.job_id().0, cfg.step), (job.run_id.clone(), job.eval.as_ref().unwrap().step));
        assert_eq!(job.attempts, 0, "nothing was run to get them");
    }
    let after: Vec<i64> = ["attempts", "events", "progress", "checkpoints", "evals"]
        .iter()
        .map(|t| count(&format!("SELECT COUNT(*) FROM {t}")))
        .collect();
    assert_eq!(after[0], before[0], "no attempt added");
    assert_eq!(after[1], before[1] + 4, "one event per migrated job");
    assert_eq!(after[2..], before[2..], "progress, checkpoints and old eval rows all kept");
    assert_eq!(count("SELECT COUNT(*) FROM runs WHERE run_id NOT IN (SELECT run_id FROM sweep_runs)"), 0);
    drop(store);
    // Opening again changes nothing.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.sweep_runs("fixture").unwrap().iter().map(|r| r.run_id.clone()).collect::<Vec<_>>(),
        jobs.iter().map(|r| r.run_id.clone()).collect::<Vec<_>>()
    );
}

/// Issue 12, defect 4: every store has its own identity, kept across reopening, and its runs'
/// artifacts live under it, so two stores over one artifacts directory share no file.
#[test]
fn each_store_has_its_own_id_and_artifacts_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let id_a = SqliteStore::open(&a).unwrap().store_id().unwrap();
    assert_eq!(SqliteStore::open(&a).unwrap().store_id().unwrap(), id_a, "kept on reopening");
    let store_b = SqliteStore::open(&b).unwrap();
    assert_ne!(store_b.store_id().unwrap(), id_a);
    let run = isoflop_store::NewRun {
        run_id: "r1".into(),
        name: "one".into(),
        corpus: "mix".into(),
        budget: 1e12,
        config_json: "{}".into(),
        eval: None,
    };
    let sweep = isoflop_store::NewSweep { name: "s".into(), spec_yaml: "s".into(), spec_path: String::new() };
    for (path, store) in [(&a, SqliteStore::open(&a).unwrap()), (&b, store_b)] {
        store.submit_sweep(&sweep, std::slice::from_ref(&run)).unwrap();
        let key = store.run("r1").unwrap().unwrap().artifacts_key;
        assert_eq!(key, format!("{}/r1", store.store_id().unwrap()), "{}", path.display());
    }
}
