//! Chaos drills (issue 13, point 8), the short version CI runs: the drill sweep of
//! tests/common/chaos.rs (the next sweep submitted whenever one finishes before the drill's
//! kills are done) with its coordinator SIGKILLed at random moments, `isoflop run` on
//! SQLite and `isoflop serve` on SQLite and on PostgreSQL (a real server), workers SIGKILLed
//! and newest checkpoints truncated on the way. Each drill prints its row of the table and
//! asserts the promised zeros: no run lost, no evaluation duplicated, never two live workers
//! of one run, no stale write accepted, no attempt left active, no illegal state edge; and
//! that a restarted `isoflop serve` listens within 10 s (it waits for no orphaned worker).
//!
//! `ISOFLOP_CHAOS_KILLS=N` sets the coordinator kills of each drill (default 10: 30 in all in
//! CI, 40 with the Kubernetes drill of tests/k8s_e2e.rs) and `ISOFLOP_CHAOS_SEED` the random
//! moments; bench/chaos/run.sh runs the long version.

mod common;
#[path = "common/chaos.rs"]
mod drill;

use drill::{Drill, Mode, check, drill_dir, kills, seed};

fn drill(mode: Mode, salt: u64) {
    let (path, _dir) = drill_dir();
    let kills = kills();
    let c = Drill::new(&path, mode, seed(salt)).run(kills);
    check(&c, kills);
}

#[test]
fn chaos_run_sqlite() {
    drill(Mode::Run, 1);
}

#[test]
fn chaos_serve_sqlite() {
    drill(Mode::ServeSqlite, 2);
}

#[test]
fn chaos_serve_postgres() {
    let url = isoflop_pg_harness::fresh_database();
    drill(Mode::ServePostgres(url), 3);
}
