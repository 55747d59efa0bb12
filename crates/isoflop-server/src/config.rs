//! `isoflop serve`'s config file: where to listen, the store, the artifacts directory, the
//! admin token and the executor, validated as strictly as a sweep spec (unknown keys refused,
//! errors name the file and the key).

use isoflop_core::spec::{ExecutorSpec, SpecError, StoreLocation, StoreSpec, parse_yaml};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The daemon's config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// `ADDRESS:PORT` of the gRPC server (worker and control APIs).
    pub listen: String,
    /// `ADDRESS:PORT` of the HTTP server: `/healthz`, `/readyz`, `/metrics`, the web page and
    /// its JSON API (none without it).
    #[serde(default)]
    pub http_listen: Option<String>,
    /// `/metrics` also has series per running run (its loss, step and tokens/s), removed when
    /// it ends. Off by default: a sweep of hundreds of runs makes hundreds of series.
    #[serde(default)]
    pub per_run_metrics: bool,
    /// How workers reach the coordinator (default: kubernetes `executor.coordinator_url`;
    /// local `http://<listen address>`).
    #[serde(default)]
    pub worker_url: Option<String>,
    /// `sqlite: PATH` or `postgres: {url: URL}` / `postgres: {url_env: VAR}`, as in a sweep
    /// spec (the artifacts directory is the top-level `artifacts`).
    pub store: StoreSpec,
    /// Checkpoints and logs (default: `runs/` beside a SQLite database; required with
    /// PostgreSQL).
    #[serde(default)]
    pub artifacts: Option<PathBuf>,
    /// A file holding the admin token clients must send as a bearer token.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// The executor, exactly as in a sweep spec.
    pub executor: ExecutorSpec,
}

/// A validated config with its paths resolved against the config file's directory. `Debug`
/// does not show the admin token.
#[derive(Clone, PartialEq)]
pub struct LoadedConfig {
    pub config: ServeConfig,
    pub store: StoreLocation,
    pub artifacts: PathBuf,
    pub admin_token: Option<String>,
}

impl std::fmt::Debug for LoadedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedConfig")
            .field("config", &self.config)
            .field("store", &self.store)
            .field("artifacts", &self.artifacts)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
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
        if let Some(h) = &config.http_listen
            && h.parse::<std::net::SocketAddr>().is_err()
        {
            return err("http_listen", format!("`{h}`: expected ADDRESS:PORT, e.g. 0.0.0.0:7701"));
        }
        if let Some(u) = &config.worker_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return err("worker_url", format!("`{u}`: expected an http:// or https:// URL"));
        }
        if config.store.artifacts.is_some() {
            return err("store.artifacts", "expected the artifacts directory as the top-level `artifacts`".into());
        }
        if config.store.sqlite.is_none() && config.store.postgres.is_none() {
            return err("store", "expected `sqlite: PATH` or `postgres: {url: URL}` (or `postgres: {url_env: VAR}`)".into());
        }
        StoreSpec { artifacts: config.artifacts.clone(), ..config.store.clone() }.validate(file, "store")?;
        config.executor.validate(file)?;
        let base = file.parent().unwrap_or(Path::new("."));
        let store = config.store.location(file, "store", |p| base.join(p))?;
        let artifacts = match (&config.artifacts, &store) {
            (Some(a), _) => base.join(a),
            (None, StoreLocation::Sqlite(db)) => db.parent().map(|d| d.join("runs")).unwrap_or_else(|| PathBuf::from("runs")),
            (None, StoreLocation::Postgres(_)) => unreachable!("validated: PostgreSQL needs `artifacts`"),
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
        Ok(LoadedConfig { config, store, artifacts, admin_token })
    }
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
        assert_eq!(c.store, StoreLocation::Sqlite("/etc/isoflop/db/isoflop.db".into()));
        assert_eq!(c.artifacts, PathBuf::from("/etc/isoflop/db/runs"));
        assert_eq!(c.config.executor.max_parallel(), 2);
        assert!(err(&format!("{ok}bogus: 1\n")).contains("unknown field `bogus`"));
        assert!(err(&ok.replace("0.0.0.0:7700", "nowhere")).starts_with("/etc/isoflop/serve.yaml: listen: `nowhere`"));
        assert!(err(&format!("{ok}http_listen: port-80\n")).starts_with("/etc/isoflop/serve.yaml: http_listen: `port-80`"));
        assert!(err(&ok.replace("max_parallel: 2", "max_parallel: 0")).contains("executor.max_parallel: expected at least 1"));
        assert!(err(&format!("{ok}admin_token_file: /nonexistent/token\n")).contains("admin_token_file: cannot read"));
        let pg = "listen: 0.0.0.0:7700\nstore: {postgres: {url: 'postgres://isoflop@db/isoflop'}}\nexecutor: {kind: local}\n";
        assert!(err(pg).contains("store.artifacts: expected a directory"), "{}", err(pg));
        let p = ServeConfig::parse(Path::new("/etc/isoflop/serve.yaml"), &format!("{pg}artifacts: /data/runs\n")).unwrap();
        assert_eq!(
            (p.store, p.artifacts),
            (StoreLocation::Postgres("postgres://isoflop@db/isoflop".into()), "/data/runs".into())
        );
        assert!(err("listen: 0.0.0.0:7700\nstore: {}\nexecutor: {kind: local}\n").contains("store: expected `sqlite: PATH`"));
        let with_token = LoadedConfig { admin_token: Some("s3cret".into()), ..c };
        assert!(!format!("{with_token:?}").contains("s3cret"), "the token is not printed");
    }
}
