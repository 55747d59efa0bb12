//! The coordinator's HTTP side (`http_listen` in the serve config): `/healthz` (the process
//! serves), `/readyz` (the store answers) and `/metrics` in Prometheus's text format, computed
//! from the store at each scrape, and the web page with its JSON API ([`crate::web`]). Health
//! and metrics do not ask for the admin token: they say nothing a run's name does not (DESIGN:
//! nothing unauthenticated but health and metrics). Labels have bounded values: a sweep, a
//! state, a kind of job, an API request kind; no series per run.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use isoflop_coordinator::Coordinator;
use isoflop_k8s::KubernetesExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub coord: Coordinator,
    pub kube: Option<Arc<KubernetesExecutor>>,
    /// The admin token the page and the JSON API ask for; `None`: open (loopback).
    pub admin_token: Option<String>,
    /// Cancelled when the server stops: live streams end, so that the graceful shutdown does
    /// not wait for a browser tab to close.
    pub shutdown: CancellationToken,
    /// Counters and histograms since the coordinator started (none in a bare test state).
    pub live: Option<Arc<LiveMetrics>>,
    /// Series per live run on `/metrics` (`per_run_metrics` in the serve config).
    pub per_run_metrics: bool,
    /// The sweeps' fits the page asked for, until a job ends.
    pub fits: Arc<crate::web::api::FitCache>,
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::web::router(state.clone()))
        .with_state(state)
}

/// Serves the routes on `listener` until `stop`.
pub async fn serve_http(listener: TcpListener, state: HttpState, stop: CancellationToken) -> std::io::Result<()> {
    let state = HttpState { shutdown: stop.clone(), ..state };
    axum::serve(listener, router(state)).with_graceful_shutdown(async move { stop.cancelled().await }).await
}

/// The HTTP side running in the background ([`serve_http`]), until [`HttpServer::stop`].
pub struct HttpServer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Serves the routes on `listener` in a task of its own.
    pub fn start(listener: TcpListener, state: HttpState) -> HttpServer {
        let stop = CancellationToken::new();
        HttpServer { task: tokio::spawn(serve_http(listener, state, stop.clone())), stop }
    }

    /// Stops serving (live streams end) and waits for the server; its errors are logged.
    pub async fn stop(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Err(e)) => tracing::error!("http server: {e}"),
            Err(e) => tracing::error!("http server task: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, String) {
    let store = s.coord.blocking(|c| c.store().sweeps().map(|v| v.len())).await;
    match (store, s.coord.executor().readiness()) {
        (Ok(n), Ok(())) => (StatusCode::OK, format!("ready: the store answers ({n} sweeps), the executor is ready\n")),
        (Err(e), _) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: the store: {e}\n")),
        (_, Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: the executor: {e}\n")),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    sweep: String,
    state: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    request: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SweepLabels {
    sweep: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    sweep: String,
    run: String,
}

/// Buckets of queue waits and run durations, in seconds: 1 s to about 2 days.
fn long_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 3.0, 12))
}

/// What the coordinator did since this process started, from its event broadcast and its
/// gRPC calls: counters and histograms (a restart starts them again, as Prometheus expects).
pub struct LiveMetrics {
    finished: Family<ResultLabels, Counter>,
    retries: Family<ClassLabels, Counter>,
    queue_wait: Histogram,
    duration: Histogram,
    rpc: Family<MethodLabels, Histogram>,
}

impl LiveMetrics {
    /// Starts following `coord`'s events and calls (until the coordinator is dropped).
    pub fn start(coord: &Coordinator) -> Arc<LiveMetrics> {
        let live = Arc::new(LiveMetrics {
            finished: Family::default(),
            retries: Family::default(),
            queue_wait: long_buckets(),
            duration: long_buckets(),
            rpc: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 4.0, 10))),
        });
        let rpc = live.rpc.clone();
        coord.observe_rpcs(Arc::new(move |method: &str, took: std::time::Duration| {
            rpc.get_or_create(&MethodLabels { method: method.to_string() }).observe(took.as_secs_f64());
        }));
        let mut events = coord.subscribe();
        let weak = Arc::downgrade(&live);
        tokio::spawn(async move {
            use isoflop_core::RunState;
            use isoflop_proto::v1 as pb;
            // When each run was queued, and when it first launched.
            let mut queued: HashMap<String, i64> = HashMap::new();
            let mut started: HashMap<String, i64> = HashMap::new();
            loop {
                let ev = match events.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(live) = weak.upgrade() else { return };
                let Some(pb::run_event::Event::State(st)) = &ev.event else { continue };
                let (Ok(from), Ok(to)) = (isoflop_proto::convert::run_state(st.from), isoflop_proto::convert::run_state(st.to))
                else {
                    continue;
                };
                let at = ev.unix_millis;
                let secs = |t0: i64| (at - t0).max(0) as f64 / 1000.0;
                match to {
                    RunState::Queued => {
                        queued.insert(ev.run_id.clone(), at);
                        if from.is_active()
                            && let Some(class) = isoflop_proto::convert::failure_class(st.failure_class)
                        {
                            live.retries.get_or_create(&ClassLabels { class: class.as_str().into() }).inc();
                        }
                    }
                    RunState::Launching => {
                        if let Some(t0) = queued.remove(&ev.run_id) {
                            live.queue_wait.observe(secs(t0));
                        }
                        started.entry(ev.run_id.clone()).or_insert(at);
                    }
                    s if s.is_terminal() => {
                        queued.remove(&ev.run_id);
                        if let Some(t0) = started.remove(&ev.run_id) {
                            live.duration.observe(secs(t0));
                        }
                        live.finished.get_or_create(&ResultLabels { result: s.as_str().into() }).inc();
                    }
                    _ => {}
                }
            }
        });
        live
    }
}

/// What a scrape reads from the store: jobs by (sweep, state, train or eval), tokens/s per
/// sweep, and (when asked for) the live runs' newest progress.
struct Scraped {
    jobs: BTreeMap<(String, String, &'static str), i64>,
    tokens_per_second: BTreeMap<String, f64>,
    runs: Vec<(String, String, isoflop_store::ProgressPoint)>,
}

fn scrape(coord: &Coordinator, per_run: bool) -> Result<Scraped, isoflop_store::StoreError> {
    let store = coord.store();
    let mut out = Scraped { jobs: BTreeMap::new(), tokens_per_second: BTreeMap::new(), runs: Vec::new() };
    for sweep in store.sweeps()? {
        let runs = store.sweep_runs(&sweep.name)?;
        for r in &runs {
            let kind = if r.is_training() { "train" } else { "eval" };
            *out.jobs.entry((sweep.name.clone(), r.state.as_str().to_string(), kind)).or_default() += 1;
            if per_run
                && r.is_training()
                && r.state == isoflop_core::RunState::Running
                && let Some(p) = &r.progress
            {
                out.runs.push((sweep.name.clone(), r.name.clone(), p.clone()));
            }
        }
        out.tokens_per_second.insert(sweep.name.clone(), crate::web::view::summarize(&sweep.name, 0, &runs).tokens_per_second);
    }
    Ok(out)
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let per_run = s.per_run_metrics;
    let scraped = match s.coord.blocking(move |c| scrape(c, per_run)).await {
        Ok(c) => c,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("the store: {e}\n")).into_response(),
    };
    let mut registry = Registry::with_prefix("isoflop");
    let info = Family::<VersionLabels, Gauge>::default();
    info.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION").into() }).set(1);
    registry.register("build_info", "The coordinator's version", info);
    let jobs = Family::<JobLabels, Gauge>::default();
    for ((sweep, state, kind), n) in scraped.jobs {
        jobs.get_or_create(&JobLabels { sweep, state, kind: kind.into() }).set(n);
    }
    registry.register("jobs", "Training runs and evaluation jobs by sweep, state and kind", jobs);
    let rate = Family::<SweepLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (sweep, v) in scraped.tokens_per_second {
        rate.get_or_create(&SweepLabels { sweep }).set(v);
    }
    registry.register("sweep_tokens_per_second", "Training tokens per second of a sweep's running runs together", rate);
    if per_run {
        let (loss, step, tps) = (
            Family::<RunLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default(),
            Family::<RunLabels, Gauge>::default(),
            Family::<RunLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default(),
        );
        for (sweep, run, p) in scraped.runs {
            let l = RunLabels { sweep, run };
            loss.get_or_create(&l).set(p.loss);
            step.get_or_create(&l).set(p.step as i64);
            tps.get_or_create(&l).set(p.tokens_per_second);
        }
        registry.register("run_loss", "A running run's newest training loss (per_run_metrics; live runs only)", loss);
        registry.register("run_step", "A running run's newest step (per_run_metrics; live runs only)", step);
        registry.register("run_tokens_per_second", "A running run's training throughput (per_run_metrics; live runs only)", tps);
    }
    if let Some(live) = &s.live {
        registry.register("jobs_finished", "Jobs that ended, by result, since the coordinator started", live.finished.clone());
        registry.register(
            "retries",
            "Failed attempts whose run was queued again, by failure class, since the coordinator started",
            live.retries.clone(),
        );
        registry.register_with_unit(
            "queue_wait",
            "Time from queued to launched, per launch",
            prometheus_client::registry::Unit::Seconds,
            live.queue_wait.clone(),
        );
        registry.register_with_unit(
            "run_duration",
            "Time from a job's first launch to its end",
            prometheus_client::registry::Unit::Seconds,
            live.duration.clone(),
        );
        registry.register_with_unit(
            "rpc_duration",
            "gRPC calls (worker and control APIs) by method: time to answer",
            prometheus_client::registry::Unit::Seconds,
            live.rpc.clone(),
        );
    }
    if let Some(k) = &s.kube {
        let calls = Family::<RequestLabels, Counter>::default();
        for (request, n) in k.api_calls().by_kind() {
            calls.get_or_create(&RequestLabels { request }).inc_by(n);
        }
        registry.register("kubernetes_api_requests", "Requests the executor sent to the Kubernetes API, by kind", calls);
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics: {e}\n")).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Endpoint, Host};
    use isoflop_core::spec::ExecutorSpec;
    use isoflop_store::{NewRun, NewSweep};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `GET path` over a real connection: the status code and the body.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
    }

    #[tokio::test]
    async fn health_readiness_and_metrics_answer_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("isoflop.db");
        let store = tokio::task::spawn_blocking(move || {
            let store = isoflop_store::open(&isoflop_store::StoreLocation::Sqlite(db)).unwrap();
            let run = |id: &str| NewRun {
                run_id: id.into(),
                name: id.into(),
                corpus: "c".into(),
                budget: 1e12,
                config_json: "{}".into(),
                eval: None,
            };
            let sweep = NewSweep { name: "s".into(), spec_yaml: "not a spec".into(), spec_path: "/s.yaml".into() };
            store.submit_sweep(&sweep, &[run("r1"), run("r2")]).unwrap();
            store
        })
        .await
        .unwrap();
        let executor: ExecutorSpec = serde_yaml::from_str("{kind: local, max_parallel: 1}").unwrap();
        let host = Host::new(store, &executor, &Endpoint::default(), dir.path().join("runs"), None).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let state = HttpState {
            coord: host.coord.clone(),
            kube: None,
            admin_token: None,
            shutdown: CancellationToken::new(),
            live: None,
            per_run_metrics: false,
            fits: Default::default(),
        };
        let server = tokio::spawn(serve_http(listener, state, stop.clone()));

        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!((code, body.as_str()), (200, "ready: the store answers (1 sweeps), the executor is ready\n"));
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(r#"isoflop_jobs{sweep="s",state="queued",kind="train"} 2"#), "{body}");
        assert!(body.contains(&format!(r#"isoflop_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION"))), "{body}");
        assert!(body.contains("# TYPE isoflop_jobs gauge") && body.trim_end().ends_with("# EOF"), "{body}");
        assert_eq!(get(addr, "/nope").await.0, 404);

        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
