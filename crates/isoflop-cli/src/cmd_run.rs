//! `isoflop run SPEC` and `isoflop resume SWEEP`: the whole sweep on this machine with the
//! coordinator in-process (`isoflop_server::Host`), a live display, a final table, and the
//! scaling-law report.

use crate::args::{RemoteArgs, StoreArgs};
use crate::exit::{CliError, CliResult, input, server};
use crate::render::status::{final_table, live_block, summary_line};
use crate::render::table::duration;
use anyhow::{Context, anyhow};
use isoflop_coordinator::resolve::PlannedSweep;
use isoflop_coordinator::{CoordinatorError, stored_spec, sweep_settled};
use isoflop_core::RunState;
use isoflop_core::spec::{LoadedSpec, SweepSpec};
use isoflop_fit::relative::Verdict;
use isoflop_server::host::kube_calls_line;
use isoflop_server::{Endpoint, Host, StoreLock};
use isoflop_store::{RunResults, Store, StoreError, StoreLocation};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `isoflop run SPEC`.
pub fn run(spec_path: &Path, plain: bool, http: &str) -> CliResult {
    let loaded = SweepSpec::load(spec_path).map_err(input)?;
    // Validate data and plan before anything touches the store.
    let planned = PlannedSweep::from_spec(&loaded).map_err(input)?;
    let location = loaded.store_location().map_err(input)?;
    run_loaded(&loaded, &planned, &location, plain, http)
}

/// `isoflop resume SWEEP`: requeue failed (and cancelled) runs through the control API, then
/// run the sweep here (unless `--no-run`, or a daemon runs it).
pub fn resume(
    sweep: &str,
    include_diverged: bool,
    no_run: bool,
    plain: bool,
    http: &str,
    store: &StoreArgs,
    remote: &RemoteArgs,
) -> CliResult {
    crate::control::requeue(sweep, include_diverged, store, remote)?;
    if no_run || remote.coordinator().is_some() {
        return Ok(());
    }
    let row = isoflop_store::open(&store.store)?
        .sweep(sweep)?
        .ok_or_else(|| input(anyhow!("sweep `{sweep}` not found in {}", store.store)))?;
    let loaded = stored_spec(&row).map_err(input)?;
    let planned = PlannedSweep::from_spec(&loaded).map_err(input)?;
    run_loaded(&loaded, &planned, &store.store, plain, http)
}

fn run_loaded(loaded: &LoadedSpec, planned: &PlannedSweep, location: &StoreLocation, plain: bool, http: &str) -> CliResult {
    let _lock = StoreLock::acquire(location).map_err(server)?;
    // Opened here, not on the async runtime: the store's calls block.
    let store = isoflop_store::open(location)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("tokio runtime")?;
    rt.block_on(run_async(loaded, planned, store, location, plain, http))
}

async fn run_async(
    loaded: &LoadedSpec,
    planned: &PlannedSweep,
    store: Arc<dyn Store>,
    location: &StoreLocation,
    plain: bool,
    http: &str,
) -> CliResult {
    let sweep = loaded.spec.name.clone();
    // The page's port first: a taken one stops the run before anything is submitted.
    let http = match http {
        "off" => None,
        addr => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| server(isoflop_server::ServerError::Bind { addr: addr.to_string(), source }))?,
        ),
    };
    let max_parallel = loaded.spec.executor.max_parallel();
    let host = Host::new(store.clone(), &loaded.spec.executor, &Endpoint::default(), loaded.artifacts_dir(), None)
        .await
        .map_err(server)?;
    let coord = host.coord.clone();
    // The store's calls block: off the async runtime, here and below.
    let (planned, name) = (planned.clone(), sweep.clone());
    let (submitted, recovered, runs) = coord
        .blocking(move |c| {
            let submitted = match c.submit_planned(&planned) {
                Ok(s) => s,
                Err(CoordinatorError::Store(e @ StoreError::SweepConflict { .. })) => return Err(input(e)),
                Err(CoordinatorError::Spec(e)) => return Err(input(e)),
                Err(e) => return Err(e.into()),
            };
            Ok::<_, CliError>((submitted, c.recover()?, c.sweep_runs(&name)?))
        })
        .await?;
    let done = runs.iter().filter(|r| r.is_training() && r.state == RunState::Succeeded).count();
    let evals_done = runs.iter().filter(|r| !r.is_training() && r.state == RunState::Succeeded).count();
    println!(
        "sweep {sweep}: {} runs ({} already succeeded{}{}), {} evaluation jobs ({evals_done} already succeeded{}), store {}, \
         up to {max_parallel} in parallel",
        submitted.runs,
        done,
        if submitted.existed { ", continuing" } else { "" },
        if submitted.reused > 0 && !submitted.existed && !submitted.updated {
            format!(", {} shared with other sweeps", submitted.reused)
        } else {
            String::new()
        },
        submitted.evals,
        if submitted.updated { "; the spec changed (it only adds), the stored spec is updated" } else { "" },
        location
    );
    let again = crate::cmd_control::requeued_note(submitted.requeued);
    if !again.is_empty() {
        println!("{}", again.trim_start_matches("; "));
    }
    for line in crate::cmd_run::recovered_lines(&recovered) {
        println!("{line}");
    }

    let serving = host.start(None);
    let http_server = match http {
        None => None,
        Some(l) => {
            println!("web page: http://{}/sweeps/{sweep}", l.local_addr()?);
            Some(isoflop_server::http::HttpServer::start(l, serving.http_state()))
        }
    };
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
        let name = sweep.clone();
        let runs = coord.blocking(move |c| c.sweep_runs(&name)).await?;
        let block = live_block(&sweep, &runs, started.elapsed().as_secs_f64());
        let mut out = std::io::stdout().lock();
        // A terminal that went away is no reason to stop the sweep: display errors are ignored.
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
        if sweep_settled(&runs) {
            break false;
        }
    };
    if interrupted {
        println!("\ninterrupted: asking workers to checkpoint and stop (Ctrl-C again to quit at once)");
        tokio::spawn(async {
            // A second Ctrl-C quits at once; without a handler there is nothing to wait for.
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("quitting; workers stop on their own when they lose the coordinator");
                std::process::exit(130);
            }
        });
    }
    let kube_line = serving.kubernetes().map(|k| k.api_calls().clone());
    serving.stop().await;
    if let Some(h) = http_server {
        h.stop().await;
    }

    let name = sweep.clone();
    let (runs, with_evals) = coord
        .blocking(move |c| {
            let runs = c.sweep_runs(&name)?;
            let with_evals = runs
                .iter()
                .filter(|r| r.is_training())
                .map(|r| {
                    let evals = c.store().evals(&r.run_id)?;
                    Ok(RunResults { run: r.clone(), evals, metrics: Vec::new(), attempts: Vec::new() })
                })
                .collect::<Result<Vec<_>, CoordinatorError>>()?;
            Ok::<_, CoordinatorError>((runs, with_evals))
        })
        .await?;
    println!();
    print!("{}", final_table(&with_evals));
    if let Some(calls) = kube_line {
        println!("{}", kube_calls_line(&calls, runs.len()));
    }
    println!(
        "elapsed {}; results in {} (`isoflop status {sweep}`), checkpoints and logs under {}",
        duration(started.elapsed().as_secs_f64()),
        location,
        loaded.artifacts_dir().display()
    );
    if interrupted {
        return Err(CliError::Interrupted);
    }
    // The fit is CPU-heavy: off the async runtime.
    let (report_store, report_sweep, dir) =
        (store.clone(), sweep.clone(), reports_dir(location, &loaded.artifacts_dir(), &sweep));
    let report = tokio::task::spawn_blocking(move || write_sweep_report(report_store.as_ref(), &report_sweep, &dir))
        .await
        .context("the report task")?;
    println!("{report}");
    let failed = runs.iter().filter(|r| r.state == RunState::Failed).count();
    if failed > 0 {
        return Err(anyhow!(
            "{failed} run(s) failed; see `isoflop status {sweep}` and `isoflop logs RUN`, then `isoflop resume {sweep}`"
        )
        .into());
    }
    Ok(())
}

/// `reports/SWEEP/` beside a SQLite store; in the artifacts directory of a PostgreSQL one.
pub(crate) fn reports_dir(location: &StoreLocation, artifacts: &Path, sweep: &str) -> PathBuf {
    match location.sqlite() {
        Some(db) => db.parent().unwrap_or(Path::new(".")).join("reports").join(sweep),
        None => artifacts.join("reports").join(sweep),
    }
}

/// Fits the finished sweep (its held-out text and every evaluation task, with the defaults of
/// `isoflop report`) and writes its report into `dir`; the line to print. A sweep that cannot
/// be fitted yet (too few sizes per budget) gets a note, not an error.
pub(crate) fn write_sweep_report(store: &dyn Store, sweep: &str, dir: &Path) -> String {
    match crate::cmd_fit::sweep_report(store, sweep, &crate::cmd_fit::FitArgs::default(), dir) {
        Ok(w) => {
            let heldout = w.fits.first().and_then(|(_, f)| f.as_ref().ok());
            let a = heldout
                .and_then(|r| r.isoflop.n_opt_exponent)
                .map(|a| format!("N* ~ C^{a:.3}"))
                .unwrap_or_else(|| "no N* law (too few bracketed budgets)".into());
            let mut verdicts: Vec<String> = Vec::new();
            for (task, f) in &w.fits {
                if let Ok(r) = f
                    && !r.relative.is_empty()
                {
                    let count = |v: Verdict| r.relative.iter().filter(|g| g.verdict == v).count();
                    verdicts.push(format!(
                        "{task}: {} converging, {} diverging, {} parallel",
                        count(Verdict::Converging),
                        count(Verdict::Diverging),
                        count(Verdict::Parallel)
                    ));
                }
            }
            let sections = if w.fits.len() > 1 { format!(", {} sections", w.fits.len()) } else { String::new() };
            let mut line = format!(
                "scaling-law report: {} ({a}{sections}); `isoflop report {sweep} --out DIR` writes it again",
                dir.join("report.html").display()
            );
            if !verdicts.is_empty() {
                line.push_str(&format!("\nrelative laws: {}", verdicts.join("; ")));
            }
            line
        }
        Err(e) => format!("no scaling-law report yet: {e:#}"),
    }
}

/// What `isoflop run` and `isoflop serve` say of the attempts an earlier coordinator left.
pub(crate) fn recovered_lines(r: &isoflop_coordinator::Recovered) -> Vec<String> {
    let mut lines = Vec::new();
    if r.requeued > 0 {
        lines.push(format!(
            "requeued {} run(s) interrupted in an earlier session; they resume from their checkpoints",
            r.requeued
        ));
    }
    if r.stopping > 0 {
        lines.push(format!(
            "stopping {} worker(s) an earlier session left running; their runs resume from their checkpoints once they exit",
            r.stopping
        ));
    }
    lines
}
