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
    assert_eq!(again.sweeps().unwrap().len(), 2);
    assert_eq!(again.evals("r2").unwrap().len(), 2);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
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
    assert_eq!(version, 2);
}
