//! What `isoflop run` and `isoflop serve` host, and how commands reach it.
//!
//! * [`config`]: `isoflop serve`'s YAML config, validated like a spec.
//! * [`host`]: the executor an `ExecutorSpec` describes, a coordinator over a store bound to a
//!   listener ([`Host`]), serving and scheduling ([`Serving`]) until a drain.
//! * [`client`]: the control API as a typed client ([`ControlClient`]), over TCP to a daemon.
//! * [`local`]: the same control API over an in-memory channel to an in-process coordinator on
//!   a local store ([`LocalControl`]): `isoflop status`, `logs`, `cancel` and `resume` without
//!   `--coordinator` take this path, so there is one control path.
//! * [`lock`]: one `isoflop run` or `serve` per store.
//!
//! * [`http`] and [`web`]: the HTTP listener: health, Prometheus metrics, the web page and
//!   its JSON API.

pub mod client;
pub mod config;
pub mod host;
pub mod http;
pub mod local;
pub mod lock;
pub mod web;

pub use client::{ClientError, ControlClient};
pub use config::{LoadedConfig, ServeConfig};
pub use host::{Endpoint, Host, Serving};
pub use local::{LocalControl, Scope};
pub use lock::StoreLock;

/// Errors of hosting a coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind the coordinator to {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot find the isoflop binary to start workers: {0}")]
    Program(std::io::Error),
    #[error(transparent)]
    Kubernetes(#[from] isoflop_k8s::KubeExecutorError),
    #[error(transparent)]
    Store(#[from] isoflop_store::StoreError),
    #[error(transparent)]
    Executor(isoflop_coordinator::executor::ExecutorError),
    #[error(transparent)]
    Coordinator(#[from] isoflop_coordinator::CoordinatorError),
    /// A command was pointed at a store that does not exist (nothing is created).
    #[error("no isoflop store at {0} (set --store or ISOFLOP_STORE)")]
    NoStore(std::path::PathBuf),
    /// Another `isoflop run` or `serve` holds the store.
    #[error("the store {store} is in use by {holder} (lock {lock}); stop it, or talk to a daemon with --coordinator")]
    Locked { store: String, lock: String, holder: String },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("the in-process control channel: {0}")]
    Channel(#[from] tonic::transport::Error),
    #[error("a blocking task did not finish: {0}")]
    Task(String),
}

impl ServerError {
    /// True for the user's mistakes (exit code 2 at the binary's edge).
    pub fn is_input(&self) -> bool {
        match self {
            ServerError::NoStore(_) | ServerError::Locked { .. } => true,
            ServerError::Store(e) => e.is_input(),
            _ => false,
        }
    }
}
