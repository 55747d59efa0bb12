//! `isoflop serve --config FILE`: the coordinator as a long-lived daemon (`isoflop_server`).
//! Clients submit, watch and cancel sweeps over the control API; the daemon's own executor,
//! store and artifacts directory run every sweep.

use crate::exit::{CliError, CliResult, input, server};
use anyhow::Context;
use isoflop_core::spec::ExecutorSpec;
use isoflop_server::host::kube_calls_line;
use isoflop_server::{Endpoint, Host, ServeConfig, StoreLock};
use isoflop_store::StoreLocation;
use std::path::{Path, PathBuf};

/// `isoflop serve --config FILE`: until SIGTERM or SIGINT.
pub fn serve(config_path: &Path) -> CliResult {
    let loaded = ServeConfig::load(config_path).map_err(input)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(async {
        let executor = &loaded.config.executor;
        let endpoint = Endpoint { listen: Some(loaded.config.listen.clone()), worker_url: loaded.config.worker_url.clone() };
        // The ports first: a taken one creates no store and no lock file.
        let listener = Host::bind(executor, &endpoint).await.map_err(server)?;
        let http = match &loaded.config.http_listen {
            None => None,
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|source| {
                server(isoflop_server::ServerError::Bind { addr: addr.clone(), source })
            })?),
        };
        // The lock and the store block (a PostgreSQL round trip): off the async runtime.
        let location = loaded.store.clone();
        let (_lock, store) = tokio::task::spawn_blocking(move || {
            let lock = StoreLock::acquire(&location).map_err(server)?;
            Ok::<_, CliError>((lock, isoflop_store::open(&location)?))
        })
        .await
        .context("opening the store")??;
        let host = Host::on(listener, store, executor, &endpoint, loaded.artifacts.clone(), Some(executor.threads_per_run()))
            .await
            .map_err(server)?;
        let addr = host.listener.local_addr()?;
        let coord = host.coord.clone();
        // The store's calls block: off the async runtime.
        let (recovered, sweeps) = coord.blocking(|c| Ok::<_, CliError>((c.recover()?, c.sweeps()?))).await?;
        let kind = match executor {
            ExecutorSpec::Local { .. } => "local".to_string(),
            ExecutorSpec::Kubernetes(k) => format!("kubernetes (namespace {})", k.namespace),
            ExecutorSpec::External(x) => format!("external (spool {})", x.spool.display()),
        };
        println!(
            "isoflop serve: listening on {addr}; workers reach it at {}; executor {kind}, up to {} in parallel; store {}; \
             artifacts {}; admin token {}",
            host.worker_url,
            executor.max_parallel(),
            loaded.store,
            loaded.artifacts.display(),
            if loaded.admin_token.is_some() { "required" } else { "not required" },
        );
        println!(
            "submitted sweeps run with this executor, store and artifacts directory; their specs' executor and store sections are not used"
        );
        for line in crate::cmd_run::recovered_lines(&recovered) {
            println!("{line}");
        }
        let unfinished = sweeps.iter().flat_map(|(_, runs)| runs).filter(|r| !r.state.is_terminal()).count();
        if unfinished > 0 {
            println!("{unfinished} unfinished run(s) in the store; scheduling them");
        }
        let serving = host.start(loaded.admin_token.clone());
        let http_server = match http {
            None => None,
            Some(l) => {
                println!("http on {}: the web page at /, /api/v1, /healthz, /readyz, /metrics", l.local_addr()?);
                let state = isoflop_server::http::HttpState {
                    per_run_metrics: loaded.config.per_run_metrics,
                    ..serving.http_state()
                };
                Some(isoflop_server::http::HttpServer::start(l, state))
            }
        };
        let reporter = tokio::spawn(report_settled_sweeps(coord.clone(), loaded.store.clone(), loaded.artifacts.clone()));
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
        }
        let calls = serving.kubernetes().map(|k| k.api_calls().clone());
        println!(
            "stopping: {}",
            if calls.is_some() { "Kubernetes Jobs keep running for the next coordinator to adopt" } else { "asking workers to checkpoint and stop" }
        );
        reporter.abort();
        serving.stop().await;
        if let Some(h) = http_server {
            h.stop().await;
        }
        if let Some(calls) = calls {
            let runs: usize = coord.blocking(|c| c.sweeps()).await?.iter().map(|(_, r)| r.len()).sum();
            println!("{}", kube_calls_line(&calls, runs));
        }
        println!("stopped");
        Ok::<(), CliError>(())
    })
}

/// Writes a sweep's report (as `isoflop run` does at its end, into `reports/SWEEP/` beside the
/// store) each time the sweep settles: once every job of it has ended, after a job of it
/// ended. A sweep that settles again (resumed, extended) gets a fresh report.
async fn report_settled_sweeps(coord: isoflop_coordinator::Coordinator, location: StoreLocation, artifacts: PathBuf) {
    use isoflop_proto::v1 as pb;
    let mut events = coord.subscribe();
    // What each report was written from: the jobs and their last update.
    let mut written: std::collections::HashMap<String, (usize, i64)> = std::collections::HashMap::new();
    loop {
        let ev = match events.recv().await {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(pb::run_event::Event::State(st)) = &ev.event else { continue };
        if !isoflop_proto::convert::run_state(st.to).is_ok_and(|s| s.is_terminal()) {
            continue;
        }
        let Ok(sweeps) = coord.blocking(|c| c.sweeps()).await else { continue };
        for (row, runs) in sweeps {
            if !runs.iter().any(|r| r.run_id == ev.run_id) || !isoflop_coordinator::sweep_settled(&runs) {
                continue;
            }
            let mark = (runs.len(), runs.iter().map(|r| r.updated_ms).max().unwrap_or(0));
            if written.get(&row.name) == Some(&mark) {
                continue;
            }
            written.insert(row.name.clone(), mark);
            let (store, name, dir) =
                (coord.store().clone(), row.name.clone(), crate::cmd_run::reports_dir(&location, &artifacts, &row.name));
            match tokio::task::spawn_blocking(move || crate::cmd_run::write_sweep_report(store.as_ref(), &name, &dir)).await {
                Ok(line) => tracing::info!(sweep = %row.name, "sweep settled; {line}"),
                Err(e) => tracing::warn!(sweep = %row.name, "the report task failed: {e}"),
            }
        }
    }
}
