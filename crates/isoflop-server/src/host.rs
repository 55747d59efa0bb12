//! A coordinator hosted: its executor built from an `ExecutorSpec`, bound to a listener,
//! serving the worker and control APIs and scheduling until it is drained. `isoflop run` hosts
//! one for its sweep; `isoflop serve` hosts one as a daemon.

use crate::ServerError;
use isoflop_coordinator::{Coordinator, CoordinatorConfig, Executor, ExecutorEvent, ExternalExecutor, LocalExecutor, serve};
use isoflop_core::spec::ExecutorSpec;
use isoflop_k8s::KubernetesExecutor;
use isoflop_store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where a hosted coordinator listens and how its workers reach it; `None` takes the
/// executor's defaults (local: loopback on a free port; Kubernetes: `executor.listen` and
/// `executor.coordinator_url`).
#[derive(Debug, Default, Clone)]
pub struct Endpoint {
    pub listen: Option<String>,
    pub worker_url: Option<String>,
}

/// The executor an [`ExecutorSpec`] describes, reporting to `events`; the Kubernetes one is
/// also returned as itself (its API call counts are reported).
pub async fn build_executor(
    spec: &ExecutorSpec,
    artifacts_dir: PathBuf,
    events: mpsc::UnboundedSender<ExecutorEvent>,
) -> Result<(Arc<dyn Executor>, Option<Arc<KubernetesExecutor>>), ServerError> {
    Ok(match spec {
        ExecutorSpec::Local { max_parallel, .. } => {
            let program = std::env::current_exe().map_err(ServerError::Program)?;
            (Arc::new(LocalExecutor::new(program, *max_parallel as usize, events)), None)
        }
        ExecutorSpec::Kubernetes(k) => {
            let exec = Arc::new(KubernetesExecutor::connect((**k).clone(), artifacts_dir, events).await?);
            (exec.clone() as Arc<dyn Executor>, Some(exec))
        }
        ExecutorSpec::External(x) => {
            let exec = ExternalExecutor::new(x.spool.clone(), x.max_parallel as usize, x.threads_per_run)
                .map_err(ServerError::Executor)?;
            (Arc::new(exec), None)
        }
    })
}

/// A coordinator with its executor and a bound listener, not yet serving.
pub struct Host {
    pub coord: Coordinator,
    pub listener: TcpListener,
    /// The URL workers are given.
    pub worker_url: String,
    kube: Option<Arc<KubernetesExecutor>>,
    events: mpsc::UnboundedReceiver<ExecutorEvent>,
}

impl Host {
    /// Binds, builds the executor an [`ExecutorSpec`] describes, and a coordinator over `store`
    /// that launches through it. `threads_per_run`: see [`CoordinatorConfig::threads_per_run`].
    pub async fn new(
        store: Arc<dyn Store>,
        executor: &ExecutorSpec,
        endpoint: &Endpoint,
        artifacts_dir: PathBuf,
        threads_per_run: Option<u64>,
    ) -> Result<Host, ServerError> {
        let listener = Self::bind(executor, endpoint).await?;
        Self::on(listener, store, executor, endpoint, artifacts_dir, threads_per_run).await
    }

    /// The listener a host for `executor` at `endpoint` serves on. A daemon binds it before it
    /// touches its store, so a taken port leaves nothing behind.
    pub async fn bind(executor: &ExecutorSpec, endpoint: &Endpoint) -> Result<TcpListener, ServerError> {
        let listen = endpoint.listen.clone().unwrap_or_else(|| match executor {
            ExecutorSpec::Local { .. } | ExecutorSpec::External(_) => "127.0.0.1:0".into(),
            ExecutorSpec::Kubernetes(k) => k.listen.clone(),
        });
        TcpListener::bind(&listen).await.map_err(|source| ServerError::Bind { addr: listen.clone(), source })
    }

    /// A host serving on a listener from [`Host::bind`].
    pub async fn on(
        listener: TcpListener,
        store: Arc<dyn Store>,
        executor: &ExecutorSpec,
        endpoint: &Endpoint,
        artifacts_dir: PathBuf,
        threads_per_run: Option<u64>,
    ) -> Result<Host, ServerError> {
        let listen = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let worker_url = match (&endpoint.worker_url, executor) {
            (Some(u), _) => u.clone(),
            (None, ExecutorSpec::Kubernetes(k)) => k.coordinator_url.clone(),
            (None, ExecutorSpec::Local { .. } | ExecutorSpec::External(_)) => {
                let mut addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: listen.clone(), source })?;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
        };
        let (tx, events) = mpsc::unbounded_channel();
        let (exec, kube) = build_executor(executor, artifacts_dir.clone(), tx).await?;
        let mut cfg = CoordinatorConfig::for_executor(executor, worker_url.clone(), artifacts_dir);
        cfg.threads_per_run = threads_per_run;
        let coord = Coordinator::new(store, exec, cfg);
        Ok(Host { coord, listener, worker_url, kube, events })
    }

    /// Serves the worker and control APIs and runs the scheduler until [`Serving::stop`].
    pub fn start(self, admin_token: Option<String>) -> Serving {
        let server_stop = CancellationToken::new();
        let server = tokio::spawn(serve(self.coord.clone(), self.listener, admin_token.clone(), server_stop.clone()));
        let sched_stop = CancellationToken::new();
        let scheduler = tokio::spawn(self.coord.clone().run_scheduler(self.events, sched_stop.clone()));
        let live = crate::http::LiveMetrics::start(&self.coord);
        Serving {
            coord: self.coord,
            kube: self.kube,
            admin_token,
            live,
            fits: Default::default(),
            server_stop,
            server,
            sched_stop,
            scheduler,
        }
    }
}

/// A coordinator serving and scheduling.
pub struct Serving {
    coord: Coordinator,
    kube: Option<Arc<KubernetesExecutor>>,
    admin_token: Option<String>,
    live: Arc<crate::http::LiveMetrics>,
    fits: Arc<crate::web::api::FitCache>,
    server_stop: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    sched_stop: CancellationToken,
    scheduler: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// The coordinator being served.
    pub fn coordinator(&self) -> &Coordinator {
        &self.coord
    }

    /// The Kubernetes executor, when that is the executor (for its API call counts).
    pub fn kubernetes(&self) -> Option<&KubernetesExecutor> {
        self.kube.as_deref()
    }

    /// What the HTTP side (health, metrics, the web page) reads; the page asks for the
    /// admin token the coordinator serves with.
    pub fn http_state(&self) -> crate::http::HttpState {
        crate::http::HttpState {
            coord: self.coord.clone(),
            kube: self.kube.clone(),
            admin_token: self.admin_token.clone(),
            shutdown: CancellationToken::new(),
            live: Some(self.live.clone()),
            per_run_metrics: false,
            fits: self.fits.clone(),
        }
    }

    /// Stops scheduling (live local workers checkpoint and stop; Kubernetes Jobs are left
    /// running for the next coordinator to adopt), waits for the executor's background work,
    /// then stops serving.
    pub async fn stop(self) {
        self.sched_stop.cancel();
        if let Err(e) = self.scheduler.await {
            tracing::error!("the scheduler task failed: {e}");
        }
        self.coord.executor().shutdown().await;
        self.server_stop.cancel();
        match self.server.await {
            Ok(Err(e)) => tracing::error!("gRPC server: {e}"),
            Err(e) => tracing::error!("gRPC server task: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

/// `kubernetes: N API calls for J jobs (...)`: what a sweep cost the API server (its runs and
/// evaluation jobs).
pub fn kube_calls_line(calls: &isoflop_k8s::api::ApiCalls, runs: usize) -> String {
    let kinds: Vec<String> = calls.by_kind().iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!(
        "kubernetes: {} API calls for {} jobs ({:.1} per job): {}",
        calls.total(),
        runs,
        calls.total() as f64 / runs.max(1) as f64,
        kinds.join(", ")
    )
}
