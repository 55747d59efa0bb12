//! The isoflop coordinator: durable run state, the scheduler loop, the worker and control
//! gRPC services, and the executors that start workers.
//!
//! [`serve`] binds both services on one listener; [`Coordinator`] is the shared core.

pub mod auth;
pub mod convert;
pub mod coordinator;
pub mod executor;
pub mod resolve;
pub mod retry;
pub mod service;

pub use coordinator::{Coordinator, CoordinatorConfig, CoordinatorError, RunRuntime, log_path};
pub use executor::{Executor, ExecutorEvent, ExitReport, LaunchSpec, LocalExecutor};

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
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(WorkerServiceServer::new(service::worker::WorkerApi::new(coord.clone())))
        .add_service(ControlServiceServer::new(service::control::ControlApi::new(coord, admin_token.as_deref())))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
