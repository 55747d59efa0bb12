//! The control API: what the CLI and other clients call.

use crate::convert::{eval_msg, progress_msg};
use crate::coordinator::{Coordinator, CoordinatorError, pb_class, pb_run_state};
use isoflop_core::RunState;
use isoflop_core::spec::{LoadedSpec, SweepSpec};
use isoflop_proto::v1 as pb;
use isoflop_proto::v1::control_service_server::ControlService;
use std::collections::HashSet;
use std::path::PathBuf;
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

    /// The runs of an existing sweep.
    fn runs_of(&self, sweep: &str) -> Result<Vec<isoflop_store::RunRow>, Status> {
        let store = self.coord.store();
        if store.sweep(sweep).map_err(|e| Status::internal(e.to_string()))?.is_none() {
            return Err(Status::not_found(format!("sweep `{sweep}` not found")));
        }
        store.sweep_runs(sweep).map_err(|e| Status::internal(e.to_string()))
    }

    /// A run by id, unique id prefix or name, across every sweep.
    fn find_run(&self, key: &str) -> Result<isoflop_store::RunRow, Status> {
        let store = self.coord.store();
        let internal = |e: isoflop_store::StoreError| Status::internal(e.to_string());
        if let Some(r) = store.run(key).map_err(internal)? {
            return Ok(r);
        }
        let mut found: Vec<isoflop_store::RunRow> = Vec::new();
        for s in store.sweeps().map_err(internal)? {
            for r in store.sweep_runs(&s.name).map_err(internal)? {
                if (r.run_id.starts_with(key) || r.name == key) && !found.iter().any(|f| f.run_id == r.run_id) {
                    found.push(r);
                }
            }
        }
        match found.len() {
            0 => Err(Status::not_found(format!("no run matches `{key}`"))),
            1 => Ok(found.remove(0)),
            n => Err(Status::invalid_argument(format!("`{key}` matches {n} runs; give more of the run id"))),
        }
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
}

fn status(e: CoordinatorError) -> Status {
    match e {
        CoordinatorError::Spec(e) => Status::invalid_argument(e.to_string()),
        CoordinatorError::UnknownSweep(_) | CoordinatorError::UnknownRun(_) => Status::not_found(e.to_string()),
        CoordinatorError::Store(isoflop_store::StoreError::SweepConflict { .. }) => Status::already_exists(e.to_string()),
        CoordinatorError::Store(e) => Status::internal(e.to_string()),
    }
}

/// A run as the control API shows it.
pub fn run_summary(coord: &Coordinator, r: &isoflop_store::RunRow) -> pb::RunSummary {
    let evals = coord.store().evals(&r.run_id).unwrap_or_default();
    pb::RunSummary {
        run_id: r.run_id.clone(),
        name: r.name.clone(),
        budget: r.budget,
        state: pb_run_state(r.state),
        failure_class: pb_class(r.failure_class),
        message: r.message.clone(),
        attempts: r.attempts,
        progress: r.progress.as_ref().map(progress_msg),
        evals: evals.into_iter().map(eval_msg).collect(),
        corpus: r.corpus.clone(),
        config_json: r.config_json.clone(),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ControlService for ControlApi {
    async fn submit_sweep(&self, req: Request<pb::SubmitSweepRequest>) -> Result<Response<pb::SubmitSweepResponse>, Status> {
        self.check(&req)?;
        let m = req.into_inner();
        let path = PathBuf::from(&m.spec_path);
        let spec = SweepSpec::parse(&path, &m.spec_yaml).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let loaded = LoadedSpec { spec, path, text: m.spec_yaml };
        let r = self.coord.submit(&loaded).map_err(status)?;
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
            note,
        }))
    }

    async fn get_sweep(&self, req: Request<pb::GetSweepRequest>) -> Result<Response<pb::SweepStatus>, Status> {
        self.check(&req)?;
        let name = req.into_inner().sweep;
        let runs = self.runs_of(&name)?;
        let count = |f: &dyn Fn(RunState) -> bool| runs.iter().filter(|r| f(r.state)).count() as u32;
        Ok(Response::new(pb::SweepStatus {
            sweep: name,
            total: runs.len() as u32,
            succeeded: count(&|s| s == RunState::Succeeded),
            failed: count(&|s| s == RunState::Failed),
            active: count(&|s| s.is_active()),
            queued: count(&|s| matches!(s, RunState::Queued | RunState::Blocked | RunState::Planned)),
            cancelled: count(&|s| s == RunState::Cancelled),
        }))
    }

    async fn list_runs(&self, req: Request<pb::ListRunsRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        self.check(&req)?;
        let runs = self.runs_of(&req.into_inner().sweep)?;
        Ok(Response::new(pb::ListRunsResponse { runs: runs.iter().map(|r| run_summary(&self.coord, r)).collect() }))
    }

    type WatchSweepStream = EventStream;

    async fn watch_sweep(&self, req: Request<pb::WatchSweepRequest>) -> Result<Response<Self::WatchSweepStream>, Status> {
        self.check(&req)?;
        let rx = self.coord.subscribe();
        let runs = self.runs_of(&req.into_inner().sweep)?;
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

    async fn cancel_sweep(&self, req: Request<pb::CancelSweepRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        self.check(&req)?;
        let n = self.coord.cancel_sweep(&req.into_inner().sweep).map_err(status)?;
        Ok(Response::new(pb::CancelResponse { cancelled: n }))
    }

    async fn cancel_run(&self, req: Request<pb::CancelRunRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        self.check(&req)?;
        let run = self.find_run(&req.into_inner().run_id)?;
        let n = self.coord.cancel_run(&run.run_id).map_err(status)?;
        Ok(Response::new(pb::CancelResponse { cancelled: n as u32 }))
    }

    async fn resume_sweep(&self, req: Request<pb::ResumeSweepRequest>) -> Result<Response<pb::ResumeSweepResponse>, Status> {
        self.check(&req)?;
        let m = req.into_inner();
        let n = self.coord.resume_sweep(&m.sweep, m.include_diverged).map_err(status)?;
        Ok(Response::new(pb::ResumeSweepResponse { requeued: n }))
    }

    async fn get_run_logs(&self, req: Request<pb::GetRunLogsRequest>) -> Result<Response<pb::GetRunLogsResponse>, Status> {
        self.check(&req)?;
        let m = req.into_inner();
        let run = self.find_run(&m.run)?;
        let attempts: Vec<u64> = if m.attempt > 0 { vec![m.attempt] } else { (1..=run.attempts).collect() };
        let logs = attempts
            .into_iter()
            .map(|a| {
                let path = self.coord.log_path(&run.run_id, a);
                let (text, error) = match read_tail(&path, LOG_TAIL_BYTES) {
                    Ok(t) => (t, String::new()),
                    Err(e) => (String::new(), e.to_string()),
                };
                pb::AttemptLog { attempt: a, path: path.display().to_string(), text, error }
            })
            .collect();
        Ok(Response::new(pb::GetRunLogsResponse { run_id: run.run_id, name: run.name, logs }))
    }
}

/// The most of one log file a `GetRunLogs` answer carries (gRPC messages are capped at 4 MiB).
const LOG_TAIL_BYTES: u64 = 2 << 20;

/// The last `max` bytes of a file, as text.
fn read_tail(path: &std::path::Path, max: u64) -> std::io::Result<String> {
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
