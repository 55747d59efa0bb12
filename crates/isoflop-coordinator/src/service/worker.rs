//! The worker API: attach, report, finish. Every call must carry the attempt's bearer token
//! and the protocol version this build speaks. Each call is one store lifecycle verb; an
//! attempt that has ended (cancelled, presumed lost, already finished) is `ABORTED`, so the
//! worker learns that its work was not recorded. Any other failure of the store (a full disk,
//! a lost database connection) is `UNAVAILABLE`, which the worker retries, keeping what it
//! has not delivered. A report is one store transaction: a token verified once per attempt is
//! remembered (the report verb itself refuses a stale attempt).

use crate::auth;
use crate::coordinator::{Coordinator, CoordinatorError};
use crate::resolve::{eval_config, run_config};
use isoflop_proto::PROTOCOL_VERSION;
use isoflop_proto::convert;
use isoflop_proto::v1 as pb;
use isoflop_proto::v1::worker_service_server::WorkerService;
use isoflop_store::{AttemptOutcome, AttemptRow, CheckpointRow, Ending, ProgressPoint, RejectedCheckpoint, Report, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// The worker API over a coordinator.
#[derive(Debug, Clone)]
pub struct WorkerApi {
    coord: Coordinator,
    /// The token hash each attempt authenticated with, so that its reports need no read.
    verified: Arc<Mutex<HashMap<(String, u64), String>>>,
}

impl WorkerApi {
    pub fn new(coord: Coordinator) -> Self {
        Self { coord, verified: Arc::default() }
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), String>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks version and token for a report without a store read once the attempt has
    /// authenticated (whether it is still live, the report verb decides in its transaction).
    fn authorize_report<T>(&self, req: &Request<T>, version: u32, run_id: &str, attempt: u64) -> Result<(), Status> {
        let key = (run_id.to_string(), attempt);
        let token = auth::bearer(req.metadata()).map(auth::hash_token);
        let known = matches!((self.verified().get(&key), &token), (Some(h), Some(t)) if auth::same(h, t));
        if version == PROTOCOL_VERSION && known {
            return Ok(());
        }
        let row = self.authorize(req, version, run_id, attempt)?;
        self.verified().insert(key, row.token_hash);
        Ok(())
    }

    /// Forgets an attempt's token once it cannot report any more.
    fn forget(&self, run_id: &str, attempt: u64) {
        self.verified().remove(&(run_id.to_string(), attempt));
    }

    /// Checks version and token; returns the active attempt.
    fn authorize<T>(&self, req: &Request<T>, version: u32, run_id: &str, attempt: u64) -> Result<AttemptRow, Status> {
        let row = self.authenticate(req, version, run_id, attempt)?;
        if row.outcome != AttemptOutcome::Active {
            return Err(ended(run_id, attempt, row.outcome.as_str()));
        }
        Ok(row)
    }

    /// The protocol version and the attempt's token, whatever the attempt's outcome.
    fn authenticate<T>(&self, req: &Request<T>, version: u32, run_id: &str, attempt: u64) -> Result<AttemptRow, Status> {
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
            .map_err(store_failed)?
            .ok_or_else(|| Status::not_found(format!("run {run_id} attempt {attempt} not found")))?;
        if !auth::same(&row.token_hash, &auth::hash_token(token)) {
            return Err(Status::unauthenticated("token does not match this attempt"));
        }
        Ok(row)
    }

    fn lease_deadline(&self) -> i64 {
        self.coord.now_ms() + self.coord.config().lease.as_millis() as i64
    }
}

/// The store failed: the worker retries.
fn store_failed(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the coordinator's store failed (retry): {e}"))
}

fn ended(run_id: &str, attempt: u64, how: &str) -> Status {
    Status::aborted(format!("run {run_id} attempt {attempt} has ended ({how}); this outcome is not recorded"))
}

/// A store refusal as the worker sees it.
fn refused(e: CoordinatorError, run_id: &str, attempt: u64) -> Status {
    match e {
        CoordinatorError::Store(StoreError::StaleAttempt { .. }) => ended(run_id, attempt, "no longer active"),
        CoordinatorError::Store(StoreError::Transition { source, .. }) => Status::failed_precondition(source.to_string()),
        e => store_failed(e),
    }
}

/// The calls, run on blocking threads (every one reads or writes the store).
impl WorkerApi {
    fn attach_now(&self, req: Request<pb::AttachRequest>) -> Result<Response<pb::AttachResponse>, Status> {
        let m = req.get_ref();
        self.authorize(&req, m.protocol_version, &m.run_id, m.attempt)?;
        let store = self.coord.store();
        let run = store.run(&m.run_id).map_err(store_failed)?.ok_or_else(|| Status::not_found("run not found"))?;
        // What the job reads: a training run resumes from its newest checkpoint; an evaluation
        // job reads its parent's checkpoint at its step.
        let (eval, ckpt, keep_steps) = match &run.eval {
            None => {
                run_config(&run.config_json)
                    .map_err(|e| Status::internal(format!("stored config of run {} is corrupt: {e}", m.run_id)))?;
                let keep = store.eval_steps(&m.run_id).map_err(store_failed)?;
                (None, store.latest_checkpoint(&m.run_id).map_err(store_failed)?, keep)
            }
            Some(of) => {
                eval_config(&run.config_json)
                    .map_err(|e| Status::internal(format!("stored config of evaluation job {} is corrupt: {e}", m.run_id)))?;
                let parent = store
                    .run(&of.parent)
                    .map_err(store_failed)?
                    .ok_or_else(|| Status::internal("the job's run is not stored"))?;
                let at = store.checkpoints(&of.parent).map_err(store_failed)?.into_iter().find(|c| c.step == of.step);
                let Some(at) = at else {
                    let message = format!("run {} has no checkpoint at step {}", of.parent, of.step);
                    self.coord
                        .fail(&m.run_id, m.attempt, isoflop_core::FailureClass::UserError, message.clone())
                        .map_err(store_failed)?;
                    return Err(Status::failed_precondition(message));
                };
                let assignment = pb::EvalAssignment { run_config_json: parent.config_json, checkpoint: at.path };
                (Some(assignment), None, Vec::new())
            }
        };
        let rt = match self.coord.runtime_of(&m.run_id) {
            Ok(rt) => rt,
            Err(why) => {
                let message = format!("no runtime settings: {why}");
                self.coord
                    .fail(&m.run_id, m.attempt, isoflop_core::FailureClass::UserError, message.clone())
                    .map_err(store_failed)?;
                return Err(Status::failed_precondition(message));
            }
        };
        let resume_step = ckpt.as_ref().map(|c| c.step).unwrap_or(0);
        let ev = store
            .attach(&m.run_id, m.attempt, resume_step, self.lease_deadline())
            .map_err(|e| refused(e.into(), &m.run_id, m.attempt))?;
        self.coord.publish(&ev);
        tracing::info!(host = %m.hostname, pid = m.pid, resume_step, "worker attached");
        Ok(Response::new(pb::AttachResponse {
            protocol_version: PROTOCOL_VERSION,
            run_config_json: run.config_json,
            checkpoint_dir: if eval.is_some() {
                String::new()
            } else {
                self.coord.checkpoint_dir(&run.artifacts_key).display().to_string()
            },
            resume_checkpoint: ckpt.map(|c| c.path).unwrap_or_default(),
            resume_step,
            checkpoint_every: rt.runtime.checkpoint_every,
            progress_every: rt.runtime.progress_every,
            threads: rt.threads as u32,
            device: rt.runtime.device.to_string(),
            lease_seconds: self.coord.config().lease.as_secs(),
            micro_batch: rt.runtime.micro_batch.unwrap_or(0),
            precision: rt.runtime.precision.as_str().into(),
            keep_steps,
            eval,
            store_id: store.store_id().map_err(store_failed)?,
        }))
    }

    fn report_now(&self, req: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let m = req.get_ref();
        self.authorize_report(&req, m.protocol_version, &m.run_id, m.attempt)?;
        let now = self.coord.now_ms();
        let report = Report {
            lease_expires_ms: self.lease_deadline(),
            resumed_from: m.resumed_from,
            progress: m.progress.iter().map(|p| ProgressPoint::new(m.attempt, now, &p.into())).collect(),
            checkpoints: m.checkpoints.iter().map(|c| CheckpointRow { attempt: m.attempt, at_ms: now, ..c.into() }).collect(),
            rejected: m
                .rejected_checkpoints
                .iter()
                .map(|r| RejectedCheckpoint { step: r.step, path: r.path.clone(), reason: r.reason.clone() })
                .collect(),
        };
        let notes = match self.coord.store().report(&m.run_id, m.attempt, &report) {
            Ok(notes) => notes,
            Err(e) => {
                if matches!(e, StoreError::StaleAttempt { .. }) {
                    self.forget(&m.run_id, m.attempt);
                }
                return Err(refused(e.into(), &m.run_id, m.attempt));
            }
        };
        for ev in &notes {
            tracing::warn!(run_id = %m.run_id, attempt = m.attempt, "{}", ev.message);
            self.coord.publish(ev);
        }
        for p in &m.progress {
            self.coord.broadcast(&m.run_id, pb::run_event::Event::Progress(*p));
        }
        Ok(Response::new(pb::ReportResponse { stop: self.coord.should_stop(&m.run_id) }))
    }

    fn finish_now(&self, req: Request<pb::FinishRequest>) -> Result<Response<pb::FinishResponse>, Status> {
        let m = req.get_ref();
        let row = self.authenticate(&req, m.protocol_version, &m.run_id, m.attempt)?;
        self.forget(&m.run_id, m.attempt);
        if row.outcome == AttemptOutcome::Cancelled
            && let Some(pb::finish_request::Outcome::Interrupted(i)) = &m.outcome
            && let Some(c) = Option::<CheckpointRow>::from(i)
        {
            // A cancelled worker stopped after a checkpoint: record it, so a resume starts
            // from the step it really reached.
            let c = CheckpointRow { attempt: m.attempt, at_ms: self.coord.now_ms(), ..c };
            if self.coord.store().stop_checkpoint(&m.run_id, m.attempt, &c).map_err(store_failed)? {
                tracing::info!(step = c.step, "the cancelled attempt's stop checkpoint is recorded");
                return Ok(Response::new(pb::FinishResponse {}));
            }
        }
        if row.outcome != AttemptOutcome::Active {
            return Err(ended(&m.run_id, m.attempt, row.outcome.as_str()));
        }
        let ending = match &m.outcome {
            Some(pb::finish_request::Outcome::Success(s)) => Ending::Succeeded {
                results: s.metrics.iter().map(isoflop_core::EvalMetric::from).collect(),
                items: s.items.iter().map(isoflop_core::choice::ItemScore::from).collect(),
                message: if s.metrics.is_empty() {
                    format!("final loss {:.4}", s.final_loss)
                } else {
                    format!("{} results", s.metrics.len())
                },
            },
            Some(pb::finish_request::Outcome::Failure(f)) => Ending::Failed {
                class: convert::failure_class(f.class).unwrap_or(isoflop_core::FailureClass::Unknown),
                message: f.message.clone(),
                retries: self.coord.config().retries,
            },
            Some(pb::finish_request::Outcome::Interrupted(i)) => Ending::Interrupted {
                checkpoint: Option::<CheckpointRow>::from(i).map(|c| CheckpointRow {
                    attempt: m.attempt,
                    at_ms: self.coord.now_ms(),
                    ..c
                }),
                // Stopped by this coordinator's drain (Ctrl-C of `isoflop run`, a stopping
                // `serve`), or by something outside the sweep (a cluster's preemption).
                class: if self.coord.is_draining() {
                    isoflop_core::FailureClass::Interrupted
                } else {
                    isoflop_core::FailureClass::Preempted
                },
                message: format!("stopped at step {} after a checkpoint", i.checkpoint_step),
            },
            None => return Err(Status::invalid_argument("finish without an outcome")),
        };
        self.coord.finish(&m.run_id, m.attempt, &ending).map_err(|e| refused(e, &m.run_id, m.attempt))?;
        Ok(Response::new(pb::FinishResponse {}))
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    #[tracing::instrument(name = "rpc.attach", skip_all, fields(run_id = %req.get_ref().run_id, attempt = req.get_ref().attempt))]
    async fn attach(&self, req: Request<pb::AttachRequest>) -> Result<Response<pb::AttachResponse>, Status> {
        let api = self.clone();
        self.coord.blocking(move |_| api.attach_now(req)).await
    }

    #[tracing::instrument(name = "rpc.report", skip_all, fields(run_id = %req.get_ref().run_id, attempt = req.get_ref().attempt))]
    async fn report(&self, req: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let api = self.clone();
        self.coord.blocking(move |_| api.report_now(req)).await
    }

    #[tracing::instrument(name = "rpc.finish", skip_all, fields(run_id = %req.get_ref().run_id, attempt = req.get_ref().attempt))]
    async fn finish(&self, req: Request<pb::FinishRequest>) -> Result<Response<pb::FinishResponse>, Status> {
        let api = self.clone();
        self.coord.blocking(move |_| api.finish_now(req)).await
    }
}
