//! The worker API: attach, report, finish. Every call must carry the attempt's bearer token
//! and the protocol version this build speaks.

use crate::auth;
use crate::convert::{eval_row, progress_row};
use crate::coordinator::{Coordinator, class_from_pb};
use crate::resolve::run_config;
use isoflop_core::{FailureClass, RunState};
use isoflop_proto::PROTOCOL_VERSION;
use isoflop_proto::v1 as pb;
use isoflop_proto::v1::worker_service_server::WorkerService;
use isoflop_store::{AttemptEnd, AttemptOutcome, AttemptRow, CheckpointRow, EvalRow, ProgressPoint, now_ms};
use tonic::{Request, Response, Status};

/// The worker API over a coordinator.
#[derive(Debug, Clone)]
pub struct WorkerApi {
    coord: Coordinator,
}

impl WorkerApi {
    pub fn new(coord: Coordinator) -> Self {
        Self { coord }
    }

    /// Checks version and token; returns the active attempt.
    fn authorize<T>(&self, req: &Request<T>, version: u32, run_id: &str, attempt: u64) -> Result<AttemptRow, Status> {
        if version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "worker protocol version {version} is not supported by this coordinator (it speaks {PROTOCOL_VERSION}); \
                 use the same isoflop release for workers and coordinator"
            )));
        }
        let token = auth::bearer(req.metadata()).ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let row = self
            .coord
            .store()
            .attempt(run_id, attempt)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("run {run_id} attempt {attempt} not found")))?;
        if !auth::same(&row.token_hash, &auth::hash_token(token)) {
            return Err(Status::unauthenticated("token does not match this attempt"));
        }
        if row.outcome != AttemptOutcome::Active {
            return Err(Status::aborted(format!("run {run_id} attempt {attempt} has ended ({})", row.outcome.as_str())));
        }
        Ok(row)
    }

    fn lease_deadline(&self) -> i64 {
        now_ms() + self.coord.inner.cfg.lease.as_millis() as i64
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn attach(&self, req: Request<pb::AttachRequest>) -> Result<Response<pb::AttachResponse>, Status> {
        let m = req.get_ref();
        self.authorize(&req, m.protocol_version, &m.run_id, m.attempt)?;
        let store = self.coord.store();
        let run = store.run(&m.run_id).map_err(internal)?.ok_or_else(|| Status::not_found("run not found"))?;
        run_config(&run.config_json)
            .map_err(|e| Status::internal(format!("stored config of run {} is corrupt: {e}", m.run_id)))?;
        let ckpt = store.latest_checkpoint(&m.run_id).map_err(internal)?;
        let resume_step = ckpt.as_ref().map(|c| c.step).unwrap_or(0);
        store.attach(&m.run_id, m.attempt, resume_step, self.lease_deadline()).map_err(|e| Status::aborted(e.to_string()))?;
        self.coord.broadcast_state(&m.run_id, RunState::Launching, RunState::Running, None, "");
        let rt = self.coord.runtime_of(&m.run_id);
        Ok(Response::new(pb::AttachResponse {
            protocol_version: PROTOCOL_VERSION,
            run_config_json: run.config_json,
            checkpoint_dir: self.coord.checkpoint_dir(&m.run_id).display().to_string(),
            resume_checkpoint: ckpt.map(|c| c.path).unwrap_or_default(),
            resume_step,
            checkpoint_every: rt.runtime.checkpoint_every,
            progress_every: rt.runtime.progress_every,
            threads: rt.threads as u32,
            device: rt.runtime.device.to_string(),
            lease_seconds: self.coord.inner.cfg.lease.as_secs(),
            micro_batch: rt.runtime.micro_batch.unwrap_or(0),
            precision: rt.runtime.precision.as_str().into(),
        }))
    }

    async fn report(&self, req: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let m = req.get_ref();
        self.authorize(&req, m.protocol_version, &m.run_id, m.attempt)?;
        let store = self.coord.store();
        store.renew_lease(&m.run_id, m.attempt, self.lease_deadline()).map_err(|e| Status::aborted(e.to_string()))?;
        if let Some(step) = m.resumed_from {
            store.set_resume_step(&m.run_id, m.attempt, step).map_err(internal)?;
        }
        let now = now_ms();
        let points: Vec<ProgressPoint> = m.progress.iter().map(|p| progress_row(p, m.attempt, now)).collect();
        if !points.is_empty() {
            store.add_progress(&m.run_id, m.attempt, &points).map_err(internal)?;
        }
        for c in &m.checkpoints {
            let row =
                CheckpointRow { step: c.step, attempt: m.attempt, path: c.path.clone(), tokens_seen: c.tokens_seen, at_ms: now };
            store.add_checkpoint(&m.run_id, m.attempt, &row).map_err(internal)?;
        }
        for p in &m.progress {
            self.coord.broadcast(&m.run_id, pb::run_event::Event::Progress(*p));
        }
        Ok(Response::new(pb::ReportResponse { stop: self.coord.should_stop(&m.run_id) }))
    }

    async fn finish(&self, req: Request<pb::FinishRequest>) -> Result<Response<pb::FinishResponse>, Status> {
        let m = req.get_ref();
        self.authorize(&req, m.protocol_version, &m.run_id, m.attempt)?;
        let store = self.coord.store();
        match &m.outcome {
            Some(pb::finish_request::Outcome::Success(s)) => {
                let evals: Vec<EvalRow> = s.evals.iter().map(eval_row).collect();
                store.put_evals(&m.run_id, m.attempt, &evals).map_err(internal)?;
                for e in &s.evals {
                    self.coord.broadcast(&m.run_id, pb::run_event::Event::Eval(e.clone()));
                }
                let end = AttemptEnd {
                    outcome: AttemptOutcome::Succeeded,
                    failure_class: None,
                    message: format!("final loss {:.4}", s.final_loss),
                    not_before_ms: None,
                    spend_retry: false,
                };
                self.coord.end_attempt(&m.run_id, m.attempt, &end, RunState::Succeeded);
            }
            Some(pb::finish_request::Outcome::Failure(f)) => {
                self.coord.fail_attempt(&m.run_id, m.attempt, class_from_pb(f.class), f.message.clone());
            }
            Some(pb::finish_request::Outcome::Interrupted(i)) => {
                if !i.checkpoint_path.is_empty() {
                    let row = CheckpointRow {
                        step: i.checkpoint_step,
                        attempt: m.attempt,
                        path: i.checkpoint_path.clone(),
                        tokens_seen: 0,
                        at_ms: now_ms(),
                    };
                    store.add_checkpoint(&m.run_id, m.attempt, &row).map_err(internal)?;
                }
                let end = AttemptEnd {
                    outcome: AttemptOutcome::Interrupted,
                    failure_class: Some(FailureClass::Preempted),
                    message: format!("stopped at step {} after a checkpoint", i.checkpoint_step),
                    not_before_ms: None,
                    spend_retry: false,
                };
                self.coord.end_attempt(&m.run_id, m.attempt, &end, RunState::Queued);
            }
            None => return Err(Status::invalid_argument("finish without an outcome")),
        }
        Ok(Response::new(pb::FinishResponse {}))
    }
}
