//! The coordinator: owns the durable state of runs, launches attempts through an executor,
//! watches leases and process exits, classifies failures and retries.
//!
//! It is shared by the gRPC services (`service::worker`, `service::control`) and the
//! scheduler loop ([`Coordinator::run_scheduler`], in `scheduler.rs`). Every state change is a
//! store lifecycle verb, which decides inside its transaction and returns the event it
//! recorded; the coordinator broadcasts exactly that event.
//!
//! The store's calls block (a SQLite file, a PostgreSQL round trip), so the coordinator's
//! methods are synchronous and async code calls them through [`Coordinator::blocking`]: an
//! RPC's or a scheduling pass's whole store work runs on the runtime's blocking threads, never
//! on a thread that drives other tasks.

use crate::executor::{Executor, ORPHAN_STOP_LIMIT, Orphan};
use crate::resolve::PlannedSweep;
use crate::runtime::{self, RunRuntime, Runtimes};
use isoflop_core::RunState;
use isoflop_core::spec::{ExecutorSpec, LoadedSpec, SpecError, SweepSpec};
use isoflop_core::{Clock, Retries, SystemClock};
use isoflop_proto::v1 as pb;
use isoflop_store::{Change, Ending, EventRow, RunRow, Store, StoreError, SubmitResult, SweepRow};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};
use tracing::info;

/// Settings of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// URL workers use to reach the worker API.
    pub worker_url: String,
    /// Root of per-run checkpoints and logs.
    pub artifacts_dir: PathBuf,
    /// Counted retries per run and their first back-off.
    pub retries: Retries,
    /// A worker that does not report for this long is presumed lost.
    pub lease: Duration,
    /// Extra time a launched worker gets to attach (process start, libtorch loading).
    pub launch_grace: Duration,
    /// Scheduler period.
    pub tick: Duration,
    /// How long a drain waits for workers to checkpoint before killing them.
    pub drain_grace: Duration,
    /// CPU threads of every worker, whatever a sweep's spec says (`isoflop serve`: the
    /// daemon's executor section wins); `None` takes the owning spec's `executor.threads_per_run`.
    pub threads_per_run: Option<u64>,
    /// Where time comes from (leases, back-off, event times): the system's, or a test's.
    pub clock: Arc<dyn Clock>,
}

impl CoordinatorConfig {
    /// Settings from a spec's executor section.
    pub fn from_spec(loaded: &LoadedSpec, worker_url: String) -> Self {
        Self::for_executor(&loaded.spec.executor, worker_url, loaded.artifacts_dir())
    }

    /// Settings from an executor section, with the artifacts directory given.
    pub fn for_executor(executor: &ExecutorSpec, worker_url: String, artifacts_dir: PathBuf) -> Self {
        let launch_grace = match executor {
            ExecutorSpec::Local { .. } => 30,
            ExecutorSpec::Kubernetes(k) => k.start_grace_seconds,
            ExecutorSpec::External(x) => x.start_grace_seconds,
        };
        CoordinatorConfig {
            worker_url,
            artifacts_dir,
            retries: Retries { max: executor.max_retries(), backoff_base: Duration::from_secs(2) },
            lease: Duration::from_secs(executor.lease_seconds()),
            launch_grace: Duration::from_secs(launch_grace),
            tick: Duration::from_millis(250),
            drain_grace: Duration::from_secs(120),
            threads_per_run: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Errors of the coordinator's operations.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sweep `{0}` not found")]
    UnknownSweep(String),
    #[error("no run matches `{0}`")]
    UnknownRun(String),
    #[error("`{key}` matches {matches} runs; give more of the run id")]
    AmbiguousRun { key: String, matches: usize },
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) cfg: CoordinatorConfig,
    /// Runtime settings per run (see [`crate::runtime`]), re-derived from the store.
    runtimes: Mutex<Runtimes>,
    /// Runs whose workers are asked to stop at their next report.
    pub(crate) stopping: Mutex<HashSet<String>>,
    /// Runs whose earlier coordinator's worker is being stopped (see [`Coordinator::recover`]):
    /// not launched again until that process has exited, even once its attempt has ended.
    pub(crate) orphaned: Mutex<HashSet<String>>,
    pub(crate) draining: AtomicBool,
    events: broadcast::Sender<pb::RunEvent>,
    pub(crate) wake: Notify,
    /// Told of every gRPC call's method and answer time (the HTTP side's metrics).
    pub(crate) rpc_observer: std::sync::RwLock<Option<crate::RpcObserver>>,
}

/// What [`Coordinator::recover`] found of an earlier coordinator's attempts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Attempts ended at once (their workers gone); their runs are queued again.
    pub requeued: usize,
    /// Attempts whose workers still run here: signalled, and ended once they exit (or
    /// ended by their own outcome, reported to this coordinator).
    pub stopping: usize,
}

/// A handle to the coordinator; cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("cfg", &self.inner.cfg).finish()
    }
}

impl Coordinator {
    /// A coordinator over a store and an executor. Call [`Coordinator::recover`] before the
    /// scheduler starts.
    pub fn new(store: Arc<dyn Store>, executor: Arc<dyn Executor>, cfg: CoordinatorConfig) -> Self {
        let (events, _) = broadcast::channel(4096);
        let inner = Inner {
            store,
            executor,
            cfg,
            runtimes: Mutex::default(),
            stopping: Mutex::default(),
            orphaned: Mutex::default(),
            draining: AtomicBool::new(false),
            events,
            wake: Notify::new(),
            rpc_observer: std::sync::RwLock::new(None),
        };
        Coordinator { inner: Arc::new(inner) }
    }

    /// Sets what is told of each gRPC call's method path and time to answer.
    pub fn observe_rpcs(&self, observer: crate::RpcObserver) {
        *self.inner.rpc_observer.write().unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    /// Runs `f` on the runtime's blocking threads (in the current tracing span): how async
    /// code calls the coordinator's methods and the store, which block. A panic in `f` is
    /// resumed here.
    pub async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Coordinator) -> T + Send + 'static) -> T {
        let coord = self.clone();
        let span = tracing::Span::current();
        match tokio::task::spawn_blocking(move || span.in_scope(|| f(&coord))).await {
            Ok(out) => out,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a blocking coordinator call did not run: {e}"),
        }
    }

    /// The store. Its calls block: from async code, call it inside [`Coordinator::blocking`].
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The executor.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.inner.executor
    }

    /// The coordinator's settings.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.inner.cfg
    }

    /// Now, by the coordinator's clock.
    pub fn now_ms(&self) -> i64 {
        self.inner.cfg.clock.now_ms()
    }

    /// Live events (state changes, progress, evals) of all runs.
    pub fn subscribe(&self) -> broadcast::Receiver<pb::RunEvent> {
        self.inner.events.subscribe()
    }

    /// Checkpoint directory of a run, by its artifacts key ([`RunRow::artifacts_key`]).
    pub fn checkpoint_dir(&self, artifacts_key: &str) -> PathBuf {
        self.inner.cfg.artifacts_dir.join(artifacts_key).join("checkpoints")
    }

    /// Log file of an attempt of a run, by its artifacts key ([`RunRow::artifacts_key`]).
    pub fn log_path(&self, artifacts_key: &str, attempt: u64) -> PathBuf {
        log_path(&self.inner.cfg.artifacts_dir, artifacts_key, attempt)
    }

    /// Plans and records a sweep; runs it shares with other sweeps are not trained again.
    pub fn submit(&self, loaded: &LoadedSpec) -> Result<SubmitResult, CoordinatorError> {
        self.submit_planned(&PlannedSweep::from_spec(loaded)?)
    }

    /// Records an already planned sweep (see [`Coordinator::submit`]).
    pub fn submit_planned(&self, planned: &PlannedSweep) -> Result<SubmitResult, CoordinatorError> {
        let store = &self.inner.store;
        let result = store.submit_sweep(&planned.sweep, &planned.new_runs())?;
        // An evaluation at a fraction of training added after the run finished without that
        // checkpoint can never start: it ends cancelled, saying why. (One read of the sweep's
        // states, not two per job: a sweep of 10,000 jobs.)
        let states: HashMap<String, RunState> = if planned.evals.is_empty() {
            HashMap::new()
        } else {
            store.sweep_members(&planned.sweep.name)?.into_iter().map(|m| (m.run_id, m.state)).collect()
        };
        for e in &planned.evals {
            if states.get(&e.job_id.0) != Some(&RunState::Queued) {
                continue;
            }
            if states.get(&e.run_id.0) == Some(&RunState::Succeeded)
                && !store.checkpoints(&e.run_id.0)?.iter().any(|c| c.step == e.step)
            {
                let message = format!(
                    "run {} finished without a checkpoint at step {}: evaluations at fractions of training must be \
                     asked for before the run trains",
                    e.run_id, e.step
                );
                let ev = store.transition(&e.job_id.0, RunState::Cancelled, &Change { message, ..Change::default() })?;
                self.publish(&ev);
            }
        }
        self.reload_runtimes()?;
        self.inner.wake.notify_one();
        Ok(result)
    }

    /// Re-derives every run's runtime settings from the stored sweeps (see [`crate::runtime`]).
    pub(crate) fn reload_runtimes(&self) -> Result<(), CoordinatorError> {
        let derived = runtime::derive(self.inner.store.as_ref(), self.inner.cfg.threads_per_run)?;
        *self.inner.runtimes.lock().unwrap_or_else(|p| p.into_inner()) = derived;
        Ok(())
    }

    /// Runtime settings of a run, or why it has none (see [`crate::runtime`]).
    pub fn runtime_of(&self, run_id: &str) -> Result<RunRuntime, String> {
        match self.inner.runtimes.lock().unwrap_or_else(|p| p.into_inner()).get(run_id) {
            Some(r) => r.clone(),
            None => Err(format!("run {run_id} belongs to no stored sweep")),
        }
    }

    /// Makes the state left by an earlier coordinator consistent: derives runtime settings
    /// from the stored sweeps, and ends attempts this coordinator cannot adopt (their workers
    /// are asked to checkpoint and stop; the runs are requeued and resume from a checkpoint).
    ///
    /// Never waits for a worker: an orphan still running here (an `isoflop worker` of the
    /// killed coordinator) is signalled and waited for on a thread of its own, its attempt kept
    /// live (its lease extended over the wait) so that no new attempt starts beside it and
    /// what it still reports (its stop checkpoint, its outcome) reaches this coordinator once
    /// it serves. Call before serving and scheduling.
    pub fn recover(&self) -> Result<Recovered, CoordinatorError> {
        self.reload_runtimes()?;
        let store = &self.inner.store;
        let mut recovered = Recovered::default();
        for a in store.active_attempts()? {
            if self.inner.executor.is_tracking(&a.run_id, a.attempt) {
                // Adopted: its worker gets a full lease to find the new coordinator.
                match store.renew_lease(&a.run_id, a.attempt, self.start_lease()) {
                    Ok(()) | Err(StoreError::StaleAttempt { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                info!(run_id = %a.run_id, attempt = a.attempt, "adopted a running attempt");
                continue;
            }
            let orphan = Orphan::of(&a);
            if self.inner.executor.orphan_alive(&orphan) {
                let until = self.start_lease() + ORPHAN_STOP_LIMIT.as_millis() as i64;
                match store.renew_lease(&a.run_id, a.attempt, until) {
                    Ok(()) => {}
                    Err(StoreError::StaleAttempt { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
                let coord = self.clone();
                let (run_id, attempt) = (a.run_id.clone(), a.attempt);
                self.inner.orphaned.lock().unwrap_or_else(|p| p.into_inner()).insert(a.run_id.clone());
                std::thread::spawn(move || {
                    coord.inner.executor.stop_orphan(&Orphan::of(&a));
                    log_err("requeueing after an orphan stopped", coord.end_orphaned(&a.run_id, a.attempt).map(drop));
                    coord.inner.orphaned.lock().unwrap_or_else(|p| p.into_inner()).remove(&a.run_id);
                    coord.inner.wake.notify_one();
                });
                info!(%run_id, attempt, "stopping the worker an earlier coordinator left running");
                recovered.stopping += 1;
                continue;
            }
            self.inner.executor.stop_orphan(&orphan);
            if self.end_orphaned(&a.run_id, a.attempt)?.is_some() {
                recovered.requeued += 1;
            }
        }
        Ok(recovered)
    }

    /// Ends an attempt of an earlier coordinator whose worker is gone (it may have reported
    /// its own outcome first: then `None`).
    fn end_orphaned(&self, run_id: &str, attempt: u64) -> Result<Option<EventRow>, CoordinatorError> {
        let message = "coordinator restarted; resuming from the newest checkpoint".to_string();
        let ending = Ending::Interrupted { checkpoint: None, class: isoflop_core::FailureClass::Interrupted, message };
        self.end(run_id, attempt, &ending)
    }

    /// The lease a launched (or adopted, or just placed) attempt starts with: the lease plus the
    /// start-up grace (process start, image pull, libtorch loading).
    pub(crate) fn start_lease(&self) -> i64 {
        self.now_ms() + (self.inner.cfg.lease + self.inner.cfg.launch_grace).as_millis() as i64
    }

    /// Ends an attempt, broadcasting the event the store recorded. `None` when the attempt had
    /// ended already (the worker's own outcome, or another path, came first).
    pub(crate) fn end(&self, run_id: &str, attempt: u64, ending: &Ending) -> Result<Option<EventRow>, CoordinatorError> {
        match self.finish(run_id, attempt, ending) {
            Ok(ev) => Ok(Some(ev)),
            Err(CoordinatorError::Store(StoreError::StaleAttempt { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Ends an attempt as its worker says, broadcasting the event; an attempt that has ended
    /// already is [`StoreError::StaleAttempt`], which the worker sees.
    pub(crate) fn finish(&self, run_id: &str, attempt: u64, ending: &Ending) -> Result<EventRow, CoordinatorError> {
        let ev = self.inner.store.end_attempt(run_id, attempt, ending)?;
        info!(run_id, attempt, from = %ev.from, to = %ev.to, class = ?ev.failure_class, "attempt ended: {}", ev.message);
        self.publish(&ev);
        self.inner.wake.notify_one();
        Ok(ev)
    }

    /// Fails an attempt with `class`; the store applies the retry rule.
    pub(crate) fn fail(
        &self,
        run_id: &str,
        attempt: u64,
        class: isoflop_core::FailureClass,
        message: String,
    ) -> Result<Option<EventRow>, CoordinatorError> {
        self.end(run_id, attempt, &Ending::Failed { class, message, retries: self.inner.cfg.retries })
    }

    /// Broadcasts a recorded state change.
    pub(crate) fn publish(&self, ev: &EventRow) {
        // No receiver is not an error: nobody is watching.
        let _ = self.inner.events.send(ev.into());
    }

    /// Broadcasts a progress point or an eval result of a run.
    pub(crate) fn broadcast(&self, run_id: &str, event: pb::run_event::Event) {
        let ev = pb::RunEvent { run_id: run_id.into(), unix_millis: self.now_ms(), event: Some(event) };
        // No receiver is not an error: nobody is watching.
        let _ = self.inner.events.send(ev);
    }

    /// Whether this coordinator is draining (stopping its workers before it exits).
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Whether the worker of a run should stop at its next report.
    pub fn should_stop(&self, run_id: &str) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
            || self.inner.stopping.lock().unwrap_or_else(|p| p.into_inner()).contains(run_id)
    }

    /// Records a cancellation the store made: a live worker is asked to stop.
    fn cancelled(&self, run_id: &str, c: &isoflop_store::Cancelled) {
        self.publish(&c.event);
        if let Some(a) = c.live_attempt {
            self.inner.stopping.lock().unwrap_or_else(|p| p.into_inner()).insert(run_id.into());
            self.inner.executor.stop(run_id, a);
        }
    }

    /// Cancels one run: a live worker is stopped, the run ends `cancelled`, and the executor
    /// removes what it keeps for it. False when the run had finished already.
    pub fn cancel_run(&self, run_id: &str) -> Result<bool, CoordinatorError> {
        let c = match self.inner.store.cancel_run(run_id) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(false),
            Err(StoreError::NotFound { .. }) => return Err(CoordinatorError::UnknownRun(run_id.into())),
            Err(e) => return Err(e.into()),
        };
        self.cancelled(run_id, &c);
        self.inner.executor.forget_runs(&[run_id.to_string()]);
        Ok(true)
    }

    /// Cancels every unfinished run of a sweep (the executor removes what it keeps for them
    /// in one go).
    pub fn cancel_sweep(&self, sweep: &str) -> Result<u32, CoordinatorError> {
        let mut cancelled = Vec::new();
        for r in self.sweep_runs(sweep)? {
            if let Some(c) = self.inner.store.cancel_run(&r.run_id)? {
                self.cancelled(&r.run_id, &c);
                cancelled.push(r.run_id);
            }
        }
        if !cancelled.is_empty() {
            self.inner.executor.forget_runs(&cancelled);
        }
        Ok(cancelled.len() as u32)
    }

    /// Requeues the runs of a sweep that ended failed or cancelled; diverged runs only when
    /// asked. Their retry budget starts afresh.
    pub fn resume_sweep(&self, sweep: &str, include_diverged: bool) -> Result<u32, CoordinatorError> {
        let mut n = 0;
        for r in self.sweep_runs(sweep)? {
            if let Some(ev) = self.inner.store.resume_run(&r.run_id, include_diverged)? {
                self.inner.stopping.lock().unwrap_or_else(|p| p.into_inner()).remove(&r.run_id);
                self.publish(&ev);
                n += 1;
            }
        }
        self.inner.wake.notify_one();
        Ok(n)
    }

    /// Deletes a sweep and the jobs only it holds ([`Store::delete_sweep`]), then their
    /// artifact directories; with `dry_run`, only says what it would delete. Returns the
    /// store's answer and the directories (those that exist).
    pub fn delete_sweep(&self, sweep: &str, dry_run: bool) -> Result<(isoflop_store::Deleted, Vec<PathBuf>), CoordinatorError> {
        if self.inner.store.sweep(sweep)?.is_none() {
            return Err(CoordinatorError::UnknownSweep(sweep.into()));
        }
        let deleted = self.inner.store.delete_sweep(sweep, dry_run)?;
        let mut dirs = Vec::new();
        for j in &deleted.jobs {
            let dir = self.inner.cfg.artifacts_dir.join(&j.artifacts_key);
            if !dir.exists() {
                continue;
            }
            if !dry_run {
                // The rows are gone; a directory that cannot be removed is reported, not fatal.
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(path = %dir.display(), "cannot remove the artifacts of a deleted job: {e}");
                    continue;
                }
            }
            dirs.push(dir);
        }
        Ok((deleted, dirs))
    }

    /// The runs of an existing sweep, in plan order.
    pub fn sweep_runs(&self, sweep: &str) -> Result<Vec<RunRow>, CoordinatorError> {
        if self.inner.store.sweep(sweep)?.is_none() {
            return Err(CoordinatorError::UnknownSweep(sweep.into()));
        }
        Ok(self.inner.store.sweep_runs(sweep)?)
    }

    /// Every sweep, newest first, with its runs.
    pub fn sweeps(&self) -> Result<Vec<(SweepRow, Vec<RunRow>)>, CoordinatorError> {
        let store = &self.inner.store;
        let mut out = Vec::new();
        for s in store.sweeps()? {
            let runs = store.sweep_runs(&s.name)?;
            out.push((s, runs));
        }
        Ok(out)
    }

    /// The run a user's key names: its id, a unique prefix of one, or a run name.
    pub fn find_run(&self, key: &str) -> Result<RunRow, CoordinatorError> {
        find_run(self.inner.store.as_ref(), key)
    }
}

/// The run a user's key names in a store: its id, a unique prefix of one, or a run name (in
/// any sweep). The one implementation of run lookup.
pub fn find_run(store: &dyn Store, key: &str) -> Result<RunRow, CoordinatorError> {
    let mut found = store.find_runs(key)?;
    match found.len() {
        0 => Err(CoordinatorError::UnknownRun(key.into())),
        1 => Ok(found.remove(0)),
        matches => Err(CoordinatorError::AmbiguousRun { key: key.into(), matches }),
    }
}

/// Whether nothing more will happen to these jobs of a sweep without a user's action: every
/// job has finished, except evaluation jobs waiting for the checkpoint of a run that has
/// finished without it (failed, cancelled; `isoflop resume` brings both back).
pub fn sweep_settled(runs: &[RunRow]) -> bool {
    runs.iter().all(|r| {
        r.state.is_terminal()
            || r.eval.as_ref().is_some_and(|of| {
                r.state == isoflop_core::RunState::Queued
                    && runs
                        .iter()
                        .any(|p| p.run_id == of.parent && p.state.is_terminal() && p.state != isoflop_core::RunState::Succeeded)
            })
    })
}

/// A sweep's stored spec as it was submitted.
pub fn stored_spec(row: &SweepRow) -> Result<LoadedSpec, SpecError> {
    let path = PathBuf::from(&row.spec_path);
    let spec = SweepSpec::parse(&path, &row.spec_yaml)?;
    Ok(LoadedSpec { spec, path, text: row.spec_yaml.clone() })
}

/// Log file of an attempt under an artifacts directory.
pub fn log_path(artifacts: &Path, run_id: &str, attempt: u64) -> PathBuf {
    artifacts.join(run_id).join("logs").join(format!("attempt-{attempt}.log"))
}

/// Logs an error of a background step that has no caller to return it to (the scheduler
/// loop keeps going; the step is tried again at the next tick).
pub(crate) fn log_err(what: &str, r: Result<(), CoordinatorError>) {
    if let Err(e) = r {
        tracing::error!("{what}: {e}");
    }
}
