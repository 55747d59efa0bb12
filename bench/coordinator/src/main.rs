//! bench/coordinator: `isoflop serve` under the load of a large sweep, on SQLite and on
//! PostgreSQL (a real server, started here as the tests start theirs).
//!
//! For each backend: starts `isoflop serve` with the external executor (its attempts handed
//! out through a spool directory), times `isoflop submit` of a sweep of `--runs` runs and
//! `isoflop status` of it, then plays `--workers` workers over the worker gRPC API: each takes
//! a launch from the spool, attaches with its token and reports one progress point a second.
//! Over a measured window it prints reports per second, p50 / p99 / max report latency, the
//! store's transactions per second (PostgreSQL's own commit counter; on SQLite every report is
//! one transaction), and the coordinator's CPU and memory. Then the floor, on the same
//! database: the same number of report transactions (the lease update and the progress row)
//! written straight to it by a minimal program, one after another. Ratios last.

use anyhow::{Context, Result, bail};
use clap::Parser;
use isoflop_proto::v1 as pb;
use isoflop_proto::v1::worker_service_client::WorkerServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Load on isoflop serve: workers reporting over gRPC against SQLite and PostgreSQL, beside the floor")]
struct Args {
    /// The `isoflop` binary (a release build).
    #[arg(long)]
    isoflop: PathBuf,
    /// Simulated workers (live attempts), each reporting once a second.
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    /// Runs in the sweep.
    #[arg(long, default_value_t = 10_000)]
    runs: usize,
    /// Length of the measured window, seconds (after every worker has attached).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// Also serve the web page on this loopback port (bench/web measures it under the load).
    #[arg(long)]
    http_port: Option<u16>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut rows = Vec::new();
    for backend in &args.backends {
        let dir = tempfile_dir(backend)?;
        let store = match backend.as_str() {
            "sqlite" => Backend::Sqlite(dir.join("store/isoflop.db")),
            "postgres" => Backend::Postgres(isoflop_pg_harness::fresh_database()),
            other => bail!("--backends: `{other}`: expected sqlite or postgres"),
        };
        let row = measure(&args, &dir, &store).with_context(|| format!("backend {backend}"))?;
        let _ = std::fs::remove_dir_all(&dir);
        rows.push(row);
    }
    println!();
    println!(
        "{:<10} {:>7} {:>8} {:>9} {:>8} {:>8} {:>8} {:>10} {:>6} {:>8} {:>9} {:>10} {:>10} {:>9} {:>7}",
        "backend",
        "submit",
        "status",
        "reports/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "store tx/s",
        "cpu %",
        "rss MiB",
        "capacity",
        "floor tx/s",
        "floor p50",
        "floor p99",
        "errors"
    );
    for r in &rows {
        println!(
            "{:<10} {:>6.2}s {:>7.2}s {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>10.0} {:>6.0} {:>8.0} {:>9.0} {:>10.0} {:>10.3} {:>9.3} {:>7}",
            r.backend,
            r.submit_s,
            r.status_s,
            r.reports_per_s,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.store_tx_per_s,
            r.cpu_percent,
            r.rss_mib,
            r.saturated_per_s,
            r.floor_tx_per_s,
            r.floor_p50_ms,
            r.floor_p99_ms,
            r.errors
        );
    }
    println!();
    println!(
        "capacity: reports/s with every worker reporting back to back; floor: the report transactions written straight to the database, one after another"
    );
    for r in &rows {
        println!(
            "{}: p99 {:.2} ms at {:.0} reports/s (goal: under 50 ms at 1,000/s); floor / capacity = {:.2}x (goal: within 3x)",
            r.backend,
            r.p99_ms,
            r.reports_per_s,
            r.floor_tx_per_s / r.saturated_per_s
        );
    }
    Ok(())
}

fn tempfile_dir(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("isoflop-loadgen-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

enum Backend {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Debug, Default)]
struct Row {
    backend: &'static str,
    submit_s: f64,
    status_s: f64,
    reports_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    store_tx_per_s: f64,
    cpu_percent: f64,
    rss_mib: f64,
    floor_tx_per_s: f64,
    floor_p50_ms: f64,
    floor_p99_ms: f64,
    saturated_per_s: f64,
    errors: usize,
}

/// `isoflop serve`, killed when dropped.
struct Serve(Child);
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A sweep of about `runs` runs (budgets x widths) on a small prepared corpus (no worker
/// trains it: the simulated ones only report).
fn sweep_spec(runs: usize, manifest: &Path) -> String {
    let widths = 100.min(runs).max(1);
    let budgets = runs.div_ceil(widths);
    let b: Vec<String> = (0..budgets).map(|i| format!("{:.4e}", 1e15 * 10f64.powf(2.0 * i as f64 / budgets as f64))).collect();
    let h: Vec<String> = (1..=widths).map(|i| (64 * i).to_string()).collect();
    format!(
        "name: load\nbudgets: [{}]\nmodel: {{family: llama, seq_len: 64}}\n\
         grid: {{hidden: [{}], layers: {{fixed: 2}}, heads: {{head_size: 64}}, fixed_batch: 8, lr_constant: 0.1, lr_max: 0.01, flop_tolerance: 0.5}}\n\
         recipe: {{warmup_frac: 0.1, decay_frac: 0.2, weight_decay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1.0e-8, grad_clip: 1.0}}\n\
         data: {{tokenizer: byte, manifest: {}, corpora: [{{name: mix}}], eval_tokens: 2048}}\neval: {{heldout: false}}\n",
        b.join(", "),
        h.join(", "),
        manifest.display()
    )
}

fn timed(cmd: &mut Command) -> Result<(f64, String)> {
    let t = Instant::now();
    let out = cmd.output()?;
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{cmd:?} failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    Ok((secs, text))
}

fn measure(args: &Args, dir: &Path, backend: &Backend) -> Result<Row> {
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let spool = dir.join("spool");
    let (name, store_yaml) = match backend {
        Backend::Sqlite(db) => ("sqlite", format!("{{sqlite: {}}}", db.display())),
        Backend::Postgres(_) => ("postgres", "{postgres: {url_env: ISOFLOP_LOADGEN_DATABASE}}".to_string()),
    };
    eprintln!("== {name}: {} workers, a sweep of {} runs", args.workers, args.runs);
    let config = dir.join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstore: {store_yaml}\nartifacts: {}\n{}\
             executor: {{kind: external, spool: {}, max_parallel: {}, lease_seconds: 60}}\n",
            dir.join("runs").display(),
            args.http_port.map(|p| format!("http_listen: 127.0.0.1:{p}\n")).unwrap_or_default(),
            spool.display(),
            args.workers
        ),
    )?;
    let log = dir.join("serve.log");
    let out = std::fs::File::create(&log)?;
    let mut cmd = Command::new(&args.isoflop);
    cmd.args(["serve", "--config"]).arg(&config).stdout(out.try_clone()?).stderr(out).stdin(Stdio::null());
    if let Backend::Postgres(u) = backend {
        cmd.env("ISOFLOP_LOADGEN_DATABASE", u);
    }
    let serve = Serve(cmd.spawn().context("starting isoflop serve")?);
    let pid = serve.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("isoflop serve: listening") {
        if Instant::now() > deadline {
            bail!("serve did not listen in 60 s:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let spec = dir.join("load.yaml");
    let corpus = dir.join("corpus");
    timed(Command::new(&args.isoflop).args(["data", "prepare", "--max-train-bytes", "1000000", "--out"]).arg(&corpus))?;
    std::fs::write(&spec, sweep_spec(args.runs, &corpus.join("manifest.json")))?;
    let (submit_s, text) = timed(Command::new(&args.isoflop).arg("submit").arg(&spec).args(["--coordinator", &url]))?;
    let said = text.lines().find(|l| l.contains("submitted")).unwrap_or_default();
    eprintln!("submit: {submit_s:.2} s: {said}");
    let (status_s, text) = timed(Command::new(&args.isoflop).args(["status", "load", "--coordinator", &url]))?;
    eprintln!("status: {status_s:.2} s: {}", text.lines().next().unwrap_or_default());

    *CURRENT_PG.lock().unwrap() = match backend {
        Backend::Postgres(u) => Some(u.clone()),
        Backend::Sqlite(_) => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let load = rt.block_on(play(args, &url, &spool))?;

    let rss_mib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0;
    let store_tx_per_s = match backend {
        Backend::Sqlite(_) => load.reports as f64 / load.window_s,
        Backend::Postgres(_) => (load.commits_after - load.commits_before) as f64 / load.window_s,
    };
    drop(serve);

    let floor = match backend {
        Backend::Sqlite(db) => floor_sqlite(db, load.reports, &load.attempts)?,
        Backend::Postgres(u) => floor_postgres(u, load.reports, &load.attempts)?,
    };
    let mut lat = load.latencies_us.clone();
    lat.sort_unstable();
    Ok(Row {
        backend: name,
        submit_s,
        status_s,
        reports_per_s: load.reports as f64 / load.window_s,
        p50_ms: quantile(&lat, 0.50),
        p99_ms: quantile(&lat, 0.99),
        max_ms: lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        store_tx_per_s,
        cpu_percent: 100.0 * load.serve_cpu_s / load.window_s,
        rss_mib,
        floor_tx_per_s: floor.tx_per_s,
        floor_p50_ms: floor.p50_ms,
        floor_p99_ms: floor.p99_ms,
        saturated_per_s: load.saturated_per_s,
        errors: load.errors,
    })
}

fn quantile(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * q).round() as usize;
    sorted_us[i] as f64 / 1000.0
}

/// What the measured window saw.
struct Load {
    reports: usize,
    errors: usize,
    window_s: f64,
    latencies_us: Vec<u64>,
    serve_cpu_s: f64,
    commits_before: i64,
    commits_after: i64,
    /// The attempts played (run id, attempt), for the floor's rows.
    attempts: Vec<(String, u64)>,
    /// Reports per second with every worker reporting back to back.
    saturated_per_s: f64,
}

/// Takes launches from the spool until `--workers` workers report, then measures a window.
async fn play(args: &Args, url: &str, spool: &Path) -> Result<Load> {
    let stats = Arc::new(Mutex::new(Stats::default()));
    let phase = Arc::new(AtomicU8::new(WARM));
    let mut attempts = Vec::new();
    let mut tasks = Vec::new();
    let started = Instant::now();
    while attempts.len() < args.workers {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("only {} of {} launches reached the spool in 120 s", attempts.len(), args.workers);
        }
        let mut names: Vec<PathBuf> = std::fs::read_dir(spool.join("pending"))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        for p in names.into_iter().take(args.workers - attempts.len()) {
            let taken = spool.join("taken").join(p.file_name().unwrap());
            if std::fs::rename(&p, &taken).is_err() {
                continue;
            }
            let launch: serde_json::Value = serde_json::from_slice(&std::fs::read(&taken)?)?;
            let env = &launch["env"];
            let run_id = launch["run_id"].as_str().unwrap_or_default().to_string();
            let attempt = launch["attempt"].as_u64().unwrap_or_default();
            let token = env[isoflop_proto::env::TOKEN].as_str().unwrap_or_default().to_string();
            attempts.push((run_id.clone(), attempt));
            let (url, stats, phase) = (url.to_string(), stats.clone(), phase.clone());
            let offset = Duration::from_millis((attempts.len() as u64 * 997) % 1000);
            tasks.push(tokio::spawn(async move {
                if let Err(e) = worker(&url, run_id, attempt, token, offset, stats.clone(), phase).await {
                    stats.lock().unwrap().failed.push(e.to_string());
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every worker attached and reporting before the window opens.
    let warm = Instant::now();
    while stats.lock().unwrap().attached < args.workers {
        if let Some(e) = stats.lock().unwrap().failed.first() {
            bail!("a worker failed: {e}");
        }
        if warm.elapsed() > Duration::from_secs(120) {
            bail!("only {} of {} workers attached in 120 s", stats.lock().unwrap().attached, args.workers);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{} workers attached in {:.1} s after the submit; measuring {} s",
        args.workers,
        started.elapsed().as_secs_f64(),
        args.seconds
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = serve_pid(url);
    let cpu0 = process_cpu_s(pid);
    let commits0 = pg_commits();
    phase.store(PACED, Ordering::SeqCst);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    phase.store(BETWEEN, Ordering::SeqCst);
    let window_s = t0.elapsed().as_secs_f64();
    let cpu1 = process_cpu_s(pid);
    let commits1 = pg_commits();
    // Then capacity: every worker reports back to back (no pause) for a third of the window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    phase.store(FLAT_OUT, Ordering::SeqCst);
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds.div_ceil(3))).await;
    phase.store(STOP, Ordering::SeqCst);
    let flat_out_s = t1.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let s = stats.lock().unwrap();
    Ok(Load {
        reports: s.latencies_us.len(),
        errors: s.errors,
        window_s,
        latencies_us: s.latencies_us.clone(),
        serve_cpu_s: cpu1 - cpu0,
        commits_before: commits0,
        commits_after: commits1,
        attempts,
        saturated_per_s: s.saturated as f64 / flat_out_s,
    })
}

#[derive(Default)]
struct Stats {
    attached: usize,
    latencies_us: Vec<u64>,
    errors: usize,
    saturated: usize,
    failed: Vec<String>,
}

/// What the simulated workers do: warm up, report once a second (measured), pause, report back
/// to back (capacity), stop.
const WARM: u8 = 0;
const PACED: u8 = 1;
const BETWEEN: u8 = 2;
const FLAT_OUT: u8 = 3;
const STOP: u8 = 4;

#[allow(clippy::too_many_arguments)]
async fn worker(
    url: &str,
    run_id: String,
    attempt: u64,
    token: String,
    offset: Duration,
    stats: Arc<Mutex<Stats>>,
    phase: Arc<AtomicU8>,
) -> Result<()> {
    let mut client = WorkerServiceClient::connect(url.to_string()).await?;
    let auth: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}").parse()?;
    fn authed<T>(msg: T, auth: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert("authorization", auth.clone());
        r
    }
    let assignment = client
        .attach(authed(
            pb::AttachRequest {
                protocol_version: isoflop_proto::PROTOCOL_VERSION,
                run_id: run_id.clone(),
                attempt,
                hostname: "loadgen".into(),
                pid: std::process::id(),
            },
            &auth,
        ))
        .await?
        .into_inner();
    let total: u64 = serde_json::from_str::<serde_json::Value>(&assignment.run_config_json)
        .ok()
        .and_then(|c| c["recipe"]["steps"].as_u64())
        .unwrap_or(1_000_000);
    stats.lock().unwrap().attached += 1;
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut step = 0u64;
    let t0 = Instant::now();
    loop {
        let now = phase.load(Ordering::SeqCst);
        if now == STOP {
            break;
        }
        if now != FLAT_OUT {
            tick.tick().await;
        }
        step += 1;
        let progress = pb::Progress {
            step,
            total_steps: total.max(step),
            loss: 10.0 / (step as f64).sqrt(),
            lr: 1e-3,
            grad_norm: 1.0,
            tokens_seen: step * 512,
            tokens_per_second: 512.0,
            mfu: 0.0,
            elapsed_seconds: t0.elapsed().as_secs_f64(),
            micro_batch: None,
        };
        let report = pb::ReportRequest {
            protocol_version: isoflop_proto::PROTOCOL_VERSION,
            run_id: run_id.clone(),
            attempt,
            progress: vec![progress],
            checkpoints: vec![],
            resumed_from: if step == 1 { Some(0) } else { None },
            rejected_checkpoints: vec![],
        };
        let sent = Instant::now();
        let answer = client.report(authed(report, &auth)).await;
        let us = sent.elapsed().as_micros() as u64;
        let mut s = stats.lock().unwrap();
        match (phase.load(Ordering::SeqCst), answer.is_ok()) {
            (PACED, true) => s.latencies_us.push(us),
            (FLAT_OUT, true) => s.saturated += 1,
            (PACED | FLAT_OUT, false) => s.errors += 1,
            _ => {}
        }
    }
    Ok(())
}

/// The pid of the process listening on the URL's port (this benchmark's `isoflop serve`).
fn serve_pid(url: &str) -> Option<u32> {
    let port: u16 = url.rsplit(':').next()?.parse().ok()?;
    // /proc/net/tcp: the listening socket's inode, then the process holding it.
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
        (local_port == port && f.get(3) == Some(&"0A")).then(|| f.get(9).map(|s| s.to_string()))?
    })?;
    let needle = format!("socket:[{inode}]");
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == needle)) {
            return Some(pid);
        }
    }
    None
}

/// User + system CPU seconds of a process.
fn process_cpu_s(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return f64::NAN };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    // After the command: state is field 3, utime 14 and stime 15 (1-based), in clock ticks.
    let ticks: f64 = fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()).unwrap_or(f64::NAN);
    ticks / 100.0
}

/// Commits of the benchmark's PostgreSQL database so far (0 on SQLite).
fn pg_commits() -> i64 {
    // The synchronous client runs a runtime of its own: not on this one's threads.
    std::thread::spawn(pg_commits_now).join().unwrap_or(0)
}

fn pg_commits_now() -> i64 {
    CURRENT_PG
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|u| postgres::Client::connect(u, postgres::NoTls).ok())
        .and_then(|mut c| {
            c.query_one("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()", &[])
                .ok()
                .map(|r| r.get::<_, i64>(0))
        })
        .unwrap_or(0)
}

static CURRENT_PG: Mutex<Option<String>> = Mutex::new(None);

struct Floor {
    tx_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn floor_result(lat_us: &mut [u64], secs: f64) -> Floor {
    lat_us.sort_unstable();
    Floor { tx_per_s: lat_us.len() as f64 / secs, p50_ms: quantile(lat_us, 0.5), p99_ms: quantile(lat_us, 0.99) }
}

/// `n` report transactions (the attempt's lease, one progress row) straight into the SQLite
/// store, as the store opens it (WAL, synchronous NORMAL), one after another.
fn floor_sqlite(db: &Path, n: usize, attempts: &[(String, u64)]) -> Result<Floor> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut lat = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        let (run, attempt) = &attempts[i % attempts.len()];
        let step = 10_000_000 + i as i64;
        let s = Instant::now();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE attempts SET lease_expires_ms = ?3 WHERE run_id = ?1 AND attempt = ?2",
            rusqlite::params![run, *attempt as i64, step],
        )?;
        tx.execute(
            "INSERT INTO progress (run_id, attempt, step, total_steps, loss, lr, grad_norm, tokens_seen, tokens_per_second, \
             mfu, elapsed_seconds, at_ms, micro_batch) VALUES (?1, ?2, ?3, ?3, 1.0, 0.001, 1.0, 512, 512.0, 0.0, 1.0, ?3, NULL)",
            rusqlite::params![run, *attempt as i64, step],
        )?;
        tx.commit()?;
        lat.push(s.elapsed().as_micros() as u64);
    }
    Ok(floor_result(&mut lat, t.elapsed().as_secs_f64()))
}

/// The same on PostgreSQL, one connection, one transaction per report.
fn floor_postgres(url: &str, n: usize, attempts: &[(String, u64)]) -> Result<Floor> {
    let mut c = postgres::Client::connect(url, postgres::NoTls)?;
    let lease = c.prepare("UPDATE attempts SET lease_expires_ms = $3 WHERE run_id = $1 AND attempt = $2")?;
    let row = c.prepare(
        "INSERT INTO progress (run_id, attempt, step, total_steps, loss, lr, grad_norm, tokens_seen, tokens_per_second, \
         mfu, elapsed_seconds, at_ms, micro_batch) VALUES ($1, $2, $3, $3, 1.0, 0.001, 1.0, 512, 512.0, 0.0, 1.0, $3, NULL)",
    )?;
    let mut lat = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        let (run, attempt) = &attempts[i % attempts.len()];
        let step = 10_000_000 + i as i64;
        let s = Instant::now();
        let mut tx = c.transaction()?;
        tx.execute(&lease, &[run, &(*attempt as i64), &step])?;
        tx.execute(&row, &[run, &(*attempt as i64), &step])?;
        tx.commit()?;
        lat.push(s.elapsed().as_micros() as u64);
    }
    Ok(floor_result(&mut lat, t.elapsed().as_secs_f64()))
}
