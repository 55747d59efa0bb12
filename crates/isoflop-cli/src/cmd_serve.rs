//! `isoflop serve --config FILE`: the coordinator as a long-lived daemon. Clients submit,
//! watch and cancel sweeps over the control API (`isoflop submit/watch/status --coordinator`);
//! the daemon's own executor, store and artifacts directory run every sweep.

use crate::cmd_run::{Endpoint, Hosted, kube_calls_line, lock_store};
use crate::exit::{CliError, CliResult, input};
use anyhow::Context;
use isoflop_core::spec::{ExecutorSpec, SpecError, parse_yaml};
use isoflop_store::{SqliteStore, Store};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The daemon's config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// `ADDRESS:PORT` of the gRPC server (worker and control APIs).
    pub listen: String,
    /// How workers reach the coordinator (default: kubernetes `executor.coordinator_url`;
    /// local `http://<listen address>`).
    #[serde(default)]
    pub worker_url: Option<String>,
    pub store: ServeStore,
    /// Checkpoints and logs (default: `runs/` beside the database).
    #[serde(default)]
    pub artifacts: Option<PathBuf>,
    /// A file holding the admin token clients must send as a bearer token.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// The executor, exactly as in a sweep spec.
    pub executor: ExecutorSpec,
}

/// The daemon's store section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeStore {
    pub sqlite: PathBuf,
}

/// A validated config with its paths resolved against the config file's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    pub config: ServeConfig,
    pub sqlite: PathBuf,
    pub artifacts: PathBuf,
    pub admin_token: Option<String>,
}

impl ServeConfig {
    /// Reads, parses and validates a config file (reads the admin token file too).
    pub fn load(path: &Path) -> Result<LoadedConfig, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: path.to_path_buf(),
            location: String::new(),
            message: format!("cannot read config: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates config text; `file` names it in errors and anchors relative paths.
    pub fn parse(file: &Path, text: &str) -> Result<LoadedConfig, SpecError> {
        let config: ServeConfig = parse_yaml(file, text)?;
        let err = |key: &str, msg: String| Err(SpecError::at(file, key, msg));
        if config.listen.parse::<std::net::SocketAddr>().is_err() {
            return err("listen", format!("`{}`: expected ADDRESS:PORT, e.g. 0.0.0.0:7700", config.listen));
        }
        if let Some(u) = &config.worker_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return err("worker_url", format!("`{u}`: expected an http:// or https:// URL"));
        }
        if config.store.sqlite.as_os_str().is_empty() {
            return err("store.sqlite", "expected a file path".into());
        }
        config.executor.validate(file)?;
        let base = file.parent().unwrap_or(Path::new("."));
        let sqlite = base.join(&config.store.sqlite);
        let artifacts = match &config.artifacts {
            Some(a) => base.join(a),
            None => sqlite.parent().map(|d| d.join("runs")).unwrap_or_else(|| PathBuf::from("runs")),
        };
        if !config.executor.artifacts_reachable(config.artifacts.as_ref().map(|_| artifacts.as_path())) {
            return err(
                "artifacts",
                "with the kubernetes executor, expected an absolute path on one of executor.volumes' mount paths \
                 (workers write checkpoints there and the coordinator reads them)"
                    .into(),
            );
        }
        let admin_token = match &config.admin_token_file {
            None => None,
            Some(f) => {
                let f = base.join(f);
                let token = match std::fs::read_to_string(&f) {
                    Ok(t) => t.trim().to_string(),
                    Err(e) => return err("admin_token_file", format!("cannot read {}: {e}", f.display())),
                };
                if token.is_empty() {
                    return err("admin_token_file", format!("{} is empty", f.display()));
                }
                Some(token)
            }
        };
        Ok(LoadedConfig { config, sqlite, artifacts, admin_token })
    }
}

/// `isoflop serve --config FILE`: until SIGTERM or SIGINT.
pub fn serve(config_path: &Path) -> CliResult {
    let loaded = ServeConfig::load(config_path).map_err(input)?;
    let _lock = lock_store(&loaded.sqlite)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(serve_async(&loaded))
}

async fn serve_async(loaded: &LoadedConfig) -> CliResult {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&loaded.sqlite)?);
    let executor = &loaded.config.executor;
    let endpoint = Endpoint { listen: Some(loaded.config.listen.clone()), worker_url: loaded.config.worker_url.clone() };
    let hosted =
        Hosted::new(store.clone(), executor, &endpoint, loaded.artifacts.clone(), Some(executor.threads_per_run())).await?;
    let addr = hosted.listener.local_addr()?;
    let coord = hosted.coord.clone();
    let recovered = coord.recover()?;
    let kind = match executor {
        ExecutorSpec::Local { .. } => "local".to_string(),
        ExecutorSpec::Kubernetes(k) => format!("kubernetes (namespace {})", k.namespace),
    };
    println!(
        "isoflop serve: listening on {addr}; workers reach it at {}; executor {kind}, up to {} in parallel; store {}; \
         artifacts {}; admin token {}",
        hosted.worker_url,
        executor.max_parallel(),
        loaded.sqlite.display(),
        loaded.artifacts.display(),
        if loaded.admin_token.is_some() { "required" } else { "not required" },
    );
    println!(
        "submitted sweeps run with this executor, store and artifacts directory; their specs' executor and store sections are not used"
    );
    if recovered > 0 {
        println!("requeued {recovered} run(s) interrupted in an earlier session; they resume from their checkpoints");
    }
    let unfinished = store.sweeps()?.iter().map(|s| store.sweep_runs(&s.name)).collect::<Result<Vec<_>, _>>()?;
    let unfinished = unfinished.iter().flatten().filter(|r| !r.state.is_terminal()).count();
    if unfinished > 0 {
        println!("{unfinished} unfinished run(s) in the store; scheduling them");
    }
    let (kube, serving) = hosted.start(loaded.admin_token.clone());
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    println!(
        "stopping: {}",
        if kube.is_some() {
            "Kubernetes Jobs keep running for the next coordinator to adopt"
        } else {
            "asking workers to checkpoint and stop"
        }
    );
    serving.stop().await;
    if let Some(k) = &kube {
        let runs: usize = store.sweeps()?.iter().map(|s| store.sweep_runs(&s.name).map(|r| r.len()).unwrap_or(0)).sum();
        println!("{}", kube_calls_line(k, runs));
    }
    println!("stopped");
    Ok::<(), CliError>(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        ServeConfig::parse(Path::new("/etc/isoflop/serve.yaml"), text).unwrap_err().to_string()
    }

    #[test]
    fn config_parses_and_refuses_bad_keys() {
        let ok = "listen: 0.0.0.0:7700\nstore: {sqlite: db/isoflop.db}\nexecutor: {kind: local, max_parallel: 2}\n";
        let c = ServeConfig::parse(Path::new("/etc/isoflop/serve.yaml"), ok).unwrap();
        assert_eq!(c.sqlite, PathBuf::from("/etc/isoflop/db/isoflop.db"));
        assert_eq!(c.artifacts, PathBuf::from("/etc/isoflop/db/runs"));
        assert_eq!(c.config.executor.max_parallel(), 2);
        assert!(err(&format!("{ok}bogus: 1\n")).contains("unknown field `bogus`"));
        assert!(err(&ok.replace("0.0.0.0:7700", "nowhere")).starts_with("/etc/isoflop/serve.yaml: listen: `nowhere`"));
        assert!(err(&ok.replace("max_parallel: 2", "max_parallel: 0")).contains("executor.max_parallel: expected at least 1"));
        assert!(err(&format!("{ok}admin_token_file: /nonexistent/token\n")).contains("admin_token_file: cannot read"));
    }
}
