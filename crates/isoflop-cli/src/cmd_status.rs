//! `isoflop status`, `isoflop logs`, `isoflop cancel`, and the tables `isoflop run` shows.

use crate::Format;
use crate::cmd_run::stored_spec;
use crate::exit::{CliResult, input};
use crate::table::{Table, count, duration};
use anyhow::anyhow;
use isoflop_coordinator::{Coordinator, CoordinatorConfig, LocalExecutor, log_path};
use isoflop_core::{RunConfig, RunState};
use isoflop_k8s::executor::JobsOf;
use isoflop_store::{EvalRow, RunRow, SqliteStore, Store};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Opens an existing store; a missing file is bad input (nothing is created).
pub fn open_store(path: &Path) -> Result<Arc<dyn Store>, crate::exit::CliError> {
    if !path.is_file() {
        return Err(input(anyhow!("no isoflop store at {} (set --store or ISOFLOP_STORE)", path.display())));
    }
    Ok(Arc::new(SqliteStore::open(path)?))
}

fn config(r: &RunRow) -> Option<RunConfig> {
    serde_json::from_str(&r.config_json).ok()
}

/// Seconds left for a running run, from its newest progress point.
fn eta(r: &RunRow) -> Option<f64> {
    let p = r.progress.as_ref()?;
    let c = config(r)?;
    if p.tokens_per_second <= 0.0 {
        return None;
    }
    let left = p.total_steps.saturating_sub(p.step) as f64 * c.tokens_per_step() as f64;
    Some(left / p.tokens_per_second)
}

/// One line of counts: `[sweep] 3/20 done, 2 running, 15 queued, 0 failed, 0 cancelled`.
pub fn summary_line(sweep: &str, runs: &[RunRow]) -> String {
    let n = |s: RunState| runs.iter().filter(|r| r.state == s).count();
    let active = runs.iter().filter(|r| r.state.is_active()).count();
    format!(
        "[{sweep}] {}/{} done, {active} running, {} queued, {} failed, {} cancelled",
        n(RunState::Succeeded),
        runs.len(),
        n(RunState::Queued) + n(RunState::Blocked) + n(RunState::Planned),
        n(RunState::Failed),
        n(RunState::Cancelled)
    )
}

/// The live display: the summary line with the elapsed time, and one line per active run.
pub fn live_block(sweep: &str, runs: &[RunRow], elapsed: f64) -> String {
    let mut out = format!("{}  elapsed {}\n", summary_line(sweep, runs), duration(elapsed));
    let width = runs.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in runs.iter().filter(|r| r.state.is_active()) {
        match (&r.progress, r.state) {
            (Some(p), RunState::Running) => out.push_str(&format!(
                "  {:width$}  step {:>6}/{:<6} loss {:7.4}  {:>9} tok/s  ETA {}\n",
                r.name,
                p.step,
                p.total_steps,
                p.loss,
                count(p.tokens_per_second as u64),
                eta(r).map(duration).unwrap_or_else(|| "-".into()),
            )),
            _ => out.push_str(&format!("  {:width$}  {}\n", r.name, r.state)),
        }
    }
    out
}

/// The final table: per run, its shape, final training loss, and eval loss (nats/token) per
/// distribution; `*` marks the lowest mean eval loss of each budget (the IsoFLOP minimum).
pub fn final_table(store: &dyn Store, runs: &[RunRow]) -> anyhow::Result<String> {
    let evals: Vec<Vec<EvalRow>> = runs.iter().map(|r| store.evals(&r.run_id)).collect::<Result<_, _>>()?;
    Ok(final_table_of(runs, &evals))
}

/// [`final_table`] from runs and their evals (one list per run).
pub fn final_table_of(runs: &[RunRow], evals: &[Vec<EvalRow>]) -> String {
    let dists: BTreeSet<String> = evals.iter().flatten().map(|e| e.distribution.clone()).collect();
    let mean = |e: &[EvalRow]| (!e.is_empty()).then(|| e.iter().map(|x| x.loss).sum::<f64>() / e.len() as f64);
    let mut best: Vec<(f64, f64)> = Vec::new();
    for (r, e) in runs.iter().zip(evals) {
        if let Some(m) = mean(e) {
            match best.iter_mut().find(|(b, _)| *b == r.budget) {
                Some(entry) if m < entry.1 => entry.1 = m,
                Some(_) => {}
                None => best.push((r.budget, m)),
            }
        }
    }
    let mut header = vec!["run".to_string(), "budget".into(), "params".into(), "tokens".into(), "state".into(), "train".into()];
    header.extend(dists.iter().cloned());
    header.push("mean".into());
    let mut t = Table::new(header);
    for (r, e) in runs.iter().zip(evals) {
        let c = config(r);
        let mut row = vec![
            r.name.clone(),
            format!("{:.1e}", r.budget),
            c.as_ref().map(|c| count(isoflop_core::flops::params(&c.model))).unwrap_or_default(),
            c.as_ref().map(|c| count(c.tokens())).unwrap_or_default(),
            match r.failure_class {
                Some(fc) if r.state == RunState::Failed => format!("failed({fc})"),
                _ => r.state.to_string(),
            },
            r.progress.as_ref().map(|p| format!("{:.4}", p.loss)).unwrap_or_else(|| "-".into()),
        ];
        for d in &dists {
            row.push(e.iter().find(|x| &x.distribution == d).map(|x| format!("{:.4}", x.loss)).unwrap_or_else(|| "-".into()));
        }
        row.push(match mean(e) {
            Some(m) => {
                let star = best.iter().any(|(b, v)| *b == r.budget && *v == m);
                format!("{m:.4}{}", if star { "*" } else { " " })
            }
            None => "-".into(),
        });
        t.row(row);
    }
    let mut out = t.render();
    out.push_str("losses: mean cross-entropy in nats/token on each held-out distribution; * = lowest mean loss of its budget\n");
    out
}

fn newest_sweep(store: &dyn Store) -> anyhow::Result<String> {
    store.sweeps()?.into_iter().next().map(|s| s.name).ok_or_else(|| anyhow!("the store holds no sweep yet"))
}

/// `isoflop status [SWEEP]`.
pub fn status(store_path: &Path, sweep: Option<&str>, format: Format) -> CliResult {
    let store = open_store(store_path)?;
    let sweep = match sweep {
        Some(s) => s.to_string(),
        None => newest_sweep(store.as_ref()).map_err(input)?,
    };
    if store.sweep(&sweep)?.is_none() {
        return Err(input(anyhow!("sweep `{sweep}` not found in {}", store_path.display())));
    }
    let runs = store.sweep_runs(&sweep)?;
    let evals: Vec<Vec<EvalRow>> = runs.iter().map(|r| store.evals(&r.run_id)).collect::<Result<_, _>>()?;
    print_status(&sweep, &runs, &evals, format)
}

/// Prints a sweep's runs as `isoflop status` does (the local store or a coordinator's).
pub fn print_status(sweep: &str, runs: &[RunRow], evals: &[Vec<EvalRow>], format: Format) -> CliResult {
    match format {
        Format::Json => {
            let mut arr = Vec::new();
            for (r, e) in runs.iter().zip(evals) {
                let c = config(r);
                let evals: serde_json::Map<String, serde_json::Value> = e
                    .iter()
                    .cloned()
                    .map(|e| {
                        (
                            e.distribution,
                            json!({"loss": e.loss, "bits_per_byte": e.bits_per_byte, "tokens": e.tokens, "bytes": e.bytes}),
                        )
                    })
                    .collect();
                arr.push(json!({
                    "run_id": r.run_id,
                    "name": r.name,
                    "corpus": r.corpus,
                    "budget": r.budget,
                    "state": r.state.as_str(),
                    "failure_class": r.failure_class.map(|f| f.as_str()),
                    "message": r.message,
                    "attempts": r.attempts,
                    "params": c.as_ref().map(|c| isoflop_core::flops::params(&c.model)),
                    "tokens": c.as_ref().map(|c| c.tokens()),
                    "step": r.progress.as_ref().map(|p| p.step),
                    "total_steps": c.as_ref().map(|c| c.recipe.steps),
                    "loss": r.progress.as_ref().map(|p| p.loss),
                    "tokens_per_second": r.progress.as_ref().map(|p| p.tokens_per_second),
                    "micro_batch": r.progress.as_ref().and_then(|p| p.micro_batch),
                    "eta_seconds": if r.state == RunState::Running { eta(r) } else { None },
                    "evals": evals,
                }));
            }
            println!("{}", serde_json::to_string_pretty(&json!({"sweep": sweep, "runs": arr})).map_err(anyhow::Error::from)?);
        }
        Format::Table => {
            let mut t = Table::new(["run_id", "run", "state", "step", "loss", "tok/s", "micro", "ETA", "attempts", "note"]);
            for r in runs {
                let total = config(r).map(|c| c.recipe.steps).unwrap_or(0);
                t.row([
                    r.run_id.clone(),
                    r.name.clone(),
                    r.state.to_string(),
                    format!("{}/{total}", r.progress.as_ref().map(|p| p.step).unwrap_or(0)),
                    r.progress.as_ref().map(|p| format!("{:.4}", p.loss)).unwrap_or_else(|| "-".into()),
                    r.progress.as_ref().map(|p| count(p.tokens_per_second as u64)).unwrap_or_else(|| "-".into()),
                    r.progress.as_ref().and_then(|p| p.micro_batch).map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                    if r.state == RunState::Running { eta(r).map(duration).unwrap_or_else(|| "-".into()) } else { "-".into() },
                    r.attempts.to_string(),
                    match r.failure_class {
                        Some(c) => format!("{c}: {}", r.message),
                        None => r.message.clone(),
                    },
                ]);
            }
            println!("{}", summary_line(sweep, runs));
            print!("{}", t.render());
            if runs.iter().any(|r| r.state == RunState::Succeeded) {
                println!();
                print!("{}", final_table_of(runs, evals));
            }
        }
    }
    Ok(())
}

/// Finds a run by id, id prefix or name; returns it with the artifacts dir of its sweep.
fn find_run(store: &dyn Store, key: &str) -> Result<(RunRow, PathBuf), crate::exit::CliError> {
    let mut found: Vec<(RunRow, PathBuf)> = Vec::new();
    for s in store.sweeps()? {
        let artifacts = stored_spec(&s).map(|l| l.artifacts_dir()).map_err(input)?;
        for r in store.sweep_runs(&s.name)? {
            if (r.run_id == key || r.run_id.starts_with(key) || r.name == key) && !found.iter().any(|(f, _)| f.run_id == r.run_id)
            {
                found.push((r, artifacts.clone()));
            }
        }
    }
    match found.len() {
        0 => Err(input(anyhow!("no run matches `{key}`"))),
        1 => Ok(found.remove(0)),
        n => Err(input(anyhow!("`{key}` matches {n} runs; give more of the run id"))),
    }
}

/// `isoflop logs RUN`.
pub fn logs(store_path: &Path, key: &str, attempt: Option<u64>) -> CliResult {
    let store = open_store(store_path)?;
    let (run, artifacts) = find_run(store.as_ref(), key)?;
    let attempts: Vec<u64> = match attempt {
        Some(a) => vec![a],
        None => (1..=run.attempts).collect(),
    };
    if attempts.is_empty() {
        return Err(input(anyhow!("run {} ({}) has not started yet", run.name, run.run_id)));
    }
    for a in attempts {
        let path = log_path(&artifacts, &run.run_id, a);
        println!("==> {} attempt {a}: {} <==", run.name, path.display());
        match std::fs::read_to_string(&path) {
            Ok(text) => print!("{text}"),
            // A Kubernetes attempt's log file is written when it ends; until then its pod has it.
            Err(e) => match sweep_holding(store.as_ref(), &run.run_id).and_then(|row| kubernetes_settings(&row)) {
                Some(k) => {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    match rt.block_on(isoflop_k8s::executor::live_pod_log(&k, &run.run_id, a)) {
                        Ok(Some(text)) => print!("{text}"),
                        Ok(None) => println!("(no log: {e}; no pod of this attempt in namespace {})", k.namespace),
                        Err(ke) => println!("(no log: {e}; the pod's log could not be read: {ke})"),
                    }
                }
                None => println!("(no log: {e})"),
            },
        }
    }
    Ok(())
}

/// The first sweep that holds a run.
fn sweep_holding(store: &dyn Store, run_id: &str) -> Option<isoflop_store::SweepRow> {
    store.sweeps().ok()?.into_iter().find(|s| store.sweep_runs(&s.name).is_ok_and(|rs| rs.iter().any(|r| r.run_id == run_id)))
}

/// A stored sweep's Kubernetes settings, if it runs on Kubernetes.
fn kubernetes_settings(row: &isoflop_store::SweepRow) -> Option<isoflop_core::kubernetes::KubernetesSpec> {
    match stored_spec(row).ok()?.spec.executor {
        isoflop_core::spec::ExecutorSpec::Kubernetes(k) => Some(*k),
        isoflop_core::spec::ExecutorSpec::Local { .. } => None,
    }
}

/// A coordinator for store-side operations only (cancel, resume) from a short-lived command:
/// no scheduler runs and its executor launches nothing. A worker of another `isoflop run`
/// learns of the change at its next report.
pub fn offline_coordinator(store: Arc<dyn Store>) -> Coordinator {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let exec = Arc::new(LocalExecutor::new(PathBuf::from("isoflop"), 0, tx));
    let cfg = CoordinatorConfig {
        worker_url: String::new(),
        artifacts_dir: PathBuf::new(),
        max_retries: 0,
        lease: std::time::Duration::from_secs(60),
        launch_grace: std::time::Duration::from_secs(30),
        backoff_base: std::time::Duration::from_secs(2),
        tick: std::time::Duration::from_secs(1),
        drain_grace: std::time::Duration::from_secs(1),
        threads_per_run: None,
    };
    Coordinator::new(store, exec, cfg)
}

/// `isoflop cancel SWEEP` / `isoflop cancel --run RUN`. A worker of another `isoflop run`
/// learns at its next report that its attempt is over, checkpoints and stops.
pub fn cancel(store_path: &Path, target: &str, run: bool) -> CliResult {
    let store = open_store(store_path)?;
    let coord = offline_coordinator(store.clone());
    let run_id = if run { Some(find_run(store.as_ref(), target)?.0.run_id) } else { None };
    let (n, cluster) = match &run_id {
        Some(id) => (coord.cancel_run(id)? as u32, sweep_holding(store.as_ref(), id).and_then(|row| kubernetes_settings(&row))),
        None => {
            let n = coord.cancel_sweep(target).map_err(|e| match e {
                isoflop_coordinator::CoordinatorError::UnknownSweep(_) => input(e),
                e => e.into(),
            })?;
            (n, store.sweep(target)?.and_then(|row| kubernetes_settings(&row)))
        }
    };
    println!("cancelled {n} run(s)");
    // Cluster sweeps: remove the Jobs (and with them pods and Secrets) now, not at the
    // workers' next report.
    if let Some(k) = cluster {
        let of = run_id.as_deref().map_or(JobsOf::Sweep(target), JobsOf::Run);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let n = rt.block_on(isoflop_k8s::executor::delete_jobs(&k, of))?;
        println!("deleted {n} Kubernetes Job(s) in namespace {}", k.namespace);
    }
    Ok(())
}
