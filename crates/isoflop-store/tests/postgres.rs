//! The store conformance suite on a real PostgreSQL server, plus PostgreSQL-specific
//! behaviour: migrations, a newer schema refused, concurrent writers serialised.

use isoflop_core::ManualClock;
use isoflop_store::{PgStore, Store, StoreError, conformance};
use std::sync::Arc;

#[test]
fn conformance_on_postgres() {
    let url = isoflop_pg_harness::fresh_database();
    let clock = Arc::new(ManualClock::at(conformance::T0));
    conformance::run_all(&PgStore::connect(&url).unwrap().with_clock(clock.clone()), &clock);
    // A second connection migrates nothing and sees everything.
    let again = PgStore::connect(&url).unwrap();
    assert_eq!(again.sweeps().unwrap().len(), 9, "a, b, first, second, grow, keep, fence, big and rej (del was deleted)");
    assert_eq!(again.evals("r2").unwrap().len(), 2);
}

#[test]
fn concurrent_verbs_serialise() {
    conformance::concurrent_verbs_serialise(&PgStore::connect(&isoflop_pg_harness::fresh_database()).unwrap());
}

#[test]
fn refuses_a_newer_schema() {
    let url = isoflop_pg_harness::fresh_database();
    drop(PgStore::connect(&url).unwrap());
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client.execute("UPDATE isoflop_schema SET version = 99", &[]).unwrap();
    let err = PgStore::connect(&url).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn a_bad_url_and_an_absent_server_are_clear_errors() {
    let err = PgStore::connect("postgres://u@host:notaport/db").unwrap_err();
    assert!(matches!(err, StoreError::PgUrl { .. }), "{err}");
    let err = PgStore::connect("postgresql://someone:secret@/nodb?host=/nonexistent&port=1").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::PgConnect { .. }), "{text}");
    assert!(text.contains("/nonexistent") && !text.contains("secret"), "names the server, not the password: {text}");
}

/// `copy` moves every table of a SQLite store (the conformance suite's history, and a store
/// of release 0.1.0 upgraded on open, whose `evals` rows only such stores hold) into an empty
/// PostgreSQL database and back, row for row; the copy keeps the source's identity and goes
/// on numbering events after the copied ones; a target that holds anything is refused.
#[test]
fn copy_moves_every_table_and_back() {
    use isoflop_store::StoreLocation;
    use isoflop_store::copy::{copy, dump, first_difference};
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("conformance.db");
    let clock = Arc::new(ManualClock::at(conformance::T0));
    conformance::run_all(&isoflop_store::SqliteStore::open(&sqlite).unwrap().with_clock(clock.clone()), &clock);
    let from = StoreLocation::Sqlite(sqlite);
    let to = StoreLocation::Postgres(isoflop_pg_harness::fresh_database());
    let counts = copy(&from, &to).unwrap();
    let empty: Vec<&str> = counts.iter().filter(|(_, n)| *n == 0).map(|(t, _)| *t).collect();
    assert_eq!(empty, ["evals"], "the suite fills every table but the 0.1.0 one: {counts:?}");
    assert_eq!(first_difference(&dump(&from).unwrap(), &dump(&to).unwrap()), None);
    let (a, b) = (isoflop_store::open(&from).unwrap(), isoflop_store::open(&to).unwrap());
    assert_eq!(a.store_id().unwrap(), b.store_id().unwrap(), "the copy keeps the source's identity");
    assert_eq!(a.sweeps().unwrap(), b.sweeps().unwrap(), "the same sweeps, newest first");
    for s in a.sweeps().unwrap() {
        assert_eq!(a.sweep_runs(&s.name).unwrap(), b.sweep_runs(&s.name).unwrap(), "sweep {}", s.name);
    }
    assert_eq!(a.events_since(0).unwrap(), b.events_since(0).unwrap());
    let last = b.events_since(0).unwrap().last().unwrap().id;
    let queued = b.runs_in_state(isoflop_core::RunState::Queued).unwrap();
    let ev = b.cancel_run(&queued[0].run_id).unwrap().unwrap().event;
    assert!(ev.id > last, "event ids continue after the copied ones: {} after {last}", ev.id);
    let err = copy(&from, &to).unwrap_err();
    assert!(matches!(err, StoreError::NotEmpty { .. }), "{err}");

    // A release 0.1.0 store: its `evals` rows too, and back into a new SQLite file.
    let old = dir.path().join("old.db");
    std::fs::copy(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/store-0.1.0/isoflop.db"), &old)
        .unwrap();
    let old = StoreLocation::Sqlite(old);
    let pg = StoreLocation::Postgres(isoflop_pg_harness::fresh_database());
    let counts = copy(&old, &pg).unwrap();
    assert_eq!(counts.iter().find(|(t, _)| *t == "evals").unwrap().1, 8);
    let back = StoreLocation::Sqlite(dir.path().join("back.db"));
    copy(&pg, &back).unwrap();
    assert_eq!(first_difference(&dump(&old).unwrap(), &dump(&back).unwrap()), None, "SQLite to PostgreSQL to SQLite");
}
