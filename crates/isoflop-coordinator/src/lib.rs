//! The isoflop coordinator: durable run state, the scheduler loop, the worker and control
//! gRPC services, and the executors that start workers.
//!
//! [`Coordinator`] is the shared core; [`serve`] binds both services on one listener (and
//! [`serve_incoming`] on any stream of connections, such as an in-memory one); the scheduler
//! loop is [`Coordinator::run_scheduler`].

pub mod auth;
pub mod coordinator;
pub mod executor;
pub mod resolve;
pub mod runtime;
mod scheduler;
pub mod service;

pub use coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorError, Recovered, find_run, log_path, stored_spec, sweep_settled,
};
pub use executor::{Detached, Executor, ExecutorEvent, ExitReport, ExternalExecutor, LaunchSpec, LocalExecutor};
pub use runtime::RunRuntime;

use isoflop_proto::v1::control_service_server::ControlServiceServer;
use isoflop_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the worker and control APIs on `listener` until `shutdown` is cancelled.
pub async fn serve(
    coord: Coordinator,
    listener: TcpListener,
    admin_token: Option<String>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    serve_incoming(coord, tokio_stream::wrappers::TcpListenerStream::new(listener), admin_token, shutdown).await
}

/// The largest worker message accepted: a multiple-choice job's finish carries one row per
/// item (about 70 bytes; Anthropic's persona sets have 133,204 items).
pub const MAX_WORKER_MESSAGE: usize = 256 << 20;

/// Serves the worker and control APIs on a stream of connections until `shutdown` is
/// cancelled. Every call runs in a `grpc` span naming its method.
pub async fn serve_incoming<S, IO>(
    coord: Coordinator,
    incoming: S,
    admin_token: Option<String>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error>
where
    S: tokio_stream::Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
{
    tonic::transport::Server::builder()
        .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
        .layer(tower::layer::layer_fn({
            let coord = coord.clone();
            move |inner| Timed { inner, coord: coord.clone() }
        }))
        .add_service(
            WorkerServiceServer::new(service::worker::WorkerApi::new(coord.clone()))
                .max_decoding_message_size(MAX_WORKER_MESSAGE),
        )
        .add_service(ControlServiceServer::new(service::control::ControlApi::new(coord, admin_token.as_deref())))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

/// Told of each gRPC call's method path (`/isoflop.v1.WorkerService/Report`) and the time it
/// took to answer (for a stream, to its first response).
pub type RpcObserver = std::sync::Arc<dyn Fn(&str, std::time::Duration) + Send + Sync>;

/// A service that times each call for the coordinator's [`RpcObserver`].
#[derive(Clone)]
struct Timed<S> {
    inner: S,
    coord: Coordinator,
}

impl<S, B> tower::Service<http::Request<B>> for Timed<S>
where
    S: tower::Service<http::Request<B>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let observer = self.coord.inner.rpc_observer.read().unwrap_or_else(|p| p.into_inner()).clone();
        let path = observer.as_ref().map(|_| req.uri().path().to_string());
        let started = std::time::Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let out = call.await;
            if let (Some(observe), Some(path)) = (observer, path) {
                observe(&path, started.elapsed());
            }
            out
        })
    }
}
