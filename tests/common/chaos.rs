//! The chaos drill (issue 13, point 8): a small sweep with real training and a checkpoint every
//! few steps, whose coordinator is SIGKILLed at many random moments (`isoflop run`, or
//! `isoflop serve` on SQLite or PostgreSQL), some of whose workers are SIGKILLed, and some of
//! whose newest checkpoints are truncated, each time restarted, then run to the end. The store
//! is then read for what the promise forbids, and a watcher that samples `/proc` every 10 ms
//! counts the moments when two workers of one run were alive.
//!
//! tests/chaos.rs runs the short version in CI; bench/chaos/run.sh the long one
//! (`ISOFLOP_CHAOS_KILLS`), with the same table.

#![allow(dead_code)]

use crate::common::{Daemon, TINY_SWEEP, bin, corpus, free_port, isoflop, show, spawn_serve_in};
use isoflop_core::RunState;
use isoflop_store::{AttemptOutcome, Store, StoreLocation};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The drill's sweep of round `round` (`chaos-N`, seed N: runs of their own): the tiny sweep at
/// 3 budgets x 2 widths, each run a few hundred steps of real training, a checkpoint every
/// [`CHECKPOINT_EVERY`] steps. A drill whose sweep finishes before its kills are done goes on
/// with the next round.
pub fn sweep(round: usize) -> String {
    let s = TINY_SWEEP
        .replace("name: tiny", &format!("name: {}\nseed: {round}", sweep_name(round)))
        .replace("budgets: [1.5e9, 3.0e9]", "budgets: [3.0e9, 6.0e9, 1.2e10]")
        .replace("checkpoint_every: 20", &format!("checkpoint_every: {CHECKPOINT_EVERY}"))
        // The drill's own worker kills count as failures; with 50 kills one run was killed
        // often enough to spend the default budget of 3 retries. The promise is about the
        // coordinator's deaths, not the retry budget.
        .replace("executor: {kind: local, max_parallel: 2}", &format!("executor: {EXECUTOR}"));
    assert!(s.contains("1.2e10") && s.contains("checkpoint_every: 10") && s.contains(EXECUTOR), "TINY_SWEEP changed: {s}");
    s
}
pub const CHECKPOINT_EVERY: u64 = 10;
const EXECUTOR: &str = "{kind: local, max_parallel: 2, max_retries: 1000}";

pub fn sweep_name(round: usize) -> String {
    format!("chaos-{round}")
}

/// Which coordinator the drill kills.
pub enum Mode {
    /// `isoflop run SPEC` on its SQLite store.
    Run,
    /// `isoflop serve` on a SQLite store; the sweep submitted once.
    ServeSqlite,
    /// `isoflop serve` on a PostgreSQL database (its URL).
    ServePostgres(String),
    /// `isoflop run SPEC` on its SQLite store, its runs Jobs of a test Kubernetes cluster.
    Kubernetes(Kube),
}

/// Where a Kubernetes drill's runs go: the spec's `executor:` block (`@PORT@` is the
/// coordinator's port), the artifacts directory the workers' volume shows at the same path, and
/// the kubeconfig `isoflop run` reads.
pub struct Kube {
    pub executor: String,
    pub artifacts: PathBuf,
    pub kubeconfig: PathBuf,
}

/// A fault the caller injected at a kill moment (the cluster's: the drill has no hand on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    None,
    /// A worker's pod OOMKilled.
    Oom,
    /// A node lost with its pods (and a fresh one joining).
    NodeLost,
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Run => "run + SQLite",
            Mode::ServeSqlite => "serve + SQLite",
            Mode::ServePostgres(_) => "serve + PostgreSQL",
            Mode::Kubernetes(_) => "run + Kubernetes",
        }
    }
}

/// What a drill counted. The promise: every count from `runs_lost` to `illegal_edges` is 0.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub mode: String,
    pub coordinator_kills: usize,
    /// Coordinator kills while some run of the sweep was unfinished.
    pub kills_mid_sweep: usize,
    pub worker_kills: usize,
    /// Faults injected by the caller: pods OOMKilled, nodes lost.
    pub ooms: usize,
    pub nodes_lost: usize,
    pub truncations: usize,
    /// Sweeps run one after another (the next one submitted when one finished mid-drill).
    pub rounds: usize,
    pub runs: usize,
    pub attempts: usize,
    pub runs_lost: usize,
    pub evals_duplicated: usize,
    pub two_live_moments: usize,
    /// Distinct worker processes the watcher saw (its two-live count means nothing at 0).
    pub workers_seen: usize,
    pub stale_writes: usize,
    pub attempts_left_active: usize,
    pub illegal_edges: usize,
    /// Damaged checkpoints the workers set aside (note events).
    pub set_aside: usize,
    /// Steps trained again beyond one checkpoint interval (two after a damaged checkpoint),
    /// summed over every resumed attempt, and the most of one attempt.
    pub retrained_beyond: u64,
    pub retrained_beyond_max: u64,
    pub wall_seconds: f64,
    /// The slowest restart of `isoflop serve`, from its spawn to its listening line.
    pub slowest_start_seconds: f64,
    /// Orphaned workers a restarted coordinator stopped, the slowest to exit after its
    /// SIGTERM, and how many needed the SIGKILL after the grace (from the coordinators' logs).
    pub orphans_stopped: usize,
    pub orphan_stop_max_seconds: f64,
    pub orphans_sigkilled: usize,
    /// What went wrong, for the failure message.
    pub details: Vec<String>,
}

impl Counts {
    pub const HEADER: &'static str = "drill                kills  mid-sweep  worker-kills  oom/node-lost  truncated  sweeps  runs  attempts  \
        lost  dup-evals  two-live  watched  stale  active  illegal  set-aside  retrained>1ckpt(sum/max)  slowest-start  orphans(n/max/killed)  wall";

    pub fn row(&self) -> String {
        format!(
            "{:<20} {:>5}  {:>9}  {:>12}  {:>13}  {:>9}  {:>6}  {:>4}  {:>8}  {:>4}  {:>9}  {:>8}  {:>7}  {:>5}  {:>6}  {:>7}  {:>9}  {:>24}  {:>11.1} s  {:>20}  {:>5.0} s",
            self.mode,
            self.coordinator_kills,
            self.kills_mid_sweep,
            self.worker_kills,
            format!("{}/{}", self.ooms, self.nodes_lost),
            self.truncations,
            self.rounds,
            self.runs,
            self.attempts,
            self.runs_lost,
            self.evals_duplicated,
            self.two_live_moments,
            self.workers_seen,
            self.stale_writes,
            self.attempts_left_active,
            self.illegal_edges,
            self.set_aside,
            format!("{}/{}", self.retrained_beyond, self.retrained_beyond_max),
            self.slowest_start_seconds,
            format!("{}/{:.1} s/{}", self.orphans_stopped, self.orphan_stop_max_seconds, self.orphans_sigkilled),
            self.wall_seconds
        )
    }

    /// Every promised zero is zero.
    pub fn kept(&self) -> bool {
        self.runs_lost == 0
            && self.evals_duplicated == 0
            && self.two_live_moments == 0
            && self.stale_writes == 0
            && self.attempts_left_active == 0
            && self.illegal_edges == 0
    }
}

/// Prints the drill's row of the table (and appends it to `ISOFLOP_CHAOS_OUT`), then asserts
/// the promise: every promised zero, every kill made (nine in ten mid-sweep), every truncated
/// checkpoint found and set aside, a restarted `isoflop serve` listening within 10 s (it
/// waits for no worker an earlier one left: a stuck one held every restart up to its 30 s
/// SIGKILL grace before), and every orphan stopped within 10 s of its SIGTERM.
pub fn check(c: &Counts, kills: usize) {
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
    assert!(c.kept(), "the promise broke:\n{}", c.details.join("\n"));
    assert!(c.workers_seen >= c.runs, "the watcher saw {} workers of {} jobs: {c:?}", c.workers_seen, c.runs);
    assert_eq!(c.coordinator_kills, kills);
    assert!(c.kills_mid_sweep * 10 >= kills * 9, "the sweep ended too early for the drill: {c:?}");
    assert_eq!(c.set_aside, c.truncations, "every truncated checkpoint was found and set aside: {c:?}");
    assert!(c.slowest_start_seconds < 10.0, "a restart of serve took {:.1} s to listen", c.slowest_start_seconds);
    // An orphan whose coordinator died stops within seconds of its SIGTERM (it lingered a
    // whole lease, retrying a port that no longer existed, before issue 13).
    assert!(
        c.orphans_sigkilled == 0 && c.orphan_stop_max_seconds < 10.0,
        "orphans stopped slowly: the slowest after {:.1} s, {} needed SIGKILL",
        c.orphan_stop_max_seconds,
        c.orphans_sigkilled
    );
}

/// `ISOFLOP_CHAOS_KILLS` (default 10): the coordinator kills of each drill.
pub fn kills() -> usize {
    std::env::var("ISOFLOP_CHAOS_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

/// The drill's random moments: `ISOFLOP_CHAOS_SEED` (default 13) mixed with one salt a drill.
pub fn seed(salt: u64) -> u64 {
    let base = std::env::var("ISOFLOP_CHAOS_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(13);
    base ^ salt
}

/// A directory for a drill, by its real path (the watcher compares working directories);
/// `ISOFLOP_CHAOS_KEEP=1` keeps it (stores, logs, checkpoints) to look at. Hold the second
/// value as long as the drill runs.
pub fn drill_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    if std::env::var_os("ISOFLOP_CHAOS_KEEP").is_some() {
        eprintln!("drill directory kept: {}", path.display());
        let _ = dir.keep();
        (path, None)
    } else {
        (path, Some(dir))
    }
}

/// splitmix64: the drill's moments are reproducible from `ISOFLOP_CHAOS_SEED`.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + (self.unit() * (hi - lo) as f64) as u64)
    }
}

/// A live worker process of this drill, as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Worker {
    pid: i32,
    run_id: String,
    attempt: String,
}

/// The variable a Kubernetes drill's node agent puts in every pod's environment: the drill's
/// directory (pods run in the test's working directory, not the coordinator's).
pub const DRILL_ENV: &str = "ISOFLOP_CHAOS_DRILL";

/// Worker processes of the drill in `dir`: those whose working directory is `dir` (the
/// coordinators run there and their local workers inherit it, which tells this drill's workers
/// from those of other tests), or whose environment names it in [`DRILL_ENV`] (pods).
fn workers_in(dir: &Path) -> Vec<Worker> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    let marker = format!("{DRILL_ENV}={}", dir.display());
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let base = e.path();
        let here = std::fs::read_link(base.join("cwd")).ok().as_deref() == Some(dir);
        let Ok(env) = std::fs::read(base.join("environ")) else { continue };
        let mut run_id = None;
        let mut attempt = String::new();
        let mut marked = false;
        for var in env.split(|b| *b == 0) {
            let var = String::from_utf8_lossy(var);
            if let Some(v) = var.strip_prefix("ISOFLOP_RUN_ID=") {
                run_id = Some(v.to_string());
            } else if let Some(v) = var.strip_prefix("ISOFLOP_ATTEMPT=") {
                attempt = v.to_string();
            }
            marked |= var == marker;
        }
        if !(here || marked) {
            continue;
        }
        let Some(run_id) = run_id else { continue };
        let stat = std::fs::read_to_string(base.join("stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next());
        if matches!(state, Some('Z' | 'X') | None) {
            continue;
        }
        out.push(Worker { pid, run_id, attempt });
    }
    out
}

/// Samples `/proc` every 10 ms; counts each start of a moment when two workers of one run
/// are alive, and keeps the live workers for the drill to pick from.
struct Watcher {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<Worker>>>,
    episodes: Arc<Mutex<Vec<String>>>,
    /// Every worker seen, by pid and attempt.
    seen: Arc<Mutex<HashSet<Worker>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(dir: PathBuf) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::new()));
        let episodes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let (s, l, ep, d, sn) = (stop.clone(), live.clone(), episodes.clone(), dir.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let dir = d;
            let mut doubled: HashSet<String> = HashSet::new();
            while !s.load(Ordering::SeqCst) {
                let now = workers_in(&dir);
                let mut by_run: HashMap<&str, Vec<&Worker>> = HashMap::new();
                for w in &now {
                    by_run.entry(&w.run_id).or_default().push(w);
                }
                let mut still = HashSet::new();
                for (run, ws) in &by_run {
                    if ws.len() > 1 {
                        still.insert(run.to_string());
                        if !doubled.contains(*run) {
                            let who: Vec<String> = ws.iter().map(|w| format!("pid {} attempt {}", w.pid, w.attempt)).collect();
                            ep.lock().unwrap().push(format!("run {run}: {}", who.join(", ")));
                        }
                    }
                }
                doubled = still;
                sn.lock().unwrap().extend(now.iter().cloned());
                *l.lock().unwrap() = now;
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Watcher { dir, stop, live, episodes, seen, thread: Some(thread) }
    }

    fn live(&self) -> Vec<Worker> {
        self.live.lock().unwrap().clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // A drill that failed leaves no worker behind.
        workers_in(&self.dir).iter().for_each(|w| sigkill(w.pid));
    }
}

fn sigkill(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
}

/// One drill in `dir`.
pub struct Drill {
    dir: PathBuf,
    mode: Mode,
    config: PathBuf,
    port: u16,
    store: StoreLocation,
    rng: Rng,
    starts: usize,
    slowest_start: Duration,
    /// The sweep being run (see [`sweep`]), and the last one submitted to serve.
    round: usize,
    submitted: usize,
}

impl Drill {
    pub fn new(dir: &Path, mode: Mode, seed: u64) -> Drill {
        let port = free_port();
        let config = dir.join("serve.yaml");
        let store = match &mode {
            Mode::Run | Mode::Kubernetes(_) => StoreLocation::Sqlite(dir.join("state/isoflop.db")),
            Mode::ServeSqlite => {
                let db = dir.join("serve/isoflop.db");
                std::fs::write(
                    &config,
                    format!("listen: 127.0.0.1:{port}\nstore: {{sqlite: {}}}\nexecutor: {EXECUTOR}\n", db.display()),
                )
                .unwrap();
                StoreLocation::Sqlite(db)
            }
            Mode::ServePostgres(url) => {
                std::fs::write(
                    &config,
                    format!(
                        "listen: 127.0.0.1:{port}\nstore: {{postgres: {{url_env: ISOFLOP_CHAOS_DATABASE}}}}\n\
                         artifacts: {}\nexecutor: {EXECUTOR}\n",
                        dir.join("serve/runs").display()
                    ),
                )
                .unwrap();
                StoreLocation::Postgres(url.clone())
            }
        };
        let mut d = Drill {
            dir: dir.to_path_buf(),
            mode,
            config,
            port,
            store,
            rng: Rng(seed),
            starts: 0,
            slowest_start: Duration::ZERO,
            round: 0,
            submitted: 0,
        };
        d.next_round();
        d
    }

    /// The spec file of the current round.
    fn spec(&self) -> PathBuf {
        self.dir.join(format!("spec-{}.yaml", self.round))
    }

    /// Goes on with the next round's sweep.
    fn next_round(&mut self) {
        self.round += 1;
        let manifest = corpus().join("manifest.json");
        let mut text = sweep(self.round).replace("@MANIFEST@", &manifest.display().to_string());
        if let Mode::Kubernetes(k) = &self.mode {
            let executor = k.executor.replace("@PORT@", &self.port.to_string());
            text = text.replace(&format!("executor: {EXECUTOR}\n"), &executor).replace(
                "store: {sqlite: state/isoflop.db}",
                &format!("store: {{sqlite: state/isoflop.db, artifacts: {}}}", k.artifacts.display()),
            );
            assert!(text.contains("kind: kubernetes") && text.contains("artifacts: "), "the drill's sweep changed: {text}");
        }
        std::fs::write(self.spec(), text).unwrap();
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the coordinator in the drill's directory; for serve, waits until it listens and
    /// submits the sweep the first time.
    fn start(&mut self) -> Daemon {
        self.starts += 1;
        let log = self.dir.join(format!("coordinator-{:03}.log", self.starts));
        match &self.mode {
            Mode::Run | Mode::Kubernetes(_) => {
                let out = std::fs::File::create(&log).unwrap();
                let mut cmd = Command::new(bin());
                if let Mode::Kubernetes(k) = &self.mode {
                    cmd.env("KUBECONFIG", &k.kubeconfig);
                }
                Daemon(
                    cmd.args(["run", self.spec().to_str().unwrap(), "--plain"])
                        .current_dir(&self.dir)
                        .stdout(out.try_clone().unwrap())
                        .stderr(out)
                        .stdin(Stdio::null())
                        .spawn()
                        .unwrap(),
                )
            }
            Mode::ServeSqlite | Mode::ServePostgres(_) => {
                let env: Vec<(&str, &str)> = match &self.mode {
                    Mode::ServePostgres(url) => vec![("ISOFLOP_CHAOS_DATABASE", url.as_str())],
                    _ => vec![],
                };
                // The killed coordinator's PostgreSQL session may hold its lock a moment longer.
                let spawned = Instant::now();
                let deadline = spawned + Duration::from_secs(30);
                loop {
                    let mut d = spawn_serve_in(&self.config, &log, &env, Some(&self.dir));
                    let waited = Instant::now();
                    loop {
                        if std::fs::read_to_string(&log).unwrap_or_default().contains("isoflop serve: listening") {
                            self.slowest_start = self.slowest_start.max(spawned.elapsed());
                            self.submit();
                            return d;
                        }
                        if let Some(s) = d.0.try_wait().unwrap() {
                            let text = std::fs::read_to_string(&log).unwrap_or_default();
                            assert!(Instant::now() < deadline, "serve exited with {s}:\n{text}");
                            break;
                        }
                        assert!(
                            waited.elapsed() < Duration::from_secs(30),
                            "serve did not listen in 30 s:\n{}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Submits the current round's sweep to the serving coordinator, once.
    fn submit(&mut self) {
        if self.submitted < self.round {
            let out = isoflop(&["submit", self.spec().to_str().unwrap(), "--coordinator", &self.url()]);
            assert!(out.status.success(), "{}", show(&out));
            self.submitted = self.round;
        }
    }

    fn open(&self) -> Option<Arc<dyn Store>> {
        isoflop_store::open(&self.store).ok()
    }

    /// Whether every job of the sweep is in a terminal state (false before the store exists).
    fn finished(&self) -> bool {
        let Some(store) = self.open() else { return false };
        let runs = store.sweep_runs(&sweep_name(self.round)).unwrap_or_default();
        !runs.is_empty() && runs.iter().all(|r| r.state.is_terminal())
    }

    /// The newest checkpoint of an unfinished training run, to truncate.
    fn victim_checkpoint(&mut self) -> Option<PathBuf> {
        let store = self.open()?;
        let runs = store.sweep_runs(&sweep_name(self.round)).ok()?;
        let mut candidates = Vec::new();
        for r in runs.iter().filter(|r| r.is_training() && !r.state.is_terminal()) {
            let steps = serde_json::from_str::<isoflop_core::RunConfig>(&r.config_json).ok()?.recipe.steps;
            let newest = store.checkpoints(&r.run_id).ok()?.into_iter().max_by_key(|c| c.step);
            if let Some(c) = newest.filter(|c| c.step < steps) {
                // The newest on disk may be newer than the store knows.
                let dir = Path::new(&c.path).parent()?.to_path_buf();
                if let Some((_, p)) = isoflop_train::checkpoint::latest(&dir) {
                    candidates.push(p);
                }
            }
        }
        if candidates.is_empty() {
            return None;
        }
        let i = (self.rng.next() % candidates.len() as u64) as usize;
        Some(candidates.swap_remove(i))
    }

    /// Runs the drill: `kills` coordinator kills, then to the end; returns the counts.
    pub fn run(self, kills: usize) -> Counts {
        self.run_with(kills, |_| Injected::None)
    }

    /// The moment between a coordinator's start and its kill: longer on Kubernetes, where a
    /// restarted `isoflop run` first lists the cluster's Jobs and a pod takes a while to start.
    fn moment(&mut self) -> Duration {
        match self.mode {
            Mode::Kubernetes(_) => self.rng.millis(1500, 6000),
            _ => self.rng.millis(400, 2500),
        }
    }

    /// [`Drill::run`], calling `inject(k)` before the `k`th coordinator kill while the
    /// coordinator lives: the caller's faults (a pod OOMKilled, a node lost), counted by what
    /// it returns.
    pub fn run_with(mut self, kills: usize, mut inject: impl FnMut(usize) -> Injected) -> Counts {
        let t0 = Instant::now();
        let watcher = Watcher::start(self.dir.clone());
        let mut c = Counts { mode: self.mode.name().into(), ..Counts::default() };
        for k in 0..kills {
            let mut coordinator = self.start();
            let wait = self.moment();
            std::thread::sleep(wait);
            // A sweep that finished during the wait: the next one, and another moment (a kill
            // now would hit an idle coordinator, or one `isoflop run` already left).
            while self.finished() {
                self.next_round();
                match self.mode {
                    Mode::Run | Mode::Kubernetes(_) => {
                        coordinator.0.wait().unwrap();
                        coordinator = self.start();
                    }
                    _ => self.submit(),
                }
                let wait = self.moment();
                std::thread::sleep(wait);
            }
            let injected = inject(k);
            match injected {
                Injected::None => {}
                Injected::Oom => c.ooms += 1,
                Injected::NodeLost => c.nodes_lost += 1,
            }
            if injected != Injected::None {
                // Sometimes the coordinator sees the fault before it dies, sometimes not.
                let wait = self.rng.millis(0, 3000);
                std::thread::sleep(wait);
            }
            if self.rng.unit() < 0.3 {
                let live = watcher.live();
                if !live.is_empty() {
                    let w = &live[(self.rng.next() % live.len() as u64) as usize];
                    sigkill(w.pid);
                    c.worker_kills += 1;
                    std::thread::sleep(self.rng.millis(100, 1000));
                }
            }
            sigkill(coordinator.0.id() as i32);
            coordinator.0.wait().unwrap();
            c.coordinator_kills += 1;
            if self.finished() {
                self.next_round();
            } else {
                c.kills_mid_sweep += 1;
            }
            if k % 4 == 3 {
                // Kill the orphans too, so that the damaged checkpoint stays the newest one.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let live = workers_in(&self.dir);
                    if live.is_empty() {
                        break;
                    }
                    live.iter().for_each(|w| sigkill(w.pid));
                    assert!(Instant::now() < deadline, "workers did not die: {live:?}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                if let Some(p) = self.victim_checkpoint() {
                    let state = p.join(isoflop_train::checkpoint::STATE_FILE);
                    let len = std::fs::metadata(&state).map(|m| m.len()).unwrap_or(0);
                    if len > 0 {
                        std::fs::OpenOptions::new().write(true).open(&state).unwrap().set_len(len / 2).unwrap();
                        c.truncations += 1;
                    }
                }
            }
        }
        // To the end.
        let mut coordinator = self.start();
        let deadline = Instant::now() + Duration::from_secs(900);
        match self.mode {
            Mode::Run | Mode::Kubernetes(_) => loop {
                if let Some(s) = coordinator.0.try_wait().unwrap() {
                    let log = std::fs::read_to_string(self.dir.join(format!("coordinator-{:03}.log", self.starts)));
                    assert!(s.success(), "the last isoflop run failed ({s}):\n{}", log.unwrap_or_default());
                    break;
                }
                assert!(Instant::now() < deadline, "the sweep did not finish in 900 s\n{}", self.stuck(None));
                std::thread::sleep(Duration::from_millis(200));
            },
            _ => {
                while !self.finished() {
                    let exited = coordinator.0.try_wait().unwrap();
                    assert!(
                        exited.is_none() && Instant::now() < deadline,
                        "the sweep did not finish in 900 s\n{}",
                        self.stuck(exited)
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(coordinator.0.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                coordinator.0.wait().unwrap();
            }
        }
        // Every worker gone (an orphan would show up as an active attempt below anyway).
        let settle = Instant::now() + Duration::from_secs(30);
        while !workers_in(&self.dir).is_empty() && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(50));
        }
        let episodes = watcher.episodes.clone();
        c.workers_seen = watcher.seen.lock().unwrap().len();
        drop(watcher);
        let episodes = episodes.lock().unwrap().clone();
        c.two_live_moments = episodes.len();
        c.details.extend(episodes.into_iter().map(|e| format!("two live workers: {e}")));
        self.audit(&mut c);
        c.wall_seconds = t0.elapsed().as_secs_f64();
        c.slowest_start_seconds = self.slowest_start.as_secs_f64();
        self.orphan_stops(&mut c);
        c
    }

    /// Why the drill's sweep is not finished: the last coordinator (its exit, if it exited, and
    /// its log's tail), then every unfinished job with its attempts and newest events.
    fn stuck(&self, exited: Option<std::process::ExitStatus>) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let log = std::fs::read_to_string(self.dir.join(format!("coordinator-{:03}.log", self.starts))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let _ = writeln!(
            out,
            "coordinator {} ({}); the last {} lines of its log:",
            self.starts,
            exited.map_or("still running".to_string(), |s| format!("exited: {s}")),
            lines.len().min(60)
        );
        for l in &lines[lines.len().saturating_sub(60)..] {
            let _ = writeln!(out, "  | {l}");
        }
        let Some(store) = self.open() else { return out + "the store does not open\n" };
        let runs = store.sweep_runs(&sweep_name(self.round)).unwrap_or_default();
        let _ = writeln!(out, "round {}: {} jobs", self.round, runs.len());
        for r in runs.iter().filter(|r| !r.state.is_terminal()) {
            let _ = writeln!(
                out,
                "job {} {} {:?} attempts {} retries {} not before {} ({})",
                &r.run_id[..12],
                r.name,
                r.state,
                r.attempts,
                r.retries_used,
                r.not_before_ms,
                r.message
            );
            for a in store.attempts(&r.run_id).unwrap_or_default() {
                let _ = writeln!(
                    out,
                    "  attempt {} {:?} ref {:?} lease {} ended {:?} ({})",
                    a.attempt, a.outcome, a.executor_ref, a.lease_expires_ms, a.ended_ms, a.message
                );
            }
            let events = store.events(&r.run_id).unwrap_or_default();
            for e in &events[events.len().saturating_sub(6)..] {
                let _ = writeln!(out, "  event {} {:?} -> {:?} at {} ({})", e.id, e.from, e.to, e.at_ms, e.message);
            }
            // An evaluation job waits for its checkpoint: what the store and the disk hold.
            if let Some(e) = &r.eval
                && let Ok(Some(parent)) = store.run(&e.parent)
            {
                let ckpts = store.checkpoints(&e.parent).unwrap_or_default();
                let rows: Vec<String> = ckpts.iter().map(|c| format!("{}@attempt{}", c.step, c.attempt)).collect();
                let _ = writeln!(
                    out,
                    "  waits for step {} of {} ({:?}, {} attempts); checkpoint rows {rows:?}",
                    e.step, parent.name, parent.state, parent.attempts
                );
                if let Some(dir) = ckpts.last().and_then(|c| Path::new(&c.path).parent().map(Path::to_path_buf)) {
                    let mut names: Vec<String> = std::fs::read_dir(&dir)
                        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                        .unwrap_or_default();
                    names.sort();
                    let _ = writeln!(out, "  on disk: {names:?}");
                }
                let events = store.events(&e.parent).unwrap_or_default();
                for ev in events.iter().filter(|ev| ev.from == ev.to || ev.to.is_terminal()) {
                    let _ = writeln!(out, "  parent event {} attempt {:?}: {:?} ({})", ev.id, ev.attempt, ev.to, ev.message);
                }
            }
        }
        let live = workers_in(&self.dir);
        let _ = writeln!(out, "live workers: {live:?}");
        out
    }

    /// What the coordinators logged of the orphans they stopped.
    fn orphan_stops(&self, c: &mut Counts) {
        for n in 1..=self.starts {
            let log = std::fs::read_to_string(self.dir.join(format!("coordinator-{n:03}.log"))).unwrap_or_default();
            for line in log.lines() {
                if let Some(rest) = line.split("the orphaned worker exited after ").nth(1) {
                    c.orphans_stopped += 1;
                    let secs: f64 = rest.split(' ').next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
                    c.orphan_stop_max_seconds = c.orphan_stop_max_seconds.max(secs);
                }
                c.orphans_sigkilled += usize::from(line.contains("the orphaned worker did not stop in"));
            }
        }
    }

    /// Reads the store for what the promise forbids.
    fn audit(&self, c: &mut Counts) {
        let store = self.open().expect("the store opens");
        let mut runs = Vec::new();
        for round in 1..=self.round {
            runs.extend(store.sweep_runs(&sweep_name(round)).unwrap());
        }
        c.rounds = self.round;
        c.runs = runs.len();
        for r in &runs {
            if r.state != RunState::Succeeded {
                c.runs_lost += 1;
                c.details.push(format!("{} ended {}: {}", r.name, r.state, r.message));
            }
            let attempts = store.attempts(&r.run_id).unwrap();
            c.attempts += attempts.len();
            let ended: BTreeMap<u64, Option<i64>> = attempts.iter().map(|a| (a.attempt, a.ended_ms)).collect();
            for a in attempts.iter().filter(|a| a.outcome == AttemptOutcome::Active) {
                c.attempts_left_active += 1;
                c.details.push(format!("{} attempt {} left active", r.name, a.attempt));
            }
            let late = |attempt: u64, at_ms: i64| ended.get(&attempt).copied().flatten().is_some_and(|e| at_ms > e);
            let progress = store.progress(&r.run_id).unwrap();
            for p in progress.iter().filter(|p| late(p.attempt, p.at_ms)) {
                c.stale_writes += 1;
                c.details.push(format!("{}: progress of ended attempt {} at step {}", r.name, p.attempt, p.step));
            }
            for k in store.checkpoints(&r.run_id).unwrap().iter().filter(|k| late(k.attempt, k.at_ms)) {
                c.stale_writes += 1;
                c.details.push(format!("{}: checkpoint of ended attempt {} at step {}", r.name, k.attempt, k.step));
            }
            let events = store.events(&r.run_id).unwrap();
            let mut state = None;
            let mut damaged_before: HashSet<u64> = HashSet::new();
            for e in &events {
                if e.from == e.to {
                    // A note (a damaged checkpoint set aside): legal only in the current state.
                    c.set_aside += 1;
                    if let Some(a) = e.attempt {
                        damaged_before.insert(a);
                    }
                } else if !e.from.can_transition(e.to) {
                    c.illegal_edges += 1;
                    c.details.push(format!("{}: illegal edge {} -> {}", r.name, e.from, e.to));
                }
                if state.is_some_and(|s| s != e.from) {
                    c.illegal_edges += 1;
                    c.details.push(format!("{}: event from {} after the run was {}", r.name, e.from, state.unwrap()));
                }
                state = Some(e.to);
            }
            if r.is_training() {
                let mut attempts = attempts.clone();
                attempts.sort_by_key(|a| a.attempt);
                // Attempts that trained (an attempt killed before its first report resumed
                // nothing).
                for a in attempts.iter().skip(1).filter(|a| progress.iter().any(|p| p.attempt == a.attempt)) {
                    let reached = progress.iter().filter(|p| p.attempt < a.attempt).map(|p| p.step).max().unwrap_or(0);
                    let allowed = if damaged_before.contains(&a.attempt) { 2 * CHECKPOINT_EVERY } else { CHECKPOINT_EVERY };
                    let beyond = reached.saturating_sub(a.resume_step).saturating_sub(allowed);
                    c.retrained_beyond += beyond;
                    c.retrained_beyond_max = c.retrained_beyond_max.max(beyond);
                }
            } else {
                let succeeded = attempts.iter().filter(|a| a.outcome == AttemptOutcome::Succeeded).count();
                if succeeded > 1 {
                    c.evals_duplicated += succeeded - 1;
                    c.details.push(format!("{}: {succeeded} successful evaluation attempts", r.name));
                }
                let results = store.eval_results(&r.run_id).unwrap();
                let keys: HashSet<(String, String)> = results.iter().map(|m| (m.subset.clone(), m.metric.clone())).collect();
                if keys.len() != results.len() {
                    c.evals_duplicated += results.len() - keys.len();
                    c.details.push(format!("{}: duplicated result rows", r.name));
                }
            }
        }
    }
}
