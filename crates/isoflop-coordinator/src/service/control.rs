//! The control API: what the CLI and other clients call, over TCP from a remote client or
//! over an in-memory channel from a command on the store's own machine; the same code either
//! way.

use crate::coordinator::{Coordinator, CoordinatorError};
use isoflop_core::spec::{LoadedSpec, SweepSpec};
use isoflop_proto::v1 as pb;
use isoflop_proto::v1::control_service_server::ControlService;
use isoflop_store::{RunResults, StoreError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tokio_stream::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

/// The control API over a coordinator, optionally requiring an admin bearer token.
#[derive(Debug, Clone)]
pub struct ControlApi {
    coord: Coordinator,
    admin_token_hash: Option<String>,
}

impl ControlApi {
    pub fn new(coord: Coordinator, admin_token: Option<&str>) -> Self {
        Self { coord, admin_token_hash: admin_token.map(crate::auth::hash_token) }
    }

    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(want) = &self.admin_token_hash else { return Ok(()) };
        let got = crate::auth::bearer(req.metadata()).ok_or_else(|| Status::unauthenticated("missing admin bearer token"))?;
        if crate::auth::same(want, &crate::auth::hash_token(got)) {
            Ok(())
        } else {
            Err(Status::unauthenticated("wrong admin token"))
        }
    }

    /// Runs `f` on blocking threads: the store's calls block.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&ControlApi) -> Result<R, Status> + Send + 'static,
    ) -> Result<R, Status> {
        let api = self.clone();
        self.coord.blocking(move |_| f(&api)).await
    }
}

/// A coordinator error as a gRPC status: the caller's mistakes are client errors.
fn status(e: CoordinatorError) -> Status {
    match e {
        CoordinatorError::Spec(e) => Status::invalid_argument(e.to_string()),
        CoordinatorError::UnknownSweep(_) | CoordinatorError::UnknownRun(_) => Status::not_found(e.to_string()),
        CoordinatorError::AmbiguousRun { .. } => Status::invalid_argument(e.to_string()),
        CoordinatorError::Store(StoreError::SweepConflict { .. }) => Status::already_exists(e.to_string()),
        CoordinatorError::Store(StoreError::SweepActive { .. }) => Status::failed_precondition(e.to_string()),
        CoordinatorError::Store(StoreError::NotFound { .. }) => Status::not_found(e.to_string()),
        CoordinatorError::Store(e) => Status::internal(e.to_string()),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ControlService for ControlApi {
    #[tracing::instrument(name = "rpc.submit_sweep", skip_all)]
    async fn submit_sweep(&self, req: Request<pb::SubmitSweepRequest>) -> Result<Response<pb::SubmitSweepResponse>, Status> {
        self.check(&req)?;
        let m = req.into_inner();
        // Planning reads the data's manifest (file I/O) and the store.
        let (r, loaded) = self
            .blocking(move |api| {
                let path = PathBuf::from(&m.spec_path);
                let spec = SweepSpec::parse(&path, &m.spec_yaml).map_err(|e| status(e.into()))?;
                let loaded = LoadedSpec { spec, path, text: m.spec_yaml };
                let r = api.coord.submit(&loaded).map_err(status)?;
                Ok((r, loaded))
            })
            .await?;
        let note = format!(
            "run by this coordinator's executor, store and artifacts directory ({}); the spec's `executor` and `store` \
             sections are not used here",
            self.coord.config().artifacts_dir.display()
        );
        tracing::info!(sweep = %loaded.spec.name, runs = r.runs, reused = r.reused, existed = r.existed, "sweep submitted; {note}");
        Ok(Response::new(pb::SubmitSweepResponse {
            sweep: loaded.spec.name,
            runs: r.runs as u32,
            reused_runs: r.reused as u32,
            evals: r.evals as u32,
            reused_evals: r.evals_reused as u32,
            updated: r.updated,
            requeued: r.requeued as u32,
            succeeded_runs: r.succeeded as u32,
            note,
        }))
    }

    #[tracing::instrument(name = "rpc.get_sweep", skip_all)]
    async fn get_sweep(&self, req: Request<pb::GetSweepRequest>) -> Result<Response<pb::SweepStatus>, Status> {
        self.check(&req)?;
        let name = req.into_inner().sweep;
        self.blocking(move |api| {
            let store = api.coord.store();
            let row = store.sweep(&name).map_err(|e| status(e.into()))?;
            let row = row.ok_or_else(|| status(CoordinatorError::UnknownSweep(name.clone())))?;
            let runs = store.sweep_runs(&name).map_err(|e| status(e.into()))?;
            Ok(Response::new((&row, runs.as_slice()).into()))
        })
        .await
    }

    #[tracing::instrument(name = "rpc.list_sweeps", skip_all)]
    async fn list_sweeps(&self, req: Request<pb::ListSweepsRequest>) -> Result<Response<pb::ListSweepsResponse>, Status> {
        self.check(&req)?;
        let sweeps = self.blocking(|api| api.coord.sweeps().map_err(status)).await?;
        Ok(Response::new(pb::ListSweepsResponse { sweeps: sweeps.iter().map(|(s, runs)| (s, runs.as_slice()).into()).collect() }))
    }

    #[tracing::instrument(name = "rpc.list_runs", skip_all)]
    async fn list_runs(&self, req: Request<pb::ListRunsRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        self.check(&req)?;
        let sweep = req.into_inner().sweep;
        self.blocking(move |api| {
            let runs = api.coord.sweep_runs(&sweep).map_err(status)?;
            // Every job's attempts and results in one read, not two reads a job.
            let mut details = api.coord.store().sweep_details(&sweep).map_err(|e| status(e.into()))?;
            let summaries = runs
                .into_iter()
                .map(|run| {
                    let d = details.remove(&run.run_id).unwrap_or_default();
                    let (evals, metrics) = if run.is_training() { (d.evals, Vec::new()) } else { (Vec::new(), d.metrics) };
                    (&RunResults { run, evals, metrics, attempts: d.attempts }).into()
                })
                .collect();
            Ok(Response::new(pb::ListRunsResponse { runs: summaries }))
        })
        .await
    }

    type WatchSweepStream = EventStream;

    #[tracing::instrument(name = "rpc.watch_sweep", skip_all)]
    async fn watch_sweep(&self, req: Request<pb::WatchSweepRequest>) -> Result<Response<Self::WatchSweepStream>, Status> {
        self.check(&req)?;
        let rx = self.coord.subscribe();
        let sweep = req.into_inner().sweep;
        let runs = self.blocking(move |api| api.coord.sweep_runs(&sweep).map_err(status)).await?;
        let ids: HashSet<String> = runs.into_iter().map(|r| r.run_id).collect();
        let stream = tokio_stream::StreamExt::filter_map(BroadcastStream::new(rx), move |ev| match ev {
            Ok(ev) if ids.contains(&ev.run_id) => Some(Ok(ev)),
            Ok(_) => None,
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                Some(Err(Status::data_loss(format!("watcher fell {n} events behind; read the store for the current state"))))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(name = "rpc.cancel_sweep", skip_all)]
    async fn cancel_sweep(&self, req: Request<pb::CancelSweepRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        self.check(&req)?;
        let sweep = req.into_inner().sweep;
        let n = self.blocking(move |api| api.coord.cancel_sweep(&sweep).map_err(status)).await?;
        Ok(Response::new(pb::CancelResponse { cancelled: n }))
    }

    #[tracing::instrument(name = "rpc.cancel_run", skip_all)]
    async fn cancel_run(&self, req: Request<pb::CancelRunRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        self.check(&req)?;
        let key = req.into_inner().run_id;
        let n = self
            .blocking(move |api| {
                let run = api.coord.find_run(&key).map_err(status)?;
                api.coord.cancel_run(&run.run_id).map_err(status)
            })
            .await?;
        Ok(Response::new(pb::CancelResponse { cancelled: n as u32 }))
    }

    #[tracing::instrument(name = "rpc.resume_sweep", skip_all)]
    async fn resume_sweep(&self, req: Request<pb::ResumeSweepRequest>) -> Result<Response<pb::ResumeSweepResponse>, Status> {
        self.check(&req)?;
        let m = req.into_inner();
        let n = self.blocking(move |api| api.coord.resume_sweep(&m.sweep, m.include_diverged).map_err(status)).await?;
        Ok(Response::new(pb::ResumeSweepResponse { requeued: n }))
    }

    #[tracing::instrument(name = "rpc.get_run_logs", skip_all)]
    async fn get_run_logs(&self, req: Request<pb::GetRunLogsRequest>) -> Result<Response<pb::GetRunLogsResponse>, Status> {
        self.check(&req)?;
        let m = req.into_inner();
        let key = m.run.clone();
        let run = self.blocking(move |api| api.coord.find_run(&key).map_err(status)).await?;
        if m.attempt > run.attempts {
            let has = match run.attempts {
                0 => "none yet".to_string(),
                1 => "only attempt 1".to_string(),
                n => format!("attempts 1 to {n}"),
            };
            return Err(Status::not_found(format!(
                "run {} ({}) has no attempt {}: it has {has}",
                run.name, run.run_id, m.attempt
            )));
        }
        let attempts: Vec<u64> = if m.attempt > 0 { vec![m.attempt] } else { (1..=run.attempts).collect() };
        let mut logs = Vec::new();
        for a in attempts {
            let path = self.coord.log_path(&run.artifacts_key, a);
            let file = path.clone();
            let read = tokio::task::spawn_blocking(move || read_tail(&file, LOG_TAIL_BYTES))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            let mut log = pb::AttemptLog { attempt: a, path: path.display().to_string(), ..pb::AttemptLog::default() };
            match read {
                Ok(text) => log.text = text,
                // Until an attempt ends, a cluster executor has its log where it runs.
                Err(e) => match self.coord.executor().live_log(&run.run_id, a).await {
                    Ok(Some(text)) => (log.text, log.live) = (tail(text, LOG_TAIL_BYTES as usize), true),
                    Ok(None) => log.error = e.to_string(),
                    Err(le) => log.error = format!("{e}; the running attempt's log could not be read: {le}"),
                },
            }
            logs.push(log);
        }
        Ok(Response::new(pb::GetRunLogsResponse { run_id: run.run_id, name: run.name, logs }))
    }

    #[tracing::instrument(name = "rpc.get_fit_sections", skip_all)]
    async fn get_fit_sections(
        &self,
        req: Request<pb::GetFitSectionsRequest>,
    ) -> Result<Response<pb::GetFitSectionsResponse>, Status> {
        self.check(&req)?;
        let m = req.into_inner();
        let bad = |what: &str, e: serde_json::Error| Status::invalid_argument(format!("{what}: {e}"));
        let base: isoflop_fit::FitOptions = serde_json::from_str(&m.fit_options_json).map_err(|e| bad("fit_options_json", e))?;
        let so: isoflop_fit::sweep::SectionOptions =
            serde_json::from_str(&m.section_options_json).map_err(|e| bad("section_options_json", e))?;
        let built = self
            .blocking(move |api| {
                api.coord.sweep_runs(&m.sweep).map_err(status)?;
                let task = (!m.task.is_empty()).then_some(m.task.as_str());
                isoflop_fit::sweep::sections(api.coord.store().as_ref(), &m.sweep, task, &base, &so, m.report)
                    .map_err(|e| Status::invalid_argument(e.to_string()))
            })
            .await?;
        let sections_json = serde_json::to_string(&built).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::GetFitSectionsResponse { sections_json }))
    }

    #[tracing::instrument(name = "rpc.delete_sweep", skip_all)]
    async fn delete_sweep(&self, req: Request<pb::DeleteSweepRequest>) -> Result<Response<pb::DeleteSweepResponse>, Status> {
        self.check(&req)?;
        let m = req.into_inner();
        let (deleted, dirs) = self.blocking(move |api| api.coord.delete_sweep(&m.sweep, m.dry_run).map_err(status)).await?;
        Ok(Response::new(pb::DeleteSweepResponse {
            runs: deleted.jobs.iter().filter(|j| j.training).count() as u32,
            evals: deleted.jobs.iter().filter(|j| !j.training).count() as u32,
            shared: deleted.shared as u32,
            artifacts: dirs.iter().map(|d| d.display().to_string()).collect(),
        }))
    }

    #[tracing::instrument(name = "rpc.get_run_events", skip_all)]
    async fn get_run_events(&self, req: Request<pb::GetRunEventsRequest>) -> Result<Response<pb::GetRunEventsResponse>, Status> {
        self.check(&req)?;
        let run = req.into_inner().run;
        self.blocking(move |api| {
            let run = api.coord.find_run(&run).map_err(status)?;
            let events = api.coord.store().events(&run.run_id).map_err(|e| status(e.into()))?;
            let events = events
                .into_iter()
                .map(|e| pb::RunStateEvent {
                    id: e.id,
                    attempt: e.attempt.unwrap_or(0),
                    at_unix_millis: e.at_ms,
                    from: isoflop_proto::convert::run_state_value(e.from),
                    to: isoflop_proto::convert::run_state_value(e.to),
                    failure_class: isoflop_proto::convert::failure_class_value(e.failure_class),
                    message: e.message,
                })
                .collect();
            Ok(Response::new(pb::GetRunEventsResponse { run_id: run.run_id, name: run.name, events }))
        })
        .await
    }

    #[tracing::instrument(name = "rpc.get_run_progress", skip_all)]
    async fn get_run_progress(
        &self,
        req: Request<pb::GetRunProgressRequest>,
    ) -> Result<Response<pb::GetRunProgressResponse>, Status> {
        self.check(&req)?;
        let run = req.into_inner().run;
        self.blocking(move |api| api.run_progress(&run).map(Response::new)).await
    }
}

impl ControlApi {
    /// `GetRunProgress`: a run's progress history, every attempt, oldest first.
    pub(crate) fn run_progress(&self, run: &str) -> Result<pb::GetRunProgressResponse, Status> {
        let run = self.coord.find_run(run).map_err(status)?;
        let points = self.coord.store().progress(&run.run_id).map_err(|e| status(e.into()))?;
        Ok(pb::GetRunProgressResponse {
            run_id: run.run_id,
            name: run.name,
            points: points
                .iter()
                .map(|p| pb::ProgressRecord { attempt: p.attempt, at_unix_millis: p.at_ms, progress: Some(p.into()) })
                .collect(),
        })
    }
}

/// The most of one log a `GetRunLogs` answer carries (gRPC messages are capped at 4 MiB).
const LOG_TAIL_BYTES: u64 = 2 << 20;

/// The last `max` bytes of a file, as text.
fn read_tail(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut buf = Vec::new();
    if len > max {
        f.seek(SeekFrom::Start(len - max))?;
    }
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(if len > max { format!("[... first {} bytes left out ...]\n{text}", len - max) } else { text })
}

/// The last `max` bytes of a text (at a character boundary).
fn tail(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[... first {start} bytes left out ...]\n{}", &text[start..])
}
