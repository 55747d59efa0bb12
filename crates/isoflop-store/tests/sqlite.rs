//! The store conformance suite on SQLite, plus SQLite-specific behaviour.

use isoflop_store::{SqliteStore, Store, StoreError, conformance};

#[test]
fn conformance_in_memory() {
    conformance::run_all(&SqliteStore::in_memory().unwrap());
}

#[test]
fn conformance_on_file_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/isoflop.db");
    conformance::run_all(&SqliteStore::open(&path).unwrap());
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
