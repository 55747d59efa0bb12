//! The coordinator's web page and JSON API (issue 15), against a real `isoflop serve` with an
//! admin token, a real store and live local workers: the handlers over HTTP (every page, the
//! API, the stream, metrics, the token rules), then the page in a real browser (Debian's
//! chromium driven by playwright-core from tests/browser, never a downloaded browser), which
//! saves a screenshot of each page under `ci-output/browser/`.

mod common;

use common::{Daemon, TINY_SWEEP, corpus, free_port, isoflop, repo_root, show, spawn_serve, stdout, write_spec};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "web-s3cret";

/// 3 budgets x 4 widths small enough to train in seconds, whose IsoFLOP curves have their
/// minima inside (the fit charts get parabolas, minima, power laws and relative laws).
const GRID_SWEEP: &str = "\
name: grid
budgets: [3.0e9, 6.0e9, 1.2e10]
model: {family: llama, seq_len: 32, qk_norm: true}
grid:
  hidden: [8, 16, 24, 32]
  layers: {fixed: 1}
  heads: {head_size: 8}
  fixed_batch: 8
  lr_constant: 0.1
  lr_max: 0.01
  flop_tolerance: 0.05
recipe: {warmup_frac: 0.1, decay_frac: 0.2, weight_decay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1.0e-8, grad_clip: 1.0}
data:
  tokenizer: byte
  manifest: @MANIFEST@
  corpora: [{name: mix}]
  eval_tokens: 2048
runtime: {checkpoint_every: 50, progress_every: 5}
";

/// A daemon with its page on `http`, and the tiny and grid sweeps trained through it.
struct Served {
    dir: tempfile::TempDir,
    grpc: String,
    http: u16,
    _daemon: Daemon,
}

impl Served {
    fn start() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let (port, http) = (free_port(), free_port());
        std::fs::write(dir.path().join("admin-token"), format!("{TOKEN}\n")).unwrap();
        let config = dir.path().join("serve.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nhttp_listen: 127.0.0.1:{http}\nstore: {{sqlite: daemon/isoflop.db}}\n\
                 artifacts: daemon/runs\nadmin_token_file: admin-token\nper_run_metrics: true\n\
                 executor: {{kind: local, max_parallel: 2}}\n"
            ),
        )
        .unwrap();
        let log = dir.path().join("serve.log");
        let mut daemon = spawn_serve(&config, &log, &[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
            if let Some(s) = daemon.0.try_wait().unwrap() {
                panic!("isoflop serve exited with {s}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "isoflop serve did not listen in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let s = Served { grpc: format!("http://127.0.0.1:{port}"), http, _daemon: daemon, dir };
        let spec = write_spec(s.dir.path(), TINY_SWEEP);
        let out = s.client(&["submit", spec.to_str().unwrap()]);
        assert!(out.status.success(), "{}", show(&out));
        let out = s.client(&["watch", "tiny"]);
        assert!(out.status.success(), "{}", show(&out));
        let grid = s.dir.path().join("grid.yaml");
        std::fs::write(&grid, GRID_SWEEP.replace("@MANIFEST@", &corpus().join("manifest.json").display().to_string())).unwrap();
        let out = s.client(&["submit", grid.to_str().unwrap()]);
        assert!(out.status.success(), "{}", show(&out));
        let out = s.client(&["watch", "grid"]);
        assert!(out.status.success(), "{}", show(&out));
        s
    }

    fn client(&self, args: &[&str]) -> std::process::Output {
        let token = self.dir.path().join("admin-token");
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--coordinator", &self.grpc, "--token-file", token.to_str().unwrap()]);
        isoflop(&a)
    }

    /// The quickstart's spec on the test corpus, submitted: runs that train for minutes.
    fn submit_quickstart(&self) {
        let text = std::fs::read_to_string(repo_root().join("examples/quickstart.yaml")).unwrap();
        let manifest = corpus().join("manifest.json");
        let spec: String =
            text.lines()
                .map(|l| {
                    if l.trim_start().starts_with("manifest:") { format!("  manifest: {}", manifest.display()) } else { l.into() }
                })
                .collect::<Vec<_>>()
                .join("\n");
        let path = self.dir.path().join("quickstart.yaml");
        std::fs::write(&path, spec).unwrap();
        let out = self.client(&["submit", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", show(&out));
    }

    /// `GET path`: status, headers, body.
    fn get(&self, path: &str, auth: bool) -> (u16, String, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http)).unwrap();
        let auth = if auth { format!("Authorization: Bearer {TOKEN}\r\n") } else { String::new() };
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, head.to_string(), body.to_string())
    }

    fn json(&self, path: &str) -> Value {
        let (code, head, body) = self.get(path, true);
        assert_eq!(code, 200, "{path}: {head}\n{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// The first `n` messages of a stream: (event, id, data).
    fn stream(&self, query: &str, n: usize) -> Vec<(String, i64, Value)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "GET /api/v1/stream?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        while r.read_line(&mut head).unwrap() > 2 && !head.ends_with("\r\n\r\n") {}
        assert!(head.contains("200") && head.contains("text/event-stream"), "{head}");
        let (mut out, mut ev, mut id, mut data) = (Vec::new(), String::new(), 0i64, String::new());
        let mut line = String::new();
        while out.len() < n {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "the stream ended after {out:?}");
            // Chunked transfer: size lines are hex numbers; the SSE lines are the rest.
            let l = line.trim_end();
            if let Some(v) = l.strip_prefix("event: ") {
                ev = v.into();
            } else if let Some(v) = l.strip_prefix("id: ") {
                id = v.parse().unwrap();
            } else if let Some(v) = l.strip_prefix("data: ") {
                data = v.into();
            } else if l.is_empty() && !ev.is_empty() {
                out.push((std::mem::take(&mut ev), id, serde_json::from_str(&data).unwrap()));
            }
        }
        out
    }
}

#[test]
fn the_pages_api_stream_and_metrics_answer_with_the_admin_token_only() {
    let s = Served::start();
    // Health and metrics are open; the page and the API ask for the token.
    assert_eq!(s.get("/healthz", false).0, 200);
    let (code, _, metrics) = s.get("/metrics", false);
    assert!(code == 200 && metrics.contains(r#"isoflop_jobs{sweep="tiny",state="succeeded",kind="train"} 4"#), "{metrics}");
    let (code, head, body) = s.get("/api/v1/sweeps", false);
    assert_eq!(code, 401, "{head}");
    assert!(head.to_lowercase().contains("www-authenticate: bearer") && body.contains("admin token"), "{head}{body}");
    let (code, head, _) = s.get("/sweeps/tiny?kind=eval", false);
    assert!(code == 303 && head.contains("location: /login?next=/sweeps/tiny%3Fkind%3Deval"), "{head}");
    let (code, _, login) = s.get("/login", false);
    assert!(code == 200 && login.contains(r#"name="token""#), "{login}");
    let (code, _, css) = s.get("/assets/vendor/uPlot.min.css", false);
    assert!(code == 200 && css.contains(".uplot"), "assets are open");
    let mut cookie = std::net::TcpStream::connect(("127.0.0.1", s.http)).unwrap();
    write!(cookie, "GET /api/v1/sweeps HTTP/1.1\r\nHost: x\r\nCookie: a=b; isoflop_token={TOKEN}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    cookie.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "the login cookie is a token: {raw}");

    // The API: the sweep's summary and jobs are the store's.
    let sweeps = s.json("/api/v1/sweeps");
    let names: Vec<&str> = sweeps.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["grid", "tiny"], "newest first");
    let tiny = &sweeps.as_array().unwrap()[1];
    assert_eq!(
        (tiny["name"].as_str(), tiny["jobs"].as_u64(), tiny["succeeded"].as_u64()),
        (Some("tiny"), Some(8), Some(8)),
        "{tiny}"
    );
    assert_eq!(tiny["states"], serde_json::json!({"succeeded": 8}));
    let planned = tiny["flops_planned"].as_f64().unwrap();
    assert!((planned - 2.0 * (1.5e9 + 3.0e9)).abs() / planned < 1e-9 && tiny["flops_done"] == tiny["flops_planned"], "{tiny}");
    assert!(tiny["eta_seconds"].is_null(), "nothing left");
    let sweep = s.json("/api/v1/sweeps/tiny");
    let jobs = sweep["jobs"].as_array().unwrap();
    let train: Vec<&Value> = jobs.iter().filter(|j| j["kind"] == "train").collect();
    assert_eq!((jobs.len(), train.len()), (8, 4));
    for j in &train {
        assert_eq!((j["state"].as_str(), j["fraction"].as_f64()), (Some("succeeded"), Some(1.0)), "{j}");
        assert!(j["params"].as_u64().unwrap() > 0 && j["best_loss"].as_f64().unwrap() <= j["loss"].as_f64().unwrap(), "{j}");
    }
    let id = train[0]["run_id"].as_str().unwrap();
    let curves = s.json("/api/v1/sweeps/tiny/curves?points=10");
    let c = curves[id].as_array().unwrap();
    assert!(c.len() <= 11 && c.len() >= 5, "downsampled: {}", c.len());
    assert_eq!(c.last().unwrap()[3], train[0]["total_steps"], "the last step is kept");
    let run = s.json(&format!("/api/v1/runs/{id}"));
    assert_eq!(run["job"]["run_id"], id);
    let tos: Vec<&str> = run["events"].as_array().unwrap().iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(tos.last(), Some(&"succeeded"), "{tos:?}");
    assert_eq!(run["evals"].as_array().unwrap().len(), 5, "the held-out distributions: {}", run["evals"]);
    assert_eq!(run["sweeps"], serde_json::json!(["tiny"]));
    // The same history over the control API: `isoflop events`.
    let out = s.client(&["events", id, "--format", "json"]);
    assert!(out.status.success(), "{}", show(&out));
    let events: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let over_grpc: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(over_grpc, tos, "the page's history and the control API's agree");
    let out = s.client(&["events", id]);
    let table = stdout(&out);
    assert!(out.status.success() && table.contains("launching") && table.lines().count() == tos.len() + 3, "{table}");
    let full = s.json(&format!("/api/v1/runs/{id}/progress"));
    assert_eq!(
        full.as_array().unwrap().len(),
        s.json(&format!("/api/v1/runs/{id}/progress?points=100000")).as_array().unwrap().len()
    );
    let log = s.json(&format!("/api/v1/runs/{id}/log?attempt=1"));
    let (text, size) = (log["text"].as_str().unwrap(), log["size"].as_u64().unwrap());
    assert!(size > 0 && text.len() as u64 == size && log["offset"].as_u64() == Some(size) && text.ends_with('\n'), "{log}");
    let tail = s.json(&format!("/api/v1/runs/{id}/log?attempt=1&offset={}", size - 10));
    assert_eq!(tail["text"].as_str().unwrap().len(), 10, "from the offset: {tail}");
    // The fit: none for tiny (2 sizes per budget), the fitter's report for grid.
    let fit = s.json("/api/v1/sweeps/tiny/fit");
    assert!(fit["report"]["isoflop"]["budgets"].as_array().unwrap().is_empty(), "{fit}");
    let fit = s.json("/api/v1/sweeps/grid/fit");
    let iso = &fit["report"]["isoflop"];
    assert_eq!((fit["task"].as_str(), iso["distribution"].as_str()), (Some("heldout"), Some("all")), "{fit}");
    assert_eq!(fit["points"].as_array().unwrap().len(), 12, "the points its parabolas were fitted to");
    let budgets = iso["budgets"].as_array().unwrap();
    assert_eq!(budgets.len(), 3, "{iso}");
    // Each budget's report carries its optimum's fields.
    assert!(budgets.iter().all(|b| b["parabola_ln_n"]["c"][2].as_f64().is_some() && b["n_opt"].as_f64().is_some()), "{iso}");
    assert!(budgets.iter().any(|b| b["bracketed"] == true), "a minimum inside the sizes: {iso}");
    assert!(iso["n_opt_exponent"].as_f64().is_some() && !fit["report"]["relative"].as_array().unwrap().is_empty(), "{fit}");
    assert_eq!(s.json("/api/v1/sweeps/grid/fit"), fit, "cached until a job ends");
    let (code, _, body) = s.get("/api/v1/sweeps/nope", true);
    assert!(code == 404 && body.contains("no sweep named nope"), "{body}");
    let (code, _, body) = s.get(&format!("/api/v1/runs/{id}/log?attempt=7"), true);
    assert!(code == 404 && body.contains("not 7"), "{body}");
    let (code, _, body) = s.get("/api/v1/sweeps/tiny/curves?points=1", true);
    assert!(code == 400 && body.contains("expected 2 to 100000"), "{body}");

    // The pages, rendered on the server: every job, its numbers, the charts' places.
    let (code, _, html) = s.get("/", true);
    assert!(code == 200 && html.contains(r#"<tr data-sweep="tiny">"#) && html.contains("succeeded 8"), "{html}");
    let (_, _, html) = s.get("/sweeps/tiny", true);
    assert_eq!(html.matches("<tr data-id=").count(), 8);
    assert!(html.contains(r#"id="chart-loss""#) && html.contains(r#"id="chart-isoflop""#) && html.contains("/assets/app.js"));
    let (_, _, html) = s.get(&format!("/runs/{id}"), true);
    assert!(html.contains(r#"id="log-text""#) && html.contains(r#"id="events""#) && html.contains("shakespeare"), "{html}");
    let (code, _, html) = s.get("/runs/nope", true);
    assert!(code == 404 && html.contains("no run"), "{html}");

    // The stream: what changed since the cursor; from now, nothing of a finished sweep.
    let first = s.stream("sweep=tiny&cursor=0", 3);
    let names: Vec<&str> = first.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(names, ["summaries", "jobs", "points"]);
    assert_eq!(first[1].2.as_array().unwrap().len(), 8);
    let cursor = first[0].1;
    let later = s.stream(&format!("sweep=tiny&cursor={cursor}"), 1);
    assert_eq!(later[0].0, "summaries", "nothing changed since the cursor: {later:?}");

    // A live sweep: its progress reports arrive as jobs and points.
    s.submit_quickstart();
    let live = s.stream("sweep=quickstart&cursor=0", 8);
    assert!(live.iter().any(|m| m.0 == "points" && m.2.as_object().is_some_and(|o| !o.is_empty())), "{live:?}");

    // A scrape while it trains: the store's gauges, the live counters and histograms, the
    // series of the running runs (asked for in the config).
    let (code, _, ready) = s.get("/readyz", false);
    assert!(code == 200 && ready.contains("the executor is ready"), "{ready}");
    let wants = [
        r#"isoflop_jobs_finished_total{result="succeeded"} 32"#,
        r#"isoflop_rpc_duration_seconds_bucket{le="+Inf",method="/isoflop.v1.WorkerService/Report"}"#,
        r#"isoflop_rpc_duration_seconds_count{method="/isoflop.v1.ControlService/SubmitSweep"} 3"#,
        "isoflop_queue_wait_seconds_count ",
        r#"isoflop_run_duration_seconds_count 32"#,
        r#"isoflop_sweep_tokens_per_second{sweep="quickstart"}"#,
        r#"isoflop_run_loss{sweep="quickstart",run="isoflop-5e+11-d24-L1-B32-mix"}"#,
        r#"isoflop_jobs{sweep="quickstart",state="running",kind="train"} 2"#,
    ];
    // Both first runs of the quickstart report within seconds; a busy machine may start the
    // second one later than the stream's first points.
    let deadline = Instant::now() + Duration::from_secs(60);
    let m = loop {
        let (_, _, m) = s.get("/metrics", false);
        match wants.iter().find(|w| !m.contains(*w)) {
            None => break m,
            Some(want) => assert!(Instant::now() < deadline, "no `{want}` in:\n{m}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(!m.contains(r#"run="isoflop-1.5e+09"#), "no series of a finished run");
    let families: Vec<&str> = m.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
    println!("\nmetrics of a running sweep: {}", families.join("; "));
    let out = s.client(&["cancel", "quickstart"]);
    assert!(out.status.success(), "{}", show(&out));
}

/// Where CI keeps what the browser test saves.
fn ci_output() -> PathBuf {
    repo_root().join("ci-output/browser")
}

#[test]
fn the_page_in_a_real_browser_logs_in_updates_live_and_keeps_its_filters() {
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run scripts/setup.sh (it runs npm ci there)"
    );
    assert!(Path::new("/usr/bin/chromium").exists(), "Debian's chromium is missing: run scripts/setup.sh");
    let s = Served::start();
    s.submit_quickstart();
    let out_dir = ci_output();
    let _ = std::fs::remove_dir_all(&out_dir);
    let t0 = Instant::now();
    let out = Command::new("node")
        .current_dir(&browser_dir)
        .arg("check.mjs")
        .arg(format!("http://127.0.0.1:{}", s.http))
        .args([TOKEN, "grid", "quickstart"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let took = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "the browser test failed (screenshot in {}):\n{}", out_dir.display(), show(&out));
    println!("\nbrowser test: {:.1} s; {}", took, stdout(&out).trim());
    for shot in ["sweeps.png", "sweep-done.png", "sweep-live.png", "run.png"] {
        let len = std::fs::metadata(out_dir.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "screenshot {shot}: {len} bytes");
        println!("screenshot {}: {len} bytes", out_dir.join(shot).display());
    }
    let out = s.client(&["cancel", "quickstart"]);
    assert!(out.status.success(), "{}", show(&out));
}
