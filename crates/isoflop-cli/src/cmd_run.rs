//! `isoflop run SPEC` and `isoflop resume SWEEP`: the whole sweep on this machine with the
//! coordinator in-process, local workers and SQLite, a live display, and a final table.

use crate::cmd_status::{final_table, live_block, offline_coordinator, open_store, summary_line};
use crate::exit::{CliError, CliResult, input};
use anyhow::{Context, anyhow};
use isoflop_coordinator::resolve::PlannedSweep;
use isoflop_coordinator::{Coordinator, CoordinatorConfig, Executor, ExecutorEvent, LocalExecutor, serve};
use isoflop_core::RunState;
use isoflop_core::spec::{ExecutorSpec, LoadedSpec, SweepSpec};
use isoflop_k8s::KubernetesExecutor;
use isoflop_store::{SqliteStore, Store, StoreError};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `isoflop run SPEC`.
pub fn run(spec_path: &Path, plain: bool) -> CliResult {
    let loaded = SweepSpec::load(spec_path).map_err(input)?;
    // Validate data and plan before anything touches the store.
    let planned = PlannedSweep::from_spec(&loaded).map_err(input)?;
    let store_path = loaded.store_path();
    run_loaded(&loaded, &planned, &store_path, plain)
}

/// `isoflop resume SWEEP`: requeue failed (and cancelled) runs, then run the sweep.
pub fn resume(store_path: &Path, sweep: &str, include_diverged: bool, no_run: bool, plain: bool) -> CliResult {
    let store = open_store(store_path)?;
    let row = store.sweep(sweep)?.ok_or_else(|| input(anyhow!("sweep `{sweep}` not found in {}", store_path.display())))?;
    let loaded = stored_spec(&row).map_err(input)?;
    let n = offline_coordinator(store.clone()).resume_sweep(sweep, include_diverged)?;
    println!("requeued {n} run(s) of sweep {sweep}");
    drop(store);
    if no_run {
        return Ok(());
    }
    let planned = PlannedSweep::from_spec(&loaded).map_err(input)?;
    run_loaded(&loaded, &planned, store_path, plain)
}

/// The spec a sweep was submitted with, as stored.
pub fn stored_spec(row: &isoflop_store::SweepRow) -> Result<LoadedSpec, isoflop_core::spec::SpecError> {
    let path = PathBuf::from(&row.spec_path);
    let spec = SweepSpec::parse(&path, &row.spec_yaml)?;
    Ok(LoadedSpec { spec, path, text: row.spec_yaml.clone() })
}

/// An exclusive lock on the store for the life of one `isoflop run`.
pub fn lock_store(store_path: &Path) -> Result<std::fs::File, CliError> {
    let lock_path = store_path.with_extension("lock");
    if let Some(d) = lock_path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(input(anyhow!(
            "another `isoflop run` is using the store {} (lock {})",
            store_path.display(),
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow!("cannot lock {}: {e}", lock_path.display()).into()),
    }
}

fn run_loaded(loaded: &LoadedSpec, planned: &PlannedSweep, store_path: &Path, plain: bool) -> CliResult {
    let _lock = lock_store(store_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("tokio runtime")?;
    rt.block_on(run_async(loaded, planned, store_path, plain))
}

async fn run_async(loaded: &LoadedSpec, planned: &PlannedSweep, store_path: &Path, plain: bool) -> CliResult {
    let sweep = loaded.spec.name.clone();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(store_path)?);
    let max_parallel = loaded.spec.executor.max_parallel();
    let hosted = Hosted::new(store.clone(), &loaded.spec.executor, &Endpoint::default(), loaded.artifacts_dir(), None).await?;
    let coord = hosted.coord.clone();
    let submitted = match coord.submit_planned(&loaded.spec, planned) {
        Ok(s) => s,
        Err(isoflop_coordinator::CoordinatorError::Store(e @ StoreError::SweepConflict { .. })) => return Err(input(e)),
        Err(isoflop_coordinator::CoordinatorError::Spec(e)) => return Err(input(e)),
        Err(e) => return Err(e.into()),
    };
    let recovered = coord.recover()?;
    let runs = store.sweep_runs(&sweep)?;
    let done = runs.iter().filter(|r| r.state == RunState::Succeeded).count();
    println!(
        "sweep {sweep}: {} runs ({} already succeeded{}{}), store {}, up to {max_parallel} in parallel",
        submitted.runs,
        done,
        if submitted.existed { ", continuing" } else { "" },
        if submitted.reused > 0 && !submitted.existed {
            format!(", {} shared with other sweeps", submitted.reused)
        } else {
            String::new()
        },
        store_path.display()
    );
    if recovered > 0 {
        println!("requeued {recovered} run(s) interrupted in an earlier session; they resume from their checkpoints");
    }

    let (kube, serving) = hosted.start(None);

    let live = !plain && std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut drawn = 0usize;
    let mut last_plain = String::new();
    let mut last_plain_at = Instant::now() - Duration::from_secs(3600);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
    let interrupted = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break true,
            _ = sigterm.recv() => break true,
            _ = tick.tick() => {}
        }
        let runs = store.sweep_runs(&sweep)?;
        let block = live_block(&sweep, &runs, started.elapsed().as_secs_f64());
        let mut out = std::io::stdout().lock();
        if live {
            if drawn > 0 {
                let _ = write!(out, "\x1b[{drawn}A\x1b[J");
            }
            let _ = write!(out, "{block}");
            drawn = block.lines().count();
        } else {
            // Plain output: print when the counts change, and every 30 s regardless.
            let summary = summary_line(&sweep, &runs);
            if summary != last_plain || last_plain_at.elapsed() >= Duration::from_secs(30) {
                let _ = write!(out, "{block}");
                last_plain = summary;
                last_plain_at = Instant::now();
            }
        }
        let _ = out.flush();
        if runs.iter().all(|r| r.state.is_terminal()) {
            break false;
        }
    };
    if interrupted {
        println!("\ninterrupted: asking workers to checkpoint and stop (Ctrl-C again to quit at once)");
        tokio::spawn(async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("quitting; workers stop on their own when they lose the coordinator");
            std::process::exit(130);
        });
    }
    serving.stop().await;

    let runs = store.sweep_runs(&sweep)?;
    println!();
    print!("{}", final_table(store.as_ref(), &runs)?);
    if let Some(k) = &kube {
        println!("{}", kube_calls_line(k, runs.len()));
    }
    let results_at = loaded.artifacts_dir();
    println!(
        "elapsed {}; results in {} (`isoflop status {sweep}`), checkpoints and logs under {}",
        crate::table::duration(started.elapsed().as_secs_f64()),
        store_path.display(),
        results_at.display()
    );
    if interrupted {
        return Err(CliError::Interrupted);
    }
    write_sweep_report(store.as_ref(), &sweep, store_path);
    let failed = runs.iter().filter(|r| r.state == RunState::Failed).count();
    if failed > 0 {
        return Err(anyhow!(
            "{failed} run(s) failed; see `isoflop status {sweep}` and `isoflop logs RUN`, then `isoflop resume {sweep}`"
        )
        .into());
    }
    Ok(())
}

/// Where a hosted coordinator listens and how its workers reach it; `None` takes the
/// executor's defaults (local: loopback on a free port; Kubernetes: `executor.listen` and
/// `executor.coordinator_url`).
#[derive(Debug, Default)]
pub struct Endpoint {
    pub listen: Option<String>,
    pub worker_url: Option<String>,
}

/// A coordinator with its executor and a bound listener, not yet serving: what `isoflop run`
/// and `isoflop serve` share.
pub struct Hosted {
    pub coord: Coordinator,
    pub listener: TcpListener,
    pub worker_url: String,
    kube: Option<Arc<KubernetesExecutor>>,
    exit_rx: tokio::sync::mpsc::UnboundedReceiver<ExecutorEvent>,
}

impl Hosted {
    /// Builds the executor an [`ExecutorSpec`] describes and a coordinator over `store` that
    /// launches through it. `threads_per_run`: see [`CoordinatorConfig::threads_per_run`].
    pub async fn new(
        store: Arc<dyn Store>,
        executor: &ExecutorSpec,
        endpoint: &Endpoint,
        artifacts_dir: PathBuf,
        threads_per_run: Option<u64>,
    ) -> anyhow::Result<Hosted> {
        let (exit_tx, exit_rx) = tokio::sync::mpsc::unbounded_channel();
        let listen = endpoint.listen.clone().unwrap_or_else(|| match executor {
            ExecutorSpec::Local { .. } => "127.0.0.1:0".into(),
            ExecutorSpec::Kubernetes(k) => k.listen.clone(),
        });
        let listener = TcpListener::bind(&listen).await.with_context(|| format!("cannot bind the coordinator to {listen}"))?;
        let (url, exec, kube): (_, Arc<dyn Executor>, _) = match executor {
            ExecutorSpec::Local { max_parallel, .. } => {
                let mut addr = listener.local_addr()?;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let url = endpoint.worker_url.clone().unwrap_or_else(|| format!("http://{addr}"));
                let program = std::env::current_exe().context("cannot find the isoflop binary")?;
                (url, Arc::new(LocalExecutor::new(program, *max_parallel as usize, exit_tx)), None)
            }
            ExecutorSpec::Kubernetes(k) => {
                let exec = Arc::new(KubernetesExecutor::connect((**k).clone(), artifacts_dir.clone(), exit_tx).await?);
                let url = endpoint.worker_url.clone().unwrap_or_else(|| k.coordinator_url.clone());
                (url, exec.clone() as Arc<dyn Executor>, Some(exec))
            }
        };
        let mut cfg = CoordinatorConfig::for_executor(executor, url.clone(), artifacts_dir);
        cfg.threads_per_run = threads_per_run;
        let coord = Coordinator::new(store, exec, cfg);
        Ok(Hosted { coord, listener, worker_url: url, kube, exit_rx })
    }

    /// Serves the worker and control APIs and runs the scheduler until [`Serving::stop`].
    pub fn start(self, admin_token: Option<String>) -> (Option<Arc<KubernetesExecutor>>, Serving) {
        let server_stop = CancellationToken::new();
        let server = tokio::spawn(serve(self.coord.clone(), self.listener, admin_token, server_stop.clone()));
        let sched_stop = CancellationToken::new();
        let scheduler = tokio::spawn(self.coord.clone().run_scheduler(self.exit_rx, sched_stop.clone()));
        (self.kube, Serving { server_stop, server, sched_stop, scheduler })
    }
}

/// A coordinator serving and scheduling.
pub struct Serving {
    server_stop: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    sched_stop: CancellationToken,
    scheduler: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Stops scheduling (live local workers checkpoint and stop; Kubernetes Jobs are left
    /// running for the next coordinator to adopt), then stops serving.
    pub async fn stop(self) {
        self.sched_stop.cancel();
        let _ = self.scheduler.await;
        self.server_stop.cancel();
        match self.server.await {
            Ok(Err(e)) => tracing::warn!("gRPC server: {e}"),
            Err(e) => tracing::warn!("gRPC server task: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

/// `kubernetes: N API calls for R runs (...)`.
pub fn kube_calls_line(k: &KubernetesExecutor, runs: usize) -> String {
    let calls = k.api_calls();
    let kinds: Vec<String> = calls.by_kind().iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!(
        "kubernetes: {} API calls for {} runs ({:.1} per run): {}",
        calls.total(),
        runs,
        calls.total() as f64 / runs.max(1) as f64,
        kinds.join(", ")
    )
}

/// Fits the finished sweep and writes its report beside the store (`reports/SWEEP/`). A sweep
/// that cannot be fitted yet (too few sizes per budget) gets a note, not an error.
fn write_sweep_report(store: &dyn Store, sweep: &str, store_path: &Path) {
    let dir = store_path.parent().unwrap_or(Path::new(".")).join("reports").join(sweep);
    let result = crate::cmd_fit::table_from_store(store, sweep).and_then(|(table, notes)| {
        let mut report = isoflop_fit::fit_all(&table, &isoflop_fit::FitOptions::default())?;
        report.notes.extend(notes);
        crate::cmd_report::write_report(&report, &table, &format!("sweep {sweep}"), &dir)?;
        Ok(report)
    });
    match result {
        Ok(r) => {
            let iso = &r.isoflop;
            let a = iso
                .n_opt_exponent
                .map(|a| format!("N* ~ C^{a:.3}"))
                .unwrap_or_else(|| "no N* law (too few bracketed budgets)".into());
            println!("scaling-law report: {} ({a}); `isoflop fit {sweep}` prints it", dir.join("report.html").display());
        }
        Err(e) => println!("no scaling-law report yet: {e:#}"),
    }
}
