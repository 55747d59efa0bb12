//! The control API on a local store: an in-process coordinator served over an in-memory
//! channel, so `isoflop status`, `logs`, `cancel` and `resume` without `--coordinator` run
//! exactly the calls they make against a daemon.
//!
//! The coordinator schedules nothing. Its executor is [`Detached`] (the store's workers
//! belong to the `isoflop run` that launched them, and learn of a cancellation at their next
//! report), except when the command acts on a cluster: for a sweep that runs on Kubernetes,
//! `cancel` and `logs` get the real Kubernetes executor
//! ([`KubernetesExecutor::for_control`]), so its Jobs are deleted, and its pods' logs read,
//! by the one code that does that, through its rate limiter.

use crate::{ControlClient, ServerError};
use hyper_util::rt::TokioIo;
use isoflop_coordinator::{Coordinator, CoordinatorConfig, Detached, Executor, find_run, serve_incoming, stored_spec};
use isoflop_core::spec::{ExecutorSpec, LoadedSpec};
use isoflop_k8s::KubernetesExecutor;
use isoflop_store::{Store, StoreLocation};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

/// What a command is about: it decides which sweep's settings (artifacts directory, executor)
/// the in-process coordinator takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// The store as a whole (`status`).
    Store,
    /// A sweep by name (`cancel SWEEP`, `resume SWEEP`).
    Sweep(&'a str),
    /// A run by id, id prefix or name (`logs RUN`, `cancel --run RUN`): its owner sweep's.
    Run(&'a str),
}

/// A [`Scope`] that can travel to another thread.
enum OwnedScope {
    Store,
    Sweep(String),
    Run(String),
}

impl OwnedScope {
    fn of(scope: Scope<'_>) -> Self {
        match scope {
            Scope::Store => OwnedScope::Store,
            Scope::Sweep(s) => OwnedScope::Sweep(s.into()),
            Scope::Run(r) => OwnedScope::Run(r.into()),
        }
    }

    fn scope(&self) -> Scope<'_> {
        match self {
            OwnedScope::Store => Scope::Store,
            OwnedScope::Sweep(s) => Scope::Sweep(s),
            OwnedScope::Run(r) => Scope::Run(r),
        }
    }
}

/// An in-process coordinator on a local store, and a control client connected to it.
pub struct LocalControl {
    client: ControlClient,
    coord: Coordinator,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl std::fmt::Debug for LocalControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalControl").field("store", &self.client.url()).finish()
    }
}

/// The stored spec of the sweep a scope names, if the store has it and it parses.
fn scope_spec(store: &dyn Store, scope: Scope<'_>) -> Result<Option<LoadedSpec>, ServerError> {
    let sweep = match scope {
        Scope::Store => return Ok(None),
        Scope::Sweep(s) => store.sweep(s)?,
        Scope::Run(key) => match find_run(store, key) {
            Ok(run) => store.sweep(&run.sweep)?,
            // Unknown or ambiguous: the control call says so.
            Err(_) => None,
        },
    };
    Ok(sweep.and_then(|row| match stored_spec(&row) {
        Ok(spec) => Some(spec),
        Err(e) => {
            tracing::warn!(sweep = %row.name, "its stored spec no longer parses; using the store's defaults: {e}");
            None
        }
    }))
}

impl LocalControl {
    /// Opens an existing store (a missing one is [`ServerError::NoStore`]; nothing is created)
    /// and serves its control API in this process. With `cluster`, a scope whose sweep runs on
    /// Kubernetes connects to the cluster (see the module docs).
    pub async fn open(location: &StoreLocation, scope: Scope<'_>, cluster: bool) -> Result<LocalControl, ServerError> {
        if let Some(path) = location.sqlite().filter(|p| !p.is_file()) {
            return Err(ServerError::NoStore(path.into()));
        }
        // The store's calls block: off the async runtime.
        let (at, owned) = (location.clone(), OwnedScope::of(scope));
        let (store, spec) = tokio::task::spawn_blocking(move || {
            let store = isoflop_store::open(&at)?;
            let spec = scope_spec(store.as_ref(), owned.scope())?;
            Ok::<_, ServerError>((store, spec))
        })
        .await
        .map_err(|e| ServerError::Task(e.to_string()))??;
        let artifacts = spec.as_ref().map(LoadedSpec::artifacts_dir).unwrap_or_else(|| default_artifacts(location));
        let executor: Arc<dyn Executor> = match spec.as_ref().map(|s| &s.spec.executor) {
            Some(ExecutorSpec::Kubernetes(k)) if cluster => {
                Arc::new(KubernetesExecutor::for_control((**k).clone(), artifacts.clone()).await?)
            }
            _ => Arc::new(Detached),
        };
        let exec_spec = spec.as_ref().map(|s| s.spec.executor.clone()).unwrap_or_default();
        let cfg = CoordinatorConfig::for_executor(&exec_spec, String::new(), artifacts);
        // Never `recover()`: that would end the attempts of an `isoflop run` elsewhere.
        let coord = Coordinator::new(store, executor, cfg);

        let (client_io, server_io) = tokio::io::duplex(64 << 10);
        let stop = CancellationToken::new();
        // One connection, and then no end: a server whose incoming stream ends shuts down.
        let incoming =
            tokio_stream::StreamExt::chain(tokio_stream::once(Ok::<_, std::io::Error>(server_io)), tokio_stream::pending());
        let server = tokio::spawn(serve_incoming(coord.clone(), incoming, None, stop.clone()));
        let mut client_io = Some(client_io);
        let channel =
            Endpoint::from_static("http://in-process.isoflop")
                .connect_with_connector(tower::service_fn(move |_| {
                    let io = client_io.take();
                    async move {
                        io.map(TokioIo::new).ok_or_else(|| std::io::Error::other("the in-process channel is connected once"))
                    }
                }))
                .await?;
        let client = ControlClient::over(channel, location.to_string(), None);
        Ok(LocalControl { client, coord, stop, server })
    }

    /// The control client.
    pub fn client(&mut self) -> &mut ControlClient {
        &mut self.client
    }

    /// Waits for the executor's background work (a cancelled run's Jobs being deleted) and
    /// stops serving.
    pub async fn close(self) {
        self.coord.executor().shutdown().await;
        self.stop.cancel();
        match self.server.await {
            Ok(Err(e)) => tracing::error!("in-process control API: {e}"),
            Err(e) => tracing::error!("in-process control API task: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

/// `runs/` beside a SQLite database: where a spec without `store.artifacts` keeps them (a
/// PostgreSQL store's sweeps all name theirs).
fn default_artifacts(location: &StoreLocation) -> PathBuf {
    location.sqlite().and_then(Path::parent).map(|d| d.join("runs")).unwrap_or_else(|| PathBuf::from("runs"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use isoflop_store::{NewRun, NewSweep};

    /// The store's calls block (and the PostgreSQL client refuses to run on an async
    /// runtime's thread): the test's own calls run on a blocking thread too.
    async fn off<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.unwrap()
    }

    async fn answers_over_the_in_memory_channel(db: StoreLocation) {
        let at = db.clone();
        let store = off(move || {
            let store = isoflop_store::open(&at).unwrap();
            let run = NewRun {
                run_id: "r1".into(),
                name: "one".into(),
                corpus: "c".into(),
                budget: 1e12,
                config_json: "{}".into(),
                eval: None,
            };
            let sweep = NewSweep { name: "s".into(), spec_yaml: "not a spec".into(), spec_path: "/s.yaml".into() };
            store.submit_sweep(&sweep, &[run]).unwrap();
            store
        })
        .await;
        let mut local = LocalControl::open(&db, Scope::Run("one"), true).await.unwrap();
        let c = local.client();
        // Several calls on the one connection.
        assert_eq!(c.newest_sweep().await.unwrap(), "s");
        let runs = c.runs("s").await.unwrap();
        assert_eq!((runs.len(), runs[0].run.sweep.as_str()), (1, "s"));
        assert!(c.runs("nope").await.unwrap_err().is_input());
        assert_eq!(c.cancel_run("one").await.unwrap(), 1);
        assert_eq!(c.resume("s", false).await.unwrap(), 1);
        let logs = c.logs("r1", None).await.unwrap();
        assert!(logs.logs.is_empty(), "no attempt yet");
        local.close().await;
        let events = off(move || store.events("r1").unwrap()).await;
        let states: Vec<_> = events.iter().map(|e| e.to.as_str()).collect();
        assert_eq!(states, ["queued", "cancelled", "queued"]);
    }

    #[tokio::test]
    async fn the_control_api_answers_over_the_in_memory_channel() {
        let dir = tempfile::tempdir().unwrap();
        let db = StoreLocation::Sqlite(dir.path().join("isoflop.db"));
        assert!(matches!(LocalControl::open(&db, Scope::Store, false).await, Err(ServerError::NoStore(_))), "nothing is created");
        answers_over_the_in_memory_channel(db).await;
    }

    #[tokio::test]
    async fn the_control_api_answers_on_postgres() {
        answers_over_the_in_memory_channel(StoreLocation::Postgres(off(isoflop_pg_harness::fresh_database).await)).await;
    }
}
