//! `isoflop run SPEC` and `isoflop resume SWEEP`: the whole sweep on this machine with the
//! coordinator in-process, local workers and SQLite, a live display, and a final table.

use crate::cmd_status::{final_table, live_block, offline_coordinator, open_store, summary_line};
use crate::exit::{CliError, CliResult, input};
use anyhow::{Context, anyhow};
use isoflop_coordinator::resolve::PlannedSweep;
use isoflop_coordinator::{Coordinator, CoordinatorConfig, Executor, LocalExecutor, serve};
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
fn lock_store(store_path: &Path) -> Result<std::fs::File, CliError> {
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
    let (exit_tx, exit_rx) = tokio::sync::mpsc::unbounded_channel();
    let max_parallel = loaded.spec.executor.max_parallel();
    let (listener, url, exec, kube): (_, _, Arc<dyn Executor>, _) = match &loaded.spec.executor {
        ExecutorSpec::Local { .. } => {
            let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot bind the coordinator to loopback")?;
            let url = format!("http://{}", listener.local_addr()?);
            let program = std::env::current_exe().context("cannot find the isoflop binary")?;
            (listener, url, Arc::new(LocalExecutor::new(program, max_parallel as usize, exit_tx)), None)
        }
        ExecutorSpec::Kubernetes(k) => {
            let listener =
                TcpListener::bind(&k.listen).await.with_context(|| format!("cannot bind the coordinator to {}", k.listen))?;
            let exec = Arc::new(KubernetesExecutor::connect((**k).clone(), loaded.artifacts_dir(), exit_tx).await?);
            (listener, k.coordinator_url.clone(), exec.clone() as Arc<dyn Executor>, Some(exec))
        }
    };
    let coord = Coordinator::new(store.clone(), exec, CoordinatorConfig::from_spec(loaded, url));
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

    let server_stop = CancellationToken::new();
    let server = tokio::spawn(serve(coord.clone(), listener, None, server_stop.clone()));
    let sched_stop = CancellationToken::new();
    let scheduler = tokio::spawn(coord.clone().run_scheduler(exit_rx, sched_stop.clone()));

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
    sched_stop.cancel();
    let _ = scheduler.await;
    server_stop.cancel();
    let _ = server.await;

    let runs = store.sweep_runs(&sweep)?;
    println!();
    print!("{}", final_table(store.as_ref(), &runs)?);
    if let Some(k) = &kube {
        let calls = k.api_calls();
        let kinds: Vec<String> = calls.by_kind().iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "kubernetes: {} API calls for {} runs ({:.1} per run): {}",
            calls.total(),
            runs.len(),
            calls.total() as f64 / runs.len().max(1) as f64,
            kinds.join(", ")
        );
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
