//! The control API as a typed client: the same calls whether the coordinator is a daemon
//! (`--coordinator URL`) or in this process over an in-memory channel ([`crate::LocalControl`]).

use isoflop_proto::v1 as pb;
use isoflop_proto::v1::control_service_client::ControlServiceClient;
use isoflop_store::RunResults;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// A failed control call, by whose mistake it is.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request was wrong (unknown sweep or run, bad spec, missing or wrong token): the
    /// user's to fix (exit code 2).
    #[error("{0}")]
    Input(String),
    #[error("cannot reach the coordinator at {url}: {message}")]
    Unavailable { url: String, message: String },
    #[error("coordinator at {url}: {message}")]
    Failure { url: String, message: String },
}

impl ClientError {
    /// True for [`ClientError::Input`].
    pub fn is_input(&self) -> bool {
        matches!(self, ClientError::Input(_))
    }

    /// True for [`ClientError::Unavailable`]: the coordinator cannot be reached, or the
    /// connection was lost.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ClientError::Unavailable { .. })
    }
}

/// `url` with `http://` in front when it names no scheme; another scheme than http or https
/// is bad input.
pub fn with_scheme(url: &str) -> Result<String, ClientError> {
    let url = url.trim();
    match url.split_once("://") {
        None => Ok(format!("http://{url}")),
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(url.to_string()),
        Some(_) => Err(ClientError::Input(format!(
            "bad coordinator URL `{url}`: expected http://HOST:PORT, https://HOST:PORT or HOST:PORT"
        ))),
    }
}

/// An error with its causes, `outer: inner: innermost` (a transport error says why).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The largest control answer a client takes: a sweep's run list is about 700 bytes a run
/// (tonic's default of 4 MiB refused the list of a 10,000-run sweep; found by
/// bench/coordinator), so this holds sweeps of several hundred thousand runs.
const MAX_CONTROL_MESSAGE: usize = 512 << 20;

/// A connection to a coordinator's control API.
#[derive(Debug, Clone)]
pub struct ControlClient {
    inner: ControlServiceClient<Channel>,
    token: Option<String>,
    url: String,
}

impl ControlClient {
    /// Connects to a coordinator at `url` (within 10 s), sending `token` as the admin bearer
    /// token on every call.
    /// A URL without a scheme (`HOST:PORT`) means `http://HOST:PORT`.
    pub async fn connect(url: &str, token: Option<String>) -> Result<ControlClient, ClientError> {
        let url = with_scheme(url)?;
        let endpoint =
            Channel::from_shared(url.clone()).map_err(|e| ClientError::Input(format!("bad coordinator URL `{url}`: {e}")))?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| ClientError::Unavailable { url: url.clone(), message: chain(&e) })?;
        Ok(Self::over(channel, url, token))
    }

    /// A client over an established channel; `url` names the coordinator in messages.
    pub fn over(channel: Channel, url: String, token: Option<String>) -> ControlClient {
        ControlClient { inner: ControlServiceClient::new(channel).max_decoding_message_size(MAX_CONTROL_MESSAGE), token, url }
    }

    /// Where the coordinator is (a URL, or the store of an in-process one).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn req<T>(&self, m: T) -> Request<T> {
        let mut r = Request::new(m);
        if let Some(t) = &self.token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    /// A gRPC status as a typed error: the caller's mistakes are input errors.
    pub fn error(&self, s: Status) -> ClientError {
        match s.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::FailedPrecondition => ClientError::Input(s.message().into()),
            Code::Unavailable => ClientError::Unavailable { url: self.url.clone(), message: s.message().into() },
            _ => ClientError::Failure { url: self.url.clone(), message: s.message().into() },
        }
    }

    /// Submits a spec (its text, and its path on the coordinator's filesystem).
    pub async fn submit(&mut self, spec_yaml: String, spec_path: String) -> Result<pb::SubmitSweepResponse, ClientError> {
        let r = self.req(pb::SubmitSweepRequest { spec_yaml, spec_path });
        self.inner.submit_sweep(r).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    /// Every sweep, newest first, with its counts.
    pub async fn sweeps(&mut self) -> Result<Vec<pb::SweepStatus>, ClientError> {
        let r = self.req(pb::ListSweepsRequest {});
        self.inner.list_sweeps(r).await.map(|r| r.into_inner().sweeps).map_err(|s| self.error(s))
    }

    /// The newest sweep's name.
    pub async fn newest_sweep(&mut self) -> Result<String, ClientError> {
        let sweeps = self.sweeps().await?;
        sweeps.into_iter().next().map(|s| s.sweep).ok_or_else(|| ClientError::Input("the store holds no sweep yet".into()))
    }

    /// The runs and evaluation jobs of a sweep with their results, as the store's rows.
    pub async fn runs(&mut self, sweep: &str) -> Result<Vec<RunResults>, ClientError> {
        let r = self.req(pb::ListRunsRequest { sweep: sweep.into() });
        let runs = self.inner.list_runs(r).await.map_err(|s| self.error(s))?.into_inner().runs;
        runs.iter()
            .map(RunResults::try_from)
            .collect::<Result<_, _>>()
            .map_err(|e| ClientError::Failure { url: self.url.clone(), message: e.to_string() })
    }

    /// Every run event of a sweep from now on.
    pub async fn watch(&mut self, sweep: &str) -> Result<tonic::Streaming<pb::RunEvent>, ClientError> {
        let r = self.req(pb::WatchSweepRequest { sweep: sweep.into() });
        self.inner.watch_sweep(r).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    /// Cancels a sweep's unfinished runs; how many.
    pub async fn cancel_sweep(&mut self, sweep: &str) -> Result<u32, ClientError> {
        let r = self.req(pb::CancelSweepRequest { sweep: sweep.into() });
        self.inner.cancel_sweep(r).await.map(|r| r.into_inner().cancelled).map_err(|s| self.error(s))
    }

    /// Cancels one run (by id, id prefix or name); how many (0 or 1).
    pub async fn cancel_run(&mut self, run: &str) -> Result<u32, ClientError> {
        let r = self.req(pb::CancelRunRequest { run_id: run.into() });
        self.inner.cancel_run(r).await.map(|r| r.into_inner().cancelled).map_err(|s| self.error(s))
    }

    /// Requeues a sweep's failed (and, when asked, diverged) and cancelled runs; how many.
    pub async fn resume(&mut self, sweep: &str, include_diverged: bool) -> Result<u32, ClientError> {
        let r = self.req(pb::ResumeSweepRequest { sweep: sweep.into(), include_diverged });
        self.inner.resume_sweep(r).await.map(|r| r.into_inner().requeued).map_err(|s| self.error(s))
    }

    /// The worker logs of a run's attempts (one, or all with `None`).
    pub async fn logs(&mut self, run: &str, attempt: Option<u64>) -> Result<pb::GetRunLogsResponse, ClientError> {
        let r = self.req(pb::GetRunLogsRequest { run: run.into(), attempt: attempt.unwrap_or(0) });
        self.inner.get_run_logs(r).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    /// The sections `isoflop fit` (or, with `report`, `isoflop report`) fits of a sweep, as
    /// JSON (`isoflop_fit::sweep::Sections`), built from the coordinator's store.
    pub async fn fit_sections(
        &mut self,
        sweep: &str,
        task: Option<&str>,
        fit: &impl serde::Serialize,
        section: &impl serde::Serialize,
        report: bool,
    ) -> Result<String, ClientError> {
        let r = self.req(pb::GetFitSectionsRequest {
            sweep: sweep.into(),
            task: task.unwrap_or_default().into(),
            fit_options_json: serde_json::to_string(fit).map_err(|e| ClientError::Input(e.to_string()))?,
            section_options_json: serde_json::to_string(section).map_err(|e| ClientError::Input(e.to_string()))?,
            report,
        });
        self.inner.get_fit_sections(r).await.map(|r| r.into_inner().sections_json).map_err(|s| self.error(s))
    }

    /// Deletes a sweep (or, with `dry_run`, says what that would delete).
    pub async fn delete_sweep(&mut self, sweep: &str, dry_run: bool) -> Result<pb::DeleteSweepResponse, ClientError> {
        let r = self.req(pb::DeleteSweepRequest { sweep: sweep.into(), dry_run });
        self.inner.delete_sweep(r).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    /// A run's state changes, oldest first.
    pub async fn events(&mut self, run: &str) -> Result<pb::GetRunEventsResponse, ClientError> {
        let r = self.req(pb::GetRunEventsRequest { run: run.into() });
        self.inner.get_run_events(r).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }

    /// A run's progress history, every attempt, oldest first.
    pub async fn progress(&mut self, run: &str) -> Result<pb::GetRunProgressResponse, ClientError> {
        let r = self.req(pb::GetRunProgressRequest { run: run.into() });
        self.inner.get_run_progress(r).await.map(|r| r.into_inner()).map_err(|s| self.error(s))
    }
}
