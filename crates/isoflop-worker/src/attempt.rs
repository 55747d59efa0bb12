//! One attempt: attach, train on a dedicated thread, report, finish.

use crate::client::WorkerClient;
use crate::device;
use isoflop_core::flops::mfu_flops_per_token;
use isoflop_core::{Device, EvalJobConfig, FailureClass, Precision, Progress, RunConfig};
use isoflop_proto::v1 as pb;
use isoflop_proto::{PROTOCOL_VERSION, convert};
use isoflop_train::checkpoint::{self, CheckpointError};
use isoflop_train::{CheckpointInfo, Control, TrainError, TrainHooks, TrainJob, TrainOutcome};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{Instrument, info, info_span, warn};

/// Which attempt of which run (from the environment an executor sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub run_id: String,
    pub attempt: u64,
}

/// How the worker runs, beyond its assignment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Peak FLOP/s of the device for MFU; `None` looks the device up by name
    /// ([`isoflop_core::device::peak_flops`]) and reports no MFU for an unknown one.
    pub peak_flops: Option<f64>,
}

/// How an attempt ended, as recorded by the coordinator.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// Trained to the end and evaluated.
    Succeeded,
    /// Checkpointed and stopped on request (it resumes from `step`).
    Interrupted { step: u64 },
    /// Failed with a class; the coordinator retries or not by it.
    Failed { class: FailureClass, message: String },
}

/// Why a worker could not run or report its attempt.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot reach coordinator at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("attach refused: {0}")]
    AttachRefused(String),
    /// The assignment cannot be trained (reported to the coordinator as `user_error`).
    #[error("{0}")]
    BadAssignment(String),
    /// The coordinator ended the attempt (cancelled, or presumed lost); nothing more is sent.
    #[error("attempt {attempt} of run {run_id} was revoked by the coordinator: {message}")]
    Revoked { run_id: String, attempt: u64, message: String },
    /// The coordinator refused the outcome (the attempt had ended), or never heard it.
    #[error("finish refused: {0}")]
    FinishRefused(String),
    #[error("training thread: {0}")]
    Thread(String),
    /// SIGTERM or SIGINT came before the attempt attached: nothing was trained or sent.
    #[error("stopped (SIGTERM or SIGINT) before the attempt attached")]
    Interrupted,
}

/// Cancelled on SIGTERM or SIGINT (the worker then checkpoints and stops).
pub fn interrupt_on_signals() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    let t = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(target: "worker", "{name}: checkpointing and stopping");
        t.cancel();
    });
    Ok(token)
}

enum Msg {
    Progress(pb::Progress),
    Checkpoint(pb::CheckpointSaved),
}

struct Hooks {
    tx: mpsc::UnboundedSender<Msg>,
    stop: Arc<AtomicBool>,
    mfu_flops_per_token: f64,
    peak_flops: Option<f64>,
}

impl TrainHooks for Hooks {
    fn progress(&mut self, p: &Progress) -> Control {
        let mfu = self.peak_flops.map_or(0.0, |peak| p.tokens_per_second * self.mfu_flops_per_token / peak);
        // The receiver lives until training ends.
        let _ = self.tx.send(Msg::Progress(pb::Progress::from(&Progress { mfu, ..p.clone() })));
        if self.stop.load(Ordering::SeqCst) { Control::Stop } else { Control::Continue }
    }

    fn notice(&mut self, msg: &str) {
        warn!(target: "worker", "{msg}");
    }

    fn checkpoint_saved(&mut self, c: &CheckpointInfo) {
        // The receiver lives until training ends.
        let _ = self.tx.send(Msg::Checkpoint(pb::CheckpointSaved {
            step: c.step,
            path: c.path.display().to_string(),
            tokens_seen: c.tokens_seen,
        }));
    }
}

/// What an assignment asks for, checked.
struct Assignment {
    /// The training run (for an evaluation job: the run whose checkpoint it scores).
    config: RunConfig,
    /// Set for an evaluation job: what it scores and the checkpoint it reads.
    eval: Option<(EvalJobConfig, PathBuf)>,
    device: Device,
    precision: Precision,
}

fn check_assignment(a: &pb::AttachResponse, run_id: &str) -> Result<Assignment, String> {
    let device = convert::device(&a.device).map_err(|e| e.to_string())?;
    let precision = convert::precision(&a.precision).map_err(|e| e.to_string())?;
    let Some(e) = &a.eval else {
        let config: RunConfig =
            serde_json::from_str(&a.run_config_json).map_err(|e| format!("assignment is not a valid run configuration: {e}"))?;
        if config.run_id().0 != run_id {
            return Err(format!("configuration hashes to {}, not run {run_id}", config.run_id()));
        }
        return Ok(Assignment { config, eval: None, device, precision });
    };
    let job: EvalJobConfig = serde_json::from_str(&a.run_config_json)
        .map_err(|e| format!("assignment is not a valid evaluation job configuration: {e}"))?;
    if job.job_id().0 != run_id {
        return Err(format!("evaluation job configuration hashes to {}, not job {run_id}", job.job_id()));
    }
    let config: RunConfig =
        serde_json::from_str(&e.run_config_json).map_err(|e| format!("the job's run is not a valid run configuration: {e}"))?;
    if config.run_id() != job.run {
        return Err(format!("the job's run configuration hashes to {}, not run {}", config.run_id(), job.run));
    }
    Ok(Assignment { config, eval: Some((job, PathBuf::from(&e.checkpoint))), device, precision })
}

/// Runs one attempt to its end and tells the coordinator how it ended. `interrupt` asks the
/// worker to checkpoint and stop (see [`interrupt_on_signals`]).
pub async fn run_attempt(
    client: &mut dyn WorkerClient,
    who: &Attempt,
    opts: &Options,
    interrupt: CancellationToken,
) -> Result<Ended, WorkerError> {
    let span = info_span!("attempt", run_id = %who.run_id, attempt = who.attempt);
    attempt(client, who, opts, interrupt).instrument(span).await
}

/// How long a worker tries to attach while the coordinator is unreachable or its store fails.
const ATTACH_PATIENCE: Duration = Duration::from_secs(60);
/// How long a worker stopped by SIGTERM tries to deliver its last report and outcome.
const INTERRUPTED_PATIENCE: Duration = Duration::from_secs(5);

async fn attempt(
    client: &mut dyn WorkerClient,
    who: &Attempt,
    opts: &Options,
    interrupt: CancellationToken,
) -> Result<Ended, WorkerError> {
    let (run_id, attempt) = (who.run_id.clone(), who.attempt);
    let attach = pb::AttachRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: run_id.clone(),
        attempt,
        hostname: hostname(),
        pid: std::process::id(),
    };
    // UNAVAILABLE is the coordinator unreachable (restarting) or its store failing (a full
    // disk): worth waiting for; anything else is a refusal.
    let deadline = Instant::now() + ATTACH_PATIENCE;
    let assignment = loop {
        // Biased: an answer already there wins over an interrupt, so the coordinator hears
        // of the interrupt from the attempt itself (an outcome at step 0) when it can.
        let answer = tokio::select! {
            biased;
            r = bounded(CALL_LIMIT, client.attach(attach.clone())) => r,
            _ = interrupt.cancelled() => return Err(WorkerError::Interrupted),
        };
        match answer {
            Ok(a) => break a,
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                warn!(target: "worker", "cannot attach yet ({}); retrying", s.message());
                // An orphan a new coordinator stops with SIGTERM (its own coordinator gone,
                // the port not answering yet) exits at once: the new one waits for it.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = interrupt.cancelled() => return Err(WorkerError::Interrupted),
                }
            }
            Err(s) => return Err(WorkerError::AttachRefused(s.message().into())),
        }
    };
    let report = |progress, checkpoints, resumed_from: Option<u64>, rejected: &[pb::RejectedCheckpoint]| pb::ReportRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: run_id.clone(),
        attempt,
        progress,
        checkpoints,
        resumed_from,
        // With the first report only, as `resumed_from`.
        rejected_checkpoints: if resumed_from.is_some() { rejected.to_vec() } else { Vec::new() },
    };
    let finish = |outcome: pb::finish_request::Outcome| pb::FinishRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: run_id.clone(),
        attempt,
        outcome: Some(outcome),
    };
    let Assignment { config, eval, device, precision } = match check_assignment(&assignment, &run_id) {
        Ok(a) => a,
        Err(msg) => {
            let failure =
                pb::Failure { class: convert::failure_class_value(Some(FailureClass::UserError)), message: msg.clone() };
            if let Err(s) = bounded(CALL_LIMIT, client.finish(finish(pb::finish_request::Outcome::Failure(failure)))).await {
                warn!(target: "worker", "the coordinator did not take the failure: {}", s.message());
            }
            return Err(WorkerError::BadAssignment(msg));
        }
    };
    // One worker per run directory: wait here while an older one (an orphan nobody could
    // signal) still trains it. Held until this attempt's outcome is delivered.
    let lease = Duration::from_secs(assignment.lease_seconds.max(3));
    let _run_lock = if eval.is_none() {
        let beat = || report(Vec::new(), Vec::new(), None, &[]);
        let dir = Path::new(&assignment.checkpoint_dir);
        match lock_run_dir(dir, client, &beat, &interrupt, (lease * 3).max(RUN_LOCK_PATIENCE)).await {
            Ok(lock) => lock,
            Err(LockWait::Revoked(message)) => return Err(WorkerError::Revoked { run_id, attempt, message }),
            Err(end) => {
                let (outcome, ended) = match end {
                    LockWait::TimedOut(message) => failed(FailureClass::Unknown, message),
                    _ => (
                        pb::finish_request::Outcome::Interrupted(pb::Interrupted {
                            checkpoint_step: 0,
                            checkpoint_path: String::new(),
                            tokens_seen: 0,
                        }),
                        Ended::Interrupted { step: assignment.resume_step },
                    ),
                };
                return match bounded(CALL_LIMIT, client.finish(finish(outcome))).await {
                    Ok(_) => Ok(ended),
                    Err(s) => Err(WorkerError::FinishRefused(s.message().into())),
                };
            }
        }
    } else {
        None
    };
    // Raised at once when the interrupt came before the work starts (the loop below would
    // set it only after the first steps had run).
    let stop = Arc::new(AtomicBool::new(interrupt.is_cancelled()));
    // SIGTERM stops the work at its next step even while a call to the coordinator is in
    // flight: one that does not answer holds the loop below up to its limit.
    let _stopper = {
        let (stop, interrupt) = (stop.clone(), interrupt.clone());
        AbortOnDrop(tokio::spawn(async move {
            interrupt.cancelled().await;
            stop.store(true, Ordering::SeqCst);
        }))
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (done_tx, mut done_rx) = oneshot::channel();
    let mut first_rejected = Vec::new();
    let (work, first_resumed) = match eval {
        Some((job, checkpoint)) => {
            info!(
                target: "worker",
                "evaluation job {run_id} attempt {attempt}: task {} on run {} step {}, {device} {precision}",
                job.task.name, job.run, job.step
            );
            let job = isoflop_train::EvalJob {
                run: config.clone(),
                job,
                checkpoint,
                device: isoflop_train::tch_device(device),
                precision,
                threads: assignment.threads as usize,
            };
            let (tx, stop) = (tx.clone(), stop.clone());
            let started = Instant::now();
            let work = Work::Eval(Box::new(move || {
                let mut progress = |done: u64, total: u64| {
                    let p = Progress {
                        step: done,
                        total_steps: total,
                        elapsed_seconds: started.elapsed().as_secs_f64(),
                        ..Progress::default()
                    };
                    // The receiver lives until the job ends.
                    let _ = tx.send(Msg::Progress(pb::Progress::from(&p)));
                    if stop.load(Ordering::SeqCst) { Control::Stop } else { Control::Continue }
                };
                isoflop_train::run_eval(&job, &mut progress)
            }));
            (work, None)
        }
        None => {
            // Resume from the newest checkpoint: the one the store knows, or a newer one on disk
            // (saved while the coordinator was not listening).
            let checkpoint_dir = PathBuf::from(&assignment.checkpoint_dir);
            let named = (!assignment.resume_checkpoint.is_empty())
                .then(|| (assignment.resume_step, PathBuf::from(&assignment.resume_checkpoint)))
                .filter(|(_, p)| p.is_dir());
            let Resume { from: resume, rejected, replaced } =
                choose_resume(&checkpoint_dir, named.as_ref(), &assignment.store_id);
            first_rejected = rejected;
            // The store may not know the resume checkpoint (saved while the coordinator was not
            // listening, or an older one it forgot), or may drop its row with a rejection of an
            // earlier save at that step in this same first report (the store takes rejections
            // first): report it, or the evaluation jobs of its step would wait for a row that
            // never comes (found by the chaos drill, both ways).
            for (step, path) in resume.iter().chain(&replaced) {
                let _ = tx.send(Msg::Checkpoint(pb::CheckpointSaved {
                    step: *step,
                    path: path.display().to_string(),
                    tokens_seen: config.tokens_at(*step),
                }));
            }
            let resumed_from = resume.as_ref().map(|(s, _)| *s).unwrap_or(0);
            info!(
                target: "worker",
                "run {run_id} attempt {attempt}: {} steps, {device} {precision}{}, training shard {}",
                config.recipe.steps,
                if resumed_from > 0 { format!(", resuming from step {resumed_from}") } else { String::new() },
                config.data.train.path
            );
            let peak = opts.peak_flops.or_else(|| device::peak_flops_of(device, precision));
            match peak {
                Some(p) => info!(target: "worker", "MFU against a peak of {p:.3e} FLOP/s"),
                None if device.is_cuda() => {
                    warn!(target: "worker", "MFU not reported: unknown peak FLOP/s of {device}; set ISOFLOP_PEAK_FLOPS")
                }
                None => {}
            }
            let keep_steps = assignment.keep_steps.clone();
            let job = TrainJob {
                run_id: run_id.clone(),
                config: config.clone(),
                checkpoint_dir,
                resume_from: resume.map(|(_, p)| p),
                checkpoint_every: assignment.checkpoint_every,
                keep_steps,
                progress_every: assignment.progress_every,
                threads: assignment.threads as usize,
                device: isoflop_train::tch_device(device),
                micro_batch: assignment.micro_batch as usize,
                precision,
                store_id: assignment.store_id.clone(),
            };

            let hooks = Hooks {
                tx: tx.clone(),
                stop: stop.clone(),
                mfu_flops_per_token: mfu_flops_per_token(&config.model),
                peak_flops: peak,
            };
            let train_stop = stop.clone();
            let work = Work::Train(Box::new(move || {
                let mut hooks = hooks;
                isoflop_train::train(&job, &mut hooks, &train_stop)
            }));
            (work, Some(resumed_from))
        }
    };
    drop(tx);
    std::thread::Builder::new()
        .name("isoflop-train".into())
        .spawn(move || {
            let r = match work {
                Work::Train(f) => Done::Train(f()),
                Work::Eval(f) => Done::Eval(f()),
            };
            // The receiver waits for it unless the worker gave up first.
            let _ = done_tx.send(r);
        })
        .map_err(|e| WorkerError::Thread(e.to_string()))?;

    let mut heartbeat = tokio::time::interval(Duration::from_millis(1000).min(lease / 3));
    let mut pending_progress = Vec::new();
    let mut pending_ckpts = Vec::new();
    let mut last_ok = Instant::now();
    let mut last_log = Instant::now();
    let mut revoked: Option<String> = None;
    let mut resumed_from = first_resumed;
    let result = loop {
        tokio::select! {
            r = &mut done_rx => break r.map_err(|_| WorkerError::Thread("ended without a result".into()))?,
            Some(m) = rx.recv() => {
                match m {
                    Msg::Progress(p) => {
                        if p.step == 0 || p.step == p.total_steps || last_log.elapsed() >= Duration::from_secs(10) {
                            info!(
                                target: "worker",
                                "step {}/{} loss {:.4} lr {:.2e} grad-norm {:.3} {:.0} tok/s",
                                p.step, p.total_steps, p.loss, p.lr, p.grad_norm, p.tokens_per_second
                            );
                            last_log = Instant::now();
                        }
                        pending_progress.push(p)
                    }
                    Msg::Checkpoint(c) => {
                        info!(target: "worker", "checkpoint at step {}: {}", c.step, c.path);
                        pending_ckpts.push(c)
                    }
                }
                continue;
            }
            _ = interrupt.cancelled(), if !stop.load(Ordering::SeqCst) => { stop.store(true, Ordering::SeqCst); continue; }
            _ = heartbeat.tick() => {}
        }
        if revoked.is_some() {
            continue;
        }
        let req =
            report(std::mem::take(&mut pending_progress), std::mem::take(&mut pending_ckpts), resumed_from, &first_rejected);
        match bounded(lease.min(CALL_LIMIT), client.report(req.clone())).await {
            Ok(resp) => {
                last_ok = Instant::now();
                if resumed_from.take().is_some() {
                    mark_reported(&first_rejected);
                }
                if resp.stop && !stop.swap(true, Ordering::SeqCst) {
                    info!(target: "worker", "coordinator asked to stop: checkpointing");
                }
            }
            Err(s) if matches!(s.code(), Code::Aborted | Code::Unauthenticated | Code::NotFound) => {
                // The attempt was ended by the coordinator (cancelled, or presumed lost).
                warn!(target: "worker", "attempt revoked by the coordinator ({}); stopping", s.message());
                revoked = Some(s.message().to_string());
                stop.store(true, Ordering::SeqCst);
            }
            Err(s) => {
                pending_progress = req.progress;
                pending_ckpts = req.checkpoints;
                if last_ok.elapsed() > lease && !stop.swap(true, Ordering::SeqCst) {
                    warn!(target: "worker", "coordinator unreachable for {lease:?} ({}); checkpointing and stopping", s.message());
                }
            }
        }
    };
    while let Ok(m) = rx.try_recv() {
        match m {
            Msg::Progress(p) => pending_progress.push(p),
            Msg::Checkpoint(c) => pending_ckpts.push(c),
        }
    }
    if let Some(message) = revoked {
        return Err(WorkerError::Revoked { run_id, attempt, message });
    }
    // The last report and the outcome share one lease of patience: UNAVAILABLE (the
    // coordinator restarting, or its store failing) is retried until then; after SIGTERM (a
    // preemption's grace period, a new coordinator stopping this orphan) a few seconds only.
    let patience = if interrupt.is_cancelled() { lease.min(INTERRUPTED_PATIENCE) } else { lease };
    let mut deadline = Instant::now() + patience;
    let last = report(pending_progress, pending_ckpts, resumed_from, &first_rejected);
    loop {
        match bounded(left(deadline), client.report(last.clone())).await {
            Ok(_) => {
                if last.resumed_from.is_some() {
                    mark_reported(&first_rejected);
                }
                break;
            }
            Err(s) if unanswered(&s) && Instant::now() < deadline => {
                warn!(target: "worker", "the last report was not taken ({}); retrying", s.message());
                retry_pause(&interrupt, &mut deadline).await;
            }
            Err(s) => {
                warn!(target: "worker", "the last report was not taken ({}); the outcome follows", s.message());
                break;
            }
        }
    }
    let (outcome, ended) = match result {
        Done::Eval(Ok(Some(out))) => {
            // Multiple choice: the groups and the whole, not every subject.
            let subsets: std::collections::HashSet<&str> = out.items.iter().map(|i| i.subset.as_str()).collect();
            for m in out.metrics.iter().filter(|m| !subsets.contains(m.subset.as_str())) {
                info!(target: "worker", "eval {} {}: {:.4}", m.subset, m.metric, m.value);
            }
            if !out.items.is_empty() {
                info!(target: "worker", "eval: {} items of {} subsets scored", out.items.len(), subsets.len());
            }
            let metrics = out.metrics.iter().map(pb::EvalMetric::from).collect();
            let items = out.items.iter().map(pb::ItemScore::from).collect();
            (
                pb::finish_request::Outcome::Success(pb::Success { final_loss: 0.0, evals: vec![], metrics, items }),
                Ended::Succeeded,
            )
        }
        // A stopped evaluation has nothing to resume from: it starts again later.
        Done::Eval(Ok(None)) => failed(FailureClass::Preempted, "stopped before it finished".into()),
        Done::Eval(Err(e)) => failed(e.class(), e.to_string()),
        Done::Train(Ok(TrainOutcome::Completed { final_loss })) => (
            pb::finish_request::Outcome::Success(pb::Success { final_loss, evals: vec![], metrics: vec![], items: vec![] }),
            Ended::Succeeded,
        ),
        Done::Train(Ok(TrainOutcome::Stopped { step, checkpoint })) => (
            pb::finish_request::Outcome::Interrupted(pb::Interrupted {
                checkpoint_step: step,
                checkpoint_path: checkpoint.display().to_string(),
                tokens_seen: config.tokens_at(step),
            }),
            Ended::Interrupted { step },
        ),
        Done::Train(Ok(TrainOutcome::Diverged { step, loss })) => {
            failed(FailureClass::Diverged, format!("loss became {loss} at step {step}"))
        }
        Done::Train(Err(e)) => failed(e.class(), e.to_string()),
    };
    if let Ended::Failed { class, message } = &ended {
        warn!(target: "worker", "failed ({class}): {message}");
    }
    // A coordinator that is restarting (a cluster deployment, a rolling update) comes back
    // within the lease, and a store that failed (UNAVAILABLE too) may recover: the outcome is
    // worth waiting for.
    let req = finish(outcome);
    loop {
        match bounded(left(deadline), client.finish(req.clone())).await {
            Ok(_) => return Ok(ended),
            Err(s) if unanswered(&s) && Instant::now() < deadline => {
                warn!(target: "worker", "coordinator unreachable ({}); retrying the outcome", s.message());
                retry_pause(&interrupt, &mut deadline).await;
            }
            Err(s) => return Err(WorkerError::FinishRefused(s.message().into())),
        }
    }
}

/// A call the coordinator did not answer: it was unreachable or restarting (UNAVAILABLE), or
/// the connection broke mid-call, which tonic reports with the transport's error as the
/// status's source (UNKNOWN, or a code from the HTTP/2 reset); a status the coordinator sent
/// has no source. Worth trying again: reports
/// are idempotent, and a finish already taken is refused as stale. Found by the chaos drill:
/// a coordinator killed while the last report of a run was in flight lost that report's final
/// checkpoint (the worker gave up on it and sent the outcome), and the run's evaluation job
/// waited for that checkpoint's row forever.
fn unanswered(s: &tonic::Status) -> bool {
    s.code() == Code::Unavailable || std::error::Error::source(s).is_some()
}

/// The longest a worker API call may take outside the shutdown path (which has its own
/// deadline): longer is UNAVAILABLE.
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// A worker API call that gives up after `limit`, as UNAVAILABLE: a coordinator whose port
/// accepts connections but does not answer (a restarted one that has bound its port and is
/// still recovering, waiting for this very orphan to exit) would otherwise hang the call, and
/// the worker with it, for good.
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::unavailable(format!("no answer in {:.1} s", limit.as_secs_f64()))),
    }
}

/// A second's pause before the next try of the last report or the outcome. SIGTERM, before or
/// during it, cuts `deadline` to [`INTERRUPTED_PATIENCE`] from the moment it is seen: an
/// orphan that a new coordinator stops (and waits for) exits within seconds, not a lease.
async fn retry_pause(interrupt: &CancellationToken, deadline: &mut Instant) {
    if !interrupt.is_cancelled() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = interrupt.cancelled() => {}
        }
    } else {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if interrupt.is_cancelled() {
        *deadline = (*deadline).min(Instant::now() + INTERRUPTED_PATIENCE);
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Time left until `deadline`, at least 100 ms (one more try).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100))
}

/// The lock file in a run's checkpoint directory, held by the one worker that trains the
/// run (`flock`: the kernel releases it when the process dies, SIGKILL included).
pub const RUN_LOCK_FILE: &str = ".worker.lock";
/// The least time a worker waits for an older worker of its run to exit.
const RUN_LOCK_PATIENCE: Duration = Duration::from_secs(60);

/// Why waiting for the run directory's lock ended without it.
enum LockWait {
    /// The coordinator ended the attempt meanwhile.
    Revoked(String),
    /// SIGTERM, or the coordinator asked the worker to stop.
    Interrupted,
    /// The other worker held it past the patience: the message says whom.
    TimedOut(String),
}

/// Takes the run directory's lock ([`RUN_LOCK_FILE`]). While another worker of the run holds
/// it (an orphan of a coordinator that died before it recorded or signalled it, a pod of a
/// lost node still running), waits for it to exit, heartbeating so that this attempt's lease
/// holds: two workers never train one run at once, nor write one checkpoint directory. The
/// holder gives up within a lease of losing its coordinator (or is stopped by the new one), so
/// the wait is bounded; past `patience` the attempt fails. A file system that cannot lock
/// (`None`) is trained on without the lock, with a warning.
async fn lock_run_dir(
    dir: &Path,
    client: &mut dyn WorkerClient,
    heartbeat: &(dyn Fn() -> pb::ReportRequest + Sync),
    interrupt: &CancellationToken,
    patience: Duration,
) -> Result<Option<std::fs::File>, LockWait> {
    use std::fs::TryLockError;
    use std::io::Write;
    let path = dir.join(RUN_LOCK_FILE);
    let opened = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path));
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            warn!(target: "worker", "cannot open {}: {e}; training without the run lock", path.display());
            return Ok(None);
        }
    };
    let started = Instant::now();
    let mut last_beat = Instant::now();
    let mut holder: Option<String> = None;
    loop {
        match file.try_lock() {
            Ok(()) => {
                if let Some(h) = &holder {
                    info!(target: "worker", "{h} exited after {:.1} s; training", started.elapsed().as_secs_f64());
                }
                // Who holds it, for the message of a worker that waits: best effort.
                let me = format!("pid {} on {}", std::process::id(), hostname());
                let _ = file.set_len(0).and_then(|_| (&file).write_all(me.as_bytes()));
                return Ok(Some(file));
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                warn!(target: "worker", "cannot lock {}: {e}; training without the run lock", path.display());
                return Ok(None);
            }
        }
        if holder.is_none() {
            let h = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
            let h = format!("the worker that holds {} ({})", path.display(), if h.is_empty() { "unknown pid" } else { &h });
            warn!(target: "worker", "{h} still runs (an earlier attempt of this run); waiting for it to exit");
            holder = Some(h);
        }
        if started.elapsed() > patience {
            let h = holder.unwrap_or_default();
            return Err(LockWait::TimedOut(format!("{h} did not exit in {} s", patience.as_secs())));
        }
        if interrupt.is_cancelled() {
            return Err(LockWait::Interrupted);
        }
        if last_beat.elapsed() >= Duration::from_secs(1) {
            last_beat = Instant::now();
            match bounded(CALL_LIMIT, client.report(heartbeat())).await {
                Ok(r) if r.stop => return Err(LockWait::Interrupted),
                Err(s) if matches!(s.code(), Code::Aborted | Code::Unauthenticated | Code::NotFound) => {
                    return Err(LockWait::Revoked(s.message().to_string()));
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// What the work thread runs: a training run or an evaluation job.
enum Work {
    Train(Box<dyn FnOnce() -> Result<TrainOutcome, TrainError> + Send>),
    Eval(Box<dyn FnOnce() -> Result<Option<isoflop_train::EvalOutput>, TrainError> + Send>),
}

/// How the work thread ended.
enum Done {
    Train(Result<TrainOutcome, TrainError>),
    Eval(Result<Option<isoflop_train::EvalOutput>, TrainError>),
}

fn failed(class: FailureClass, message: String) -> (pb::finish_request::Outcome, Ended) {
    let outcome = pb::finish_request::Outcome::Failure(pb::Failure {
        class: convert::failure_class_value(Some(class)),
        message: message.clone(),
    });
    (outcome, Ended::Failed { class, message })
}

/// The checkpoint a training attempt resumes from, and the damaged ones it set aside on the
/// way. Candidates, newest first: the complete checkpoints in `dir` and the one the store
/// `named`. Each is verified against its manifest's digest ([`checkpoint::verify`]): a
/// damaged one (truncated, corrupt) is renamed out of the way ([`checkpoint::set_aside`]) and
/// rejected, and the next older is tried, so a bad newest checkpoint costs one checkpoint
/// interval, never a crash loop. A sound checkpoint on disk is taken only when it is the named
/// one or its manifest names this store (issue 12, defect 4: another store's checkpoint, or
/// one of a build before store ids, is left alone); `None` starts from scratch.
///
/// The rejected list also holds the checkpoints an earlier attempt set aside but could not
/// report (its coordinator died, or it was stopped, before its first report was taken: found
/// by the chaos drill, one truncated checkpoint in nine left without its event; the save of
/// its stop checkpoint no longer deletes them); once the first report is taken,
/// [`mark_reported`] keeps a later attempt from reporting them again and lets the next save
/// delete them.
fn choose_resume(dir: &Path, named: Option<&(u64, PathBuf)>, store_id: &str) -> Resume {
    let (resume, mut rejected) = verify_candidates(dir, named, store_id);
    let saved = checkpoint::list(dir);
    let mut replaced = Vec::new();
    for earlier in checkpoint::set_aside_in(dir) {
        if earlier.reported || rejected.iter().any(|r| r.step == earlier.step) {
            continue;
        }
        let reason = if earlier.reason.is_empty() { "set aside by an earlier attempt".into() } else { earlier.reason };
        rejected.push(pb::RejectedCheckpoint { step: earlier.step, path: earlier.original.display().to_string(), reason });
        // An attempt since saved that step again: the rejection drops the step's row, and the
        // sound save is recorded in its place (the resume checkpoint is recorded anyway).
        if let Some((step, path)) = saved.iter().find(|(s, _)| *s == earlier.step)
            && resume.as_ref().is_none_or(|(r, _)| r != step)
            && checkpoint::verify(path).is_ok()
        {
            replaced.push((*step, path.clone()));
        }
    }
    Resume { from: resume, rejected, replaced }
}

/// Where a training attempt starts ([`choose_resume`]).
#[derive(Debug, PartialEq)]
struct Resume {
    /// The checkpoint it resumes from; `None` from scratch.
    from: Option<(u64, PathBuf)>,
    /// The damaged checkpoints it (or an earlier attempt that could not say so) set aside.
    rejected: Vec<pb::RejectedCheckpoint>,
    /// Sound checkpoints saved since at a rejected one's step, other than `from`.
    replaced: Vec<(u64, PathBuf)>,
}

/// Marks the set-aside checkpoints of `rejected` as recorded by the store, so that the next
/// save may delete them (best effort: a marker lost to a kill right here makes a later attempt
/// report the checkpoint again).
fn mark_reported(rejected: &[pb::RejectedCheckpoint]) {
    for r in rejected {
        let aside = PathBuf::from(format!("{}{}", r.path, checkpoint::SET_ASIDE_SUFFIX));
        if aside.is_dir()
            && let Err(e) = checkpoint::mark_reported(&aside)
        {
            warn!(target: "worker", "cannot mark {} as reported: {e}", aside.display());
        }
    }
}

/// The newest sound candidate of [`choose_resume`], and those it rejected on the way.
fn verify_candidates(
    dir: &Path,
    named: Option<&(u64, PathBuf)>,
    store_id: &str,
) -> (Option<(u64, PathBuf)>, Vec<pb::RejectedCheckpoint>) {
    let mut candidates = checkpoint::list(dir);
    if let Some(n) = named
        && !candidates.iter().any(|(_, p)| p == &n.1)
    {
        candidates.push(n.clone());
    }
    candidates.sort();
    let mut rejected = Vec::new();
    while let Some((step, path)) = candidates.pop() {
        let manifest = match checkpoint::verify(&path) {
            Ok(m) => m,
            Err(e) => {
                let reason = match &e {
                    CheckpointError::Corrupt { reason, .. } | CheckpointError::Format { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                warn!(target: "worker", "not resuming from step {step}: {e}");
                if matches!(e, CheckpointError::Corrupt { .. })
                    && let Err(e) = checkpoint::set_aside(&path, &reason)
                {
                    warn!(target: "worker", "cannot set the damaged checkpoint aside: {e}");
                }
                rejected.push(pb::RejectedCheckpoint { step, path: path.display().to_string(), reason });
                continue;
            }
        };
        let is_named = named.is_some_and(|(_, p)| p == &path);
        if is_named || (!store_id.is_empty() && manifest.store_id.as_deref() == Some(store_id)) {
            return (Some((step, path)), rejected);
        }
        warn!(
            target: "worker",
            "checkpoint {} on disk is not this store's (it names {}); not resuming from it",
            path.display(),
            manifest.store_id.as_deref().unwrap_or("no store")
        );
    }
    (None, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_the_coordinator_did_not_answer_are_tried_again() {
        // A broken connection: UNKNOWN, with the transport's error as its source.
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection reset")));
        assert_eq!(broken.code(), Code::Unknown);
        assert!(unanswered(&broken));
        assert!(unanswered(&tonic::Status::unavailable("tcp connect error")));
        // Answers: an UNKNOWN the coordinator sent, a refusal.
        assert!(!unanswered(&tonic::Status::unknown("the store failed")));
        assert!(!unanswered(&tonic::Status::failed_precondition("stale attempt")));
    }

    #[test]
    fn a_checkpoint_set_aside_earlier_is_reported_until_the_store_took_it() {
        let dir = tempfile::tempdir().unwrap();
        let aside = dir.path().join(format!("{}{}", checkpoint::dir_name(20), checkpoint::SET_ASIDE_SUFFIX));
        std::fs::create_dir_all(&aside).unwrap();
        std::fs::write(aside.join(checkpoint::SET_ASIDE_FILE), "12 bytes, the manifest says 900\n").unwrap();
        let Resume { from: resume, rejected, replaced } = choose_resume(dir.path(), None, "store-a");
        assert_eq!((resume, replaced), (None, vec![]));
        let original = dir.path().join(checkpoint::dir_name(20)).display().to_string();
        assert_eq!(
            rejected,
            [pb::RejectedCheckpoint { step: 20, path: original, reason: "12 bytes, the manifest says 900".into() }]
        );
        // Not taken yet: a next attempt reports it too.
        assert_eq!(choose_resume(dir.path(), None, "store-a").rejected, rejected);
        mark_reported(&rejected);
        assert_eq!(choose_resume(dir.path(), None, "store-a").rejected, []);
    }

    /// An earlier attempt set step 20 aside and could not say so; a later one saved 20 and 25
    /// again. The next reports the rejection and, beside the resume checkpoint (25), the new
    /// save at 20, so that the store, which drops the old row, records the new one.
    #[test]
    fn a_set_aside_checkpoint_saved_again_is_rejected_and_its_new_save_reported() {
        let dir = tempfile::tempdir().unwrap();
        let aside = dir.path().join(format!("{}{}", checkpoint::dir_name(20), checkpoint::SET_ASIDE_SUFFIX));
        std::fs::create_dir_all(&aside).unwrap();
        std::fs::write(aside.join(checkpoint::SET_ASIDE_FILE), "truncated\n").unwrap();
        let save = |step: u64| {
            let path = dir.path().join(checkpoint::dir_name(step));
            std::fs::create_dir_all(&path).unwrap();
            let manifest = checkpoint::Manifest {
                format_version: checkpoint::FORMAT_VERSION,
                run_id: "r".into(),
                step,
                tokens_seen: step * 10,
                optimizer_step: step,
                last_progress: None,
                store_id: Some("store-a".into()),
                state_sha256: None,
                state_bytes: Some(7),
            };
            std::fs::write(path.join(checkpoint::MANIFEST_FILE), serde_json::to_vec(&manifest).unwrap()).unwrap();
            std::fs::write(path.join(checkpoint::STATE_FILE), b"tensors").unwrap();
            path
        };
        let (twenty, twenty_five) = (save(20), save(25));
        let r = choose_resume(dir.path(), None, "store-a");
        assert_eq!(r.from, Some((25, twenty_five)));
        assert_eq!(r.rejected.iter().map(|r| (r.step, r.reason.as_str())).collect::<Vec<_>>(), [(20, "truncated")]);
        assert_eq!(r.replaced, [(20, twenty.clone())]);
        // A new save that is itself damaged is not reported as sound.
        std::fs::write(twenty.join(checkpoint::STATE_FILE), b"tens").unwrap();
        assert_eq!(choose_resume(dir.path(), None, "store-a").replaced, []);
    }
}
