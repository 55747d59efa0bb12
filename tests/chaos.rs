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
//! CI) and
//! `ISOFLOP_CHAOS_SEED` the random moments; bench/chaos/run.sh runs the long version.

mod common;
#[path = "common/chaos.rs"]
mod drill;

use drill::{Counts, Drill, Mode};

fn kills() -> usize {
    std::env::var("ISOFLOP_CHAOS_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

fn seed(salt: u64) -> u64 {
    let base = std::env::var("ISOFLOP_CHAOS_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(13);
    base ^ salt
}

fn drill(mode: Mode, salt: u64) {
    let dir = tempfile::tempdir().unwrap();
    // The watcher tells this drill's workers by their working directory: the real path.
    let path = dir.path().canonicalize().unwrap();
    // ISOFLOP_CHAOS_KEEP=1 keeps the drill's directory (stores, logs, checkpoints) to look at.
    let _dir = if std::env::var_os("ISOFLOP_CHAOS_KEEP").is_some() {
        eprintln!("drill directory kept: {}", path.display());
        let _ = dir.keep();
        None
    } else {
        Some(dir)
    };
    let kills = kills();
    let c = Drill::new(&path, mode, seed(salt)).run(kills);
    report(&c);
    assert!(c.kept(), "the promise broke:\n{}", c.details.join("\n"));
    assert_eq!(c.coordinator_kills, kills);
    assert!(c.kills_mid_sweep * 10 >= kills * 9, "the sweep ended too early for the drill: {c:?}");
    assert_eq!(c.set_aside, c.truncations, "every truncated checkpoint was found and set aside: {c:?}");
    // A restarted coordinator serves at once: it waits for no worker an earlier one left (a
    // stuck one held every restart up to its 30 s SIGKILL grace before).
    assert!(c.slowest_start_seconds < 10.0, "a restart of serve took {:.1} s to listen", c.slowest_start_seconds);
}

fn report(c: &Counts) {
    let text = format!("{}\n{}\n", Counts::HEADER, c.row());
    eprintln!("{text}");
    if let Ok(path) = std::env::var("ISOFLOP_CHAOS_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        if f.metadata().unwrap().len() == 0 {
            f.write_all(format!("{}\n", Counts::HEADER).as_bytes()).unwrap();
        }
        f.write_all(c.row().as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
    }
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
