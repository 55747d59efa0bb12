//! How a worker talks to its coordinator.

use crate::attempt::WorkerError;
use isoflop_proto::v1 as pb;
use isoflop_proto::v1::worker_service_client::WorkerServiceClient;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The worker API as the worker sees it: the three calls of one attempt.
#[async_trait::async_trait]
pub trait WorkerClient: Send {
    /// Claims the attempt; the answer is the assignment.
    async fn attach(&mut self, req: pb::AttachRequest) -> Result<pb::AttachResponse, Status>;
    /// A heartbeat with what happened since the last one.
    async fn report(&mut self, req: pb::ReportRequest) -> Result<pb::ReportResponse, Status>;
    /// The attempt's outcome.
    async fn finish(&mut self, req: pb::FinishRequest) -> Result<pb::FinishResponse, Status>;
}

/// The worker API over gRPC, every call carrying the attempt's bearer token.
#[derive(Debug, Clone)]
pub struct GrpcWorkerClient {
    inner: WorkerServiceClient<Channel>,
    token: String,
}

impl GrpcWorkerClient {
    /// Connects to `url`, trying for up to 10 s (a coordinator may still be starting).
    pub async fn connect(url: &str, token: String) -> Result<Self, WorkerError> {
        let mut last = String::new();
        for _ in 0..20 {
            match WorkerServiceClient::connect(url.to_string()).await {
                Ok(inner) => return Ok(GrpcWorkerClient { inner, token }),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(WorkerError::Connect { url: url.into(), message: last })
    }

    fn authed<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(v) = format!("Bearer {}", self.token).parse() {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }
}

#[async_trait::async_trait]
impl WorkerClient for GrpcWorkerClient {
    async fn attach(&mut self, req: pb::AttachRequest) -> Result<pb::AttachResponse, Status> {
        let r = self.authed(req);
        self.inner.attach(r).await.map(|r| r.into_inner())
    }
    async fn report(&mut self, req: pb::ReportRequest) -> Result<pb::ReportResponse, Status> {
        let r = self.authed(req);
        self.inner.report(r).await.map(|r| r.into_inner())
    }
    async fn finish(&mut self, req: pb::FinishRequest) -> Result<pb::FinishResponse, Status> {
        let r = self.authed(req);
        self.inner.finish(r).await.map(|r| r.into_inner())
    }
}
