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
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
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

async fn readyz(State(s): State<HttpState>) -> (StatusCode, String) {
    match s.coord.blocking(|c| c.store().sweeps().map(|v| v.len())).await {
        Ok(n) => (StatusCode::OK, format!("ready: the store answers ({n} sweeps)\n")),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: the store: {e}\n")),
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

/// Jobs by (sweep, state, train or eval), read from the store.
fn job_counts(coord: &Coordinator) -> Result<BTreeMap<(String, String, &'static str), i64>, isoflop_store::StoreError> {
    let store = coord.store();
    let mut out = BTreeMap::new();
    for sweep in store.sweeps()? {
        for m in store.sweep_members(&sweep.name)? {
            let kind = if m.training { "train" } else { "eval" };
            *out.entry((sweep.name.clone(), m.state.as_str().to_string(), kind)).or_default() += 1;
        }
    }
    Ok(out)
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let counts = match s.coord.blocking(job_counts).await {
        Ok(c) => c,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("the store: {e}\n")).into_response(),
    };
    let mut registry = Registry::with_prefix("isoflop");
    let info = Family::<VersionLabels, Gauge>::default();
    info.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION").into() }).set(1);
    registry.register("build_info", "The coordinator's version", info);
    let jobs = Family::<JobLabels, Gauge>::default();
    for ((sweep, state, kind), n) in counts {
        jobs.get_or_create(&JobLabels { sweep, state, kind: kind.into() }).set(n);
    }
    registry.register("jobs", "Training runs and evaluation jobs by sweep, state and kind", jobs);
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
        let state = HttpState { coord: host.coord.clone(), kube: None, admin_token: None, shutdown: CancellationToken::new() };
        let server = tokio::spawn(serve_http(listener, state, stop.clone()));

        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!((code, body.as_str()), (200, "ready: the store answers (1 sweeps)\n"));
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
