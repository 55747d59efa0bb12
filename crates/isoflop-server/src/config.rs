//! `isoflop serve`'s config file: where to listen, the store, the artifacts directory, the
//! admin token and the executor, validated as strictly as a sweep spec (unknown keys refused,
//! errors name the file and the key).

use isoflop_core::spec::{ExecutorSpec, SpecError, parse_yaml};
use serde::Deserialize;
use std::path::{Path, PathBuf};

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

/// A validated config with its paths resolved against the config file's directory. `Debug`
/// does not show the admin token.
#[derive(Clone, PartialEq)]
pub struct LoadedConfig {
    pub config: ServeConfig,
    pub sqlite: PathBuf,
    pub artifacts: PathBuf,
    pub admin_token: Option<String>,
}

impl std::fmt::Debug for LoadedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedConfig")
            .field("config", &self.config)
            .field("sqlite", &self.sqlite)
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
        let with_token = LoadedConfig { admin_token: Some("s3cret".into()), ..c };
        assert!(!format!("{with_token:?}").contains("s3cret"), "the token is not printed");
    }
}
