//! Shared helpers of the end-to-end tests: a prepared real corpus, spec files, the binary.

#![allow(dead_code)]

use isoflop_store::SqliteStore;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A tiny sweep on the shared corpus: 2 budgets x 2 widths, seconds of CPU training per run.
/// `@MANIFEST@` stands for the corpus manifest ([`write_spec`] fills it in).
pub const TINY_SWEEP: &str = "\
name: tiny
budgets: [1.5e9, 3.0e9]
model: {family: llama, seq_len: 32, qk_norm: true}
grid:
  hidden: [16, 32]
  layers: {fixed: 1}
  heads: {head_size: 16}
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
executor: {kind: local, max_parallel: 2}
runtime: {checkpoint_every: 20, progress_every: 5}
store: {sqlite: state/isoflop.db}
";

/// The training runs of a sweep (its evaluation jobs left out), in plan order.
pub fn training(store: &SqliteStore, sweep: &str) -> Vec<isoflop_store::RunRow> {
    use isoflop_store::Store;
    store.sweep_runs(sweep).unwrap().into_iter().filter(|r| r.is_training()).collect()
}

/// The `isoflop` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_isoflop")
}

/// A corpus prepared once per test binary from the real installed sources (1 MB of training
/// text; every held-out distribution).
pub fn corpus() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("isoflop-test-corpus-{}", std::process::id()));
        let out = Command::new(bin())
            .args(["data", "prepare", "--max-train-bytes", "1000000", "--out"])
            .arg(&dir)
            .output()
            .expect("run isoflop data prepare");
        assert!(out.status.success(), "data prepare failed:\n{}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

/// Writes `spec.yaml` into `dir` with the manifest of [`corpus`] and a store beside it.
pub fn write_spec(dir: &Path, body: &str) -> PathBuf {
    let manifest = corpus().join("manifest.json");
    let text = body.replace("@MANIFEST@", &manifest.display().to_string());
    let path = dir.join("spec.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `isoflop ARGS` to completion.
pub fn isoflop(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run isoflop")
}

/// Prints a command's output when an assertion is about to fail.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Starts `isoflop run SPEC --plain` in the background.
pub fn spawn_run(spec: &std::path::Path) -> Child {
    Command::new(bin())
        .args(["run", spec.to_str().unwrap(), "--plain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `cond` holds on the store, or panics after `secs`.
pub fn wait_for<T>(store: &SqliteStore, secs: u64, what: &str, mut cond: impl FnMut(&SqliteStore) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = cond(store) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Corrupts a shard's tokens in place, at the same size: the header and the file size still
/// match the manifest, the digest of the tokens does not.
pub fn flip_a_token(shard: &Path) {
    let mut bytes = std::fs::read(shard).unwrap();
    bytes[isoflop_data::shard::HEADER_LEN + 10] ^= 0x01;
    std::fs::write(shard, &bytes).unwrap();
}

/// A private copy of the test corpus in `dir` (the same digests, other paths), for tests that
/// damage or move its shards.
pub fn copy_corpus(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(corpus()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir.to_path_buf()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An `isoflop serve` child, killed if the test panics before stopping it.
pub struct Daemon(pub Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `isoflop serve --config CONFIG` with `env` set, stdout and stderr into `log`.
pub fn spawn_serve(config: &Path, log: &Path, env: &[(&str, &str)]) -> Daemon {
    spawn_serve_in(config, log, env, None)
}

/// [`spawn_serve`] in the working directory `dir` (its workers inherit it), if given.
pub fn spawn_serve_in(config: &Path, log: &Path, env: &[(&str, &str)], dir: Option<&Path>) -> Daemon {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(bin());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let child = cmd
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("ISOFLOP_LOG", "info")
        .envs(env.iter().copied())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Daemon(child)
}

/// A command's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The helm binary `scripts/helm.sh` builds (once per version) and names.
pub fn helm_bin() -> PathBuf {
    let out = Command::new("bash").arg(repo_root().join("scripts/helm.sh")).output().expect("bash runs scripts/helm.sh");
    assert!(out.status.success(), "scripts/helm.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
