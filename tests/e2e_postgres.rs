//! The PostgreSQL store end to end, on a real server (isoflop-pg-harness): `isoflop serve`
//! with `store: {postgres: {url_env: ...}}` runs a sweep to the end, the local commands read it
//! with `--store postgres://...`, a second coordinator on the database is refused, and
//! `isoflop store copy` moves a sweep `isoflop run` trained on SQLite into PostgreSQL, every
//! table compared.

mod common;

use common::{TINY_SWEEP, bin, free_port, isoflop, show, spawn_serve, stdout, write_spec};
use isoflop_store::StoreLocation;
use isoflop_store::copy::{dump, first_difference};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn serve_on_postgres_runs_a_sweep_and_the_local_commands_read_it() {
    let url = isoflop_pg_harness::fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), TINY_SWEEP);
    let port = free_port();
    let coordinator = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("serve.yaml");
    let artifacts = dir.path().join("shared/runs");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstore: {{postgres: {{url_env: ISOFLOP_TEST_DATABASE}}}}\nartifacts: {}\n\
             executor: {{kind: local, max_parallel: 2}}\n",
            artifacts.display()
        ),
    )
    .unwrap();
    // Without the variable, the config is refused (exit 2), naming the key.
    let out = isoflop(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        show(&out).contains("store.postgres.url_env: environment variable ISOFLOP_TEST_DATABASE is not set"),
        "{}",
        show(&out)
    );

    let log = dir.path().join("serve.log");
    let mut daemon = spawn_serve(&config, &log, &[("ISOFLOP_TEST_DATABASE", &url)]);
    // Listening is said once the store is open and migrated (the port is bound before).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("isoflop serve: listening") {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            panic!("isoflop serve exited with {s}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "isoflop serve did not listen in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let served = std::fs::read_to_string(&log).unwrap();
    assert!(served.contains("store postgresql://isoflop@/"), "the store, named: {served}");

    // A second coordinator on the same database is refused (exit 2), naming the first.
    let other = dir.path().join("other.yaml");
    std::fs::write(&other, std::fs::read_to_string(&config).unwrap().replace(&port.to_string(), "0")).unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config", other.to_str().unwrap()])
        .env("ISOFLOP_TEST_DATABASE", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains("is in use by `pid ") && show(&out).contains("isoflop serve"), "{}", show(&out));

    let t0 = Instant::now();
    let out = isoflop(&["submit", spec.to_str().unwrap(), "--coordinator", &coordinator]);
    assert!(out.status.success(), "{}", show(&out));
    let out = isoflop(&["watch", "tiny", "--coordinator", &coordinator]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains("8/8 done"), "{}", show(&out));
    eprintln!("tiny sweep on PostgreSQL: submit to finished in {:.1} s", t0.elapsed().as_secs_f64());
    // The settled sweep's report lands in the artifacts directory (no database file to sit beside).
    let report = artifacts.join("reports/tiny/report.html");
    while !report.is_file() {
        assert!(Instant::now() < deadline + Duration::from_secs(300), "no report:\n{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(200));
    }

    // The local commands read the database directly, as they read a SQLite file.
    let out = isoflop(&["status", "tiny", "--store", &url]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains("[tiny] 8/8 done"), "{}", show(&out));
    assert_eq!(stdout(&out).matches(" succeeded ").count(), 12, "{}", show(&out));
    let out = isoflop(&["status", "tiny", "--store", "postgresql://isoflop@/nonexistent-db?host=/nonexistent"]);
    assert_eq!(out.status.code(), Some(1), "an unreachable database is a failure, not bad input: {}", show(&out));
    let out = isoflop(&["status", "--store", "postgres://u@h:notaport/db"]);
    assert_eq!(out.status.code(), Some(2), "a URL that does not parse is bad input: {}", show(&out));

    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "serve stops cleanly on SIGTERM: {status}\n{}", std::fs::read_to_string(&log).unwrap());
}

#[test]
fn store_copy_moves_a_trained_sweep_into_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), TINY_SWEEP);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let db = dir.path().join("state/isoflop.db");
    let url = isoflop_pg_harness::fresh_database();
    let from = format!("sqlite:{}", db.display());
    let to = format!("postgres:{url}");

    let t0 = Instant::now();
    let out = isoflop(&["store", "copy", "--from", &from, "--to", &to]);
    assert!(out.status.success(), "{}", show(&out));
    eprintln!("store copy of the tiny sweep: {:.2} s: {}", t0.elapsed().as_secs_f64(), stdout(&out).trim());
    assert!(stdout(&out).contains("every table compared equal"), "{}", show(&out));

    // Every table, row by row, independently of the command's own check.
    let (a, b) = (dump(&StoreLocation::Sqlite(db.clone())).unwrap(), dump(&StoreLocation::Postgres(url.clone())).unwrap());
    assert_eq!(first_difference(&a, &b), None);
    for (table, rows) in &a {
        // `evals` is release 0.1.0's; `eval_items` a multiple-choice task's (the store's tests fill both).
        if !["evals", "eval_items"].contains(table) {
            assert!(!rows.is_empty(), "the trained sweep fills table {table}");
        }
    }
    // The copy is a working store: the same status, and its event ids continue.
    let local = isoflop(&["status", "tiny", "--store", db.to_str().unwrap()]);
    let copied = isoflop(&["status", "tiny", "--store", &url]);
    assert!(copied.status.success(), "{}", show(&copied));
    let strip = |o: &std::process::Output| stdout(o).lines().filter(|l| !l.contains("ago")).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(&local), strip(&copied), "status reads the same from both");
    let out = isoflop(&["resume", "tiny", "--no-run", "--store", &url]);
    assert!(out.status.success(), "{}", show(&out));

    // A second copy into the same database is refused (exit 2) and changes nothing.
    let out = isoflop(&["store", "copy", "--from", &from, "--to", &to]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains("not empty"), "{}", show(&out));
    assert_eq!(first_difference(&b, &dump(&StoreLocation::Postgres(url)).unwrap()), None, "nothing changed");
    let out = isoflop(&["store", "copy", "--from", "sqlite:/nonexistent/isoflop.db", "--to", &to]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}
