//! The coordinator as a service, end to end with real processes: `isoflop serve --config` with
//! a local executor, and the client commands talking to it over the control API.

mod common;

use common::{Daemon, TINY_SWEEP, bin, free_port, isoflop, show, spawn_serve, stdout, write_spec};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn wait_listening(port: u16, daemon: &mut Daemon, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            panic!("isoflop serve exited with {s}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "isoflop serve did not listen in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_runs_submitted_sweeps_and_answers_the_client_commands() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), TINY_SWEEP);
    let spec = spec.to_str().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstore: {{sqlite: daemon/isoflop.db}}\nartifacts: daemon/runs\n\
             admin_token_file: admin-token\nexecutor: {{kind: local, max_parallel: 2}}\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut daemon = spawn_serve(&config, &log, &[]);
    wait_listening(port, &mut daemon, &log);
    let tok = token.to_str().unwrap();
    let with = |args: &[&str]| {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--coordinator", &url, "--token-file", tok]);
        isoflop(&a)
    };

    // Without the admin token the daemon refuses (bad input: exit 2).
    let out = isoflop(&["submit", spec, "--coordinator", &url]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin bearer token"), "{}", show(&out));

    // Submit, then watch to the end.
    let t0 = Instant::now();
    let out = with(&["submit", spec]);
    assert!(out.status.success(), "{}", show(&out));
    let s = stdout(&out);
    assert!(s.contains("submitted sweep tiny") && s.contains("4 runs"), "{s}");
    assert!(s.contains("the spec's `executor` and `store` sections are not used"), "{s}");
    let out = with(&["watch", "tiny"]);
    let finished = t0.elapsed();
    assert!(out.status.success(), "{}", show(&out));
    let s = stdout(&out);
    assert!(s.contains("-> succeeded") && s.contains("8/8 done"), "{s}");
    eprintln!("tiny sweep: submit to finished (watch returned) in {:.1} s", finished.as_secs_f64());
    // The daemon writes the settled sweep's report beside its store (issue 12, feature 13).
    let report = dir.path().join("daemon/reports/tiny/report.html");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !report.is_file() {
        assert!(Instant::now() < deadline, "no report from the daemon:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(200));
    }

    // Status over the control API: the same table as local status.
    let out = with(&["status", "tiny"]);
    assert!(out.status.success(), "{}", show(&out));
    let s = stdout(&out);
    assert!(s.contains("[tiny] 8/8 done") && s.contains("* = lowest mean loss"), "{s}");
    assert_eq!(s.matches(" succeeded ").count(), 12, "every run and evaluation job succeeded, in the three tables:\n{s}");
    // The daemon's store and artifacts hold it, not the spec's `store` section.
    assert!(dir.path().join("daemon/isoflop.db").is_file());
    assert!(!dir.path().join("state/isoflop.db").exists());
    let out = with(&["status", "tiny", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 4);
    assert!(v["runs"][0]["evals"]["python"]["loss"].as_f64().unwrap() > 0.0);
    let run_id = v["runs"][0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(v["eval_jobs"].as_array().unwrap().len(), 4, "one held-out evaluation job per run");

    // HOST:PORT without a scheme means http (it was a bare `transport error`); an empty
    // ISOFLOP_TOKEN_FILE is no file (it was a parse error); a coordinator that cannot be
    // reached exits 3, not 1 (which says a run failed).
    let bare = format!("127.0.0.1:{port}");
    let out = isoflop(&["status", "tiny", "--coordinator", &bare, "--token-file", tok]);
    assert!(out.status.success(), "{}", show(&out));
    let out =
        Command::new(bin()).args(["status", "tiny", "--coordinator", &bare]).env("ISOFLOP_TOKEN_FILE", "").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no token, refused as bad input: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin bearer token"), "{}", show(&out));
    let closed = format!("127.0.0.1:{}", free_port());
    let out = isoflop(&["status", "tiny", "--coordinator", &closed]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot reach the coordinator at http://{closed}")) && err.contains("refused"), "{err}");

    // Logs, read by the coordinator from its artifacts directory.
    let out = with(&["logs", &run_id[..8]]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains("checkpoint at step") && stdout(&out).contains("daemon/runs"), "{}", show(&out));
    let job = v["eval_jobs"].as_array().unwrap().iter().find(|j| j["run_id"] == run_id.as_str()).unwrap();
    let out = with(&["logs", job["job_id"].as_str().unwrap()]);
    assert!(stdout(&out).contains("worker: eval python bpb"), "{}", show(&out));

    // Fit and report through the coordinator (issue 12, feature 13): the tables come from its
    // store, the fit is the one a local `fit` of that store gives.
    let out = with(&["fit", "tiny", "--format", "json"]);
    assert!(out.status.success(), "{}", show(&out));
    let db = dir.path().join("daemon/isoflop.db");
    let local = isoflop(&["fit", "tiny", "--format", "json", "--store", db.to_str().unwrap()]);
    assert!(local.status.success(), "{}", show(&local));
    let (remote_fit, local_fit): (serde_json::Value, serde_json::Value) =
        (serde_json::from_slice(&out.stdout).unwrap(), serde_json::from_slice(&local.stdout).unwrap());
    assert_eq!(remote_fit, local_fit, "the same fit through the coordinator");
    let reports = dir.path().join("remote-report");
    let out = with(&["report", "tiny", "--out", reports.to_str().unwrap()]);
    assert!(out.status.success() && reports.join("report.html").is_file(), "{}", show(&out));
    let out = with(&["fit", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));

    // Sweeps and a run's curves through the coordinator (issue 12, features 9 and 12).
    let out = with(&["sweeps"]);
    assert!(out.status.success() && stdout(&out).contains("tiny") && stdout(&out).contains("(100%)"), "{}", show(&out));
    let out = with(&["curves", &run_id[..8]]);
    assert!(out.status.success() && stdout(&out).starts_with("attempt,step"), "{}", show(&out));

    // A second sweep with runs of its own: cancel it, resume it, watch it finish.
    let other = write_spec(dir.path(), &TINY_SWEEP.replace("name: tiny", "name: other").replace("lr_max: 0.01", "lr_max: 0.02"));
    let out = with(&["submit", other.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let out = with(&["cancel", "other"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = with(&["status", "other"]);
    assert!(stdout(&out).contains("8 cancelled") || stdout(&out).contains("done, 0 running, 0 queued"), "{}", show(&out));
    let out = with(&["resume", "other"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains("requeued"), "{}", show(&out));
    let out = with(&["watch", "other"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains("8/8 done"), "{}", show(&out));

    // Unknown sweeps are bad input.
    let out = with(&["status", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));

    // SIGTERM: a clean stop.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.0.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = daemon.0.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}\n{text}");
    assert!(text.contains("listening on 127.0.0.1") && text.contains("stopped"), "{text}");
}

#[test]
fn bad_serve_configs_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = "listen: 127.0.0.1:7700\nstore: {sqlite: db/isoflop.db}\nexecutor: {kind: local}\n";
    let cases = [
        (format!("{good}bogus: 1\n"), "unknown field `bogus`"),
        (good.replace("127.0.0.1:7700", "nowhere"), "listen: `nowhere`"),
        (good.replace("{kind: local}", "{kind: local, max_parallel: 0}"), "executor.max_parallel"),
        (good.replace("{kind: local}", "{kind: local, colour: red}"), "unknown field `colour`"),
        (format!("{good}admin_token_file: missing-token\n"), "admin_token_file: cannot read"),
        (format!("{good}worker_url: grpc://x\n"), "worker_url"),
        (good.replace("{kind: local}", "{kind: external, spool: spool}"), "executor.spool: `spool`: expected an absolute path"),
        (good.replace("{kind: local}", "{kind: external}"), "missing field `spool`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let out = isoflop(&["serve", "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("bad{i}.yaml")) && err.contains(want), "want `{want}`:\n{err}");
    }
    // Client commands without a coordinator to talk to.
    let out = isoflop(&["watch", "tiny"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

/// Issue 12, defect 8: `serve` binds its port before it touches its store (a taken port left
/// a new store and lock file behind), and a store in use names the process holding it.
#[test]
fn a_taken_port_creates_no_store_and_a_held_store_names_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = dir.path().join("serve.yaml");
    std::fs::write(&config, format!("listen: 127.0.0.1:{port}\nstore: {{sqlite: db/isoflop.db}}\nexecutor: {{kind: local}}\n"))
        .unwrap();
    let out = isoflop(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot bind"), "{}", show(&out));
    assert!(!dir.path().join("db").exists(), "nothing created for a daemon that could not listen");
    drop(taken);

    let port = free_port();
    std::fs::write(&config, format!("listen: 127.0.0.1:{port}\nstore: {{sqlite: db/isoflop.db}}\nexecutor: {{kind: local}}\n"))
        .unwrap();
    let log = dir.path().join("serve.log");
    let mut daemon = spawn_serve(&config, &log, &[]);
    wait_listening(port, &mut daemon, &log);
    let db = dir.path().join("db/isoflop.db");
    let spec = write_spec(dir.path(), &TINY_SWEEP.replace("state/isoflop.db", db.to_str().unwrap()));
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {}: isoflop serve", daemon.0.id())) && err.contains("--coordinator"), "{err}");
}

/// The external executor (a spool directory for a launcher isoflop does not drive): a launcher
/// played by this test takes each launch file, runs `isoflop worker` with the file's
/// environment and removes the file when the worker exits; the sweep completes through it.
#[test]
fn an_external_launcher_runs_a_sweep_from_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let spec = write_spec(&root, TINY_SWEEP);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let spool = root.join("spool");
    let config = root.join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstore: {{sqlite: daemon/isoflop.db}}\n\
             executor: {{kind: external, spool: {}, max_parallel: 2}}\n",
            spool.display()
        ),
    )
    .unwrap();
    let log = root.join("serve.log");
    let mut daemon = spawn_serve(&config, &log, &[]);
    wait_listening(port, &mut daemon, &log);
    // The port is bound before the line is printed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("executor external (spool") {
        assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = isoflop(&["submit", spec.to_str().unwrap(), "--coordinator", &url]);
    assert!(out.status.success(), "{}", show(&out));

    // The launcher: at most what the executor hands out runs at once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let launcher = {
        let (spool, stop) = (spool.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut running: Vec<(std::process::Child, std::path::PathBuf)> = Vec::new();
            let mut launched = 0;
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for e in std::fs::read_dir(spool.join("pending")).unwrap().flatten() {
                    if e.path().extension().is_none_or(|x| x != "json") {
                        continue;
                    }
                    let taken = spool.join("taken").join(e.file_name());
                    std::fs::rename(e.path(), &taken).unwrap();
                    let launch: serde_json::Value = serde_json::from_slice(&std::fs::read(&taken).unwrap()).unwrap();
                    let log_path = std::path::PathBuf::from(launch["log_path"].as_str().unwrap());
                    std::fs::create_dir_all(log_path.parent().unwrap()).unwrap();
                    let out = std::fs::File::create(&log_path).unwrap();
                    let mut cmd = Command::new(bin());
                    cmd.arg("worker").stdout(out.try_clone().unwrap()).stderr(out);
                    for (k, v) in launch["env"].as_object().unwrap() {
                        cmd.env(k, v.as_str().unwrap());
                    }
                    running.push((cmd.spawn().unwrap(), taken));
                    launched += 1;
                }
                running.retain_mut(|(child, taken)| match child.try_wait().unwrap() {
                    Some(_) => {
                        std::fs::remove_file(&*taken).unwrap();
                        false
                    }
                    None => true,
                });
                most = most.max(running.len());
                std::thread::sleep(Duration::from_millis(50));
            }
            // The sweep has ended: the last workers exit after their outcomes.
            for (mut child, taken) in running {
                child.wait().unwrap();
                std::fs::remove_file(taken).unwrap();
            }
            (launched, most)
        })
    };
    let out = isoflop(&["watch", "tiny", "--coordinator", &url]);
    assert!(out.status.success(), "{}", show(&out));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (launched, most) = launcher.join().unwrap();
    drop(daemon);
    use isoflop_store::Store;
    let store = isoflop_store::SqliteStore::open(root.join("daemon/isoflop.db")).unwrap();
    let runs = store.sweep_runs("tiny").unwrap();
    assert!(runs.iter().all(|r| r.state == isoflop_core::RunState::Succeeded), "{runs:?}");
    // Every job (4 runs and their evaluation jobs) started once, and never more attempts live
    // at once than max_parallel (a worker may still be exiting after its outcome freed the
    // slot: the launcher saw up to `most` processes).
    assert_eq!(launched, runs.len(), "{launched} launched for {} jobs", runs.len());
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for r in &runs {
        for a in store.attempts(&r.run_id).unwrap() {
            edges.push((a.started_ms, 1));
            edges.push((a.ended_ms.expect("every attempt ended"), -1));
        }
    }
    edges.sort();
    let live = edges.iter().scan(0, |n, (_, d)| {
        *n += d;
        Some(*n)
    });
    assert!(live.max().unwrap() <= 2, "more than max_parallel attempts at once ({most} worker processes at most)");
    assert_eq!(std::fs::read_dir(spool.join("taken")).unwrap().count(), 0, "every launch file was removed");
}
