//! The coordinator: owns the durable state of runs, launches attempts through an executor,
//! watches leases and process exits, classifies failures and retries.
//!
//! It is shared by the gRPC services (`service::worker`, `service::control`) and the
//! scheduler loop ([`Coordinator::run_scheduler`]). Every state change goes through the
//! store, which checks it against the state machine and records an event.

use crate::auth;
use crate::executor::{Executor, ExecutorEvent, ExitReport, LaunchSpec};
use crate::resolve::PlannedSweep;
use crate::retry::after_failure;
use isoflop_core::spec::{ExecutorSpec, LoadedSpec, RuntimeSpec, SpecError, SweepSpec};
use isoflop_core::{FailureClass, RunState};
use isoflop_proto::v1 as pb;
use isoflop_store::{AttemptEnd, AttemptOutcome, Change, Store, StoreError, SubmitResult, now_ms};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Settings of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// URL workers use to reach the worker API.
    pub worker_url: String,
    /// Root of per-run checkpoints and logs.
    pub artifacts_dir: PathBuf,
    /// Counted retries per run.
    pub max_retries: u64,
    /// A worker that does not report for this long is presumed lost.
    pub lease: Duration,
    /// Extra time a launched worker gets to attach (process start, libtorch loading).
    pub launch_grace: Duration,
    /// First back-off of a counted retry.
    pub backoff_base: Duration,
    /// Scheduler period.
    pub tick: Duration,
    /// How long a drain waits for workers to checkpoint before killing them.
    pub drain_grace: Duration,
    /// CPU threads of every worker, whatever a sweep's spec says (`isoflop serve`: the
    /// daemon's executor section wins); `None` takes each spec's `executor.threads_per_run`.
    pub threads_per_run: Option<u64>,
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
        };
        CoordinatorConfig {
            worker_url,
            artifacts_dir,
            max_retries: executor.max_retries(),
            lease: Duration::from_secs(executor.lease_seconds()),
            launch_grace: Duration::from_secs(launch_grace),
            backoff_base: Duration::from_secs(2),
            tick: Duration::from_millis(250),
            drain_grace: Duration::from_secs(120),
            threads_per_run: None,
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
    #[error("run `{0}` not found")]
    UnknownRun(String),
}

/// What a worker needs to run, besides its run's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRuntime {
    pub runtime: RuntimeSpec,
    pub threads: u64,
    /// The first sweep that holds the run (labels its Kubernetes Jobs).
    pub sweep: String,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) cfg: CoordinatorConfig,
    /// Runtime settings per run, from the spec of a sweep that holds it.
    runtimes: Mutex<HashMap<String, RunRuntime>>,
    /// Runs whose workers are asked to stop at their next report.
    stopping: Mutex<HashSet<String>>,
    draining: AtomicBool,
    pub(crate) events: broadcast::Sender<pb::RunEvent>,
    wake: Notify,
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

fn pb_state(s: RunState) -> i32 {
    (match s {
        RunState::Planned => pb::RunState::Planned,
        RunState::Queued => pb::RunState::Queued,
        RunState::Blocked => pb::RunState::Blocked,
        RunState::Launching => pb::RunState::Launching,
        RunState::Running => pb::RunState::Running,
        RunState::Succeeded => pb::RunState::Succeeded,
        RunState::Failed => pb::RunState::Failed,
        RunState::Cancelled => pb::RunState::Cancelled,
    }) as i32
}

/// Proto enum value of a failure class.
pub fn pb_class(c: Option<FailureClass>) -> i32 {
    (match c {
        None => pb::FailureClass::Unspecified,
        Some(FailureClass::Preempted) => pb::FailureClass::Preempted,
        Some(FailureClass::NodeLost) => pb::FailureClass::NodeLost,
        Some(FailureClass::Oom) => pb::FailureClass::Oom,
        Some(FailureClass::Diverged) => pb::FailureClass::Diverged,
        Some(FailureClass::UserError) => pb::FailureClass::UserError,
        Some(FailureClass::Unknown) => pb::FailureClass::Unknown,
    }) as i32
}

/// Failure class of a proto enum value (`unspecified` reads as `unknown`).
pub fn class_from_pb(v: i32) -> FailureClass {
    match pb::FailureClass::try_from(v).unwrap_or(pb::FailureClass::Unknown) {
        pb::FailureClass::Preempted => FailureClass::Preempted,
        pb::FailureClass::NodeLost => FailureClass::NodeLost,
        pb::FailureClass::Oom => FailureClass::Oom,
        pb::FailureClass::Diverged => FailureClass::Diverged,
        pb::FailureClass::UserError => FailureClass::UserError,
        pb::FailureClass::Unknown | pb::FailureClass::Unspecified => FailureClass::Unknown,
    }
}

/// Proto enum value of a run state.
pub fn pb_run_state(s: RunState) -> i32 {
    pb_state(s)
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
            draining: AtomicBool::new(false),
            events,
            wake: Notify::new(),
        };
        Coordinator { inner: Arc::new(inner) }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Live events (state changes, progress, evals) of all runs.
    pub fn subscribe(&self) -> broadcast::Receiver<pb::RunEvent> {
        self.inner.events.subscribe()
    }

    /// Checkpoint directory of a run.
    pub fn checkpoint_dir(&self, run_id: &str) -> PathBuf {
        self.inner.cfg.artifacts_dir.join(run_id).join("checkpoints")
    }

    /// The coordinator's settings.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.inner.cfg
    }

    /// Log file of an attempt.
    pub fn log_path(&self, run_id: &str, attempt: u64) -> PathBuf {
        log_path(&self.inner.cfg.artifacts_dir, run_id, attempt)
    }

    /// Plans and records a sweep; runs it shares with other sweeps are not trained again.
    pub fn submit(&self, loaded: &LoadedSpec) -> Result<SubmitResult, CoordinatorError> {
        self.submit_planned(&loaded.spec, &PlannedSweep::from_spec(loaded)?)
    }

    /// Records an already planned sweep (see [`Coordinator::submit`]).
    pub fn submit_planned(&self, spec: &SweepSpec, planned: &PlannedSweep) -> Result<SubmitResult, CoordinatorError> {
        let result = self.inner.store.submit_sweep(&planned.sweep, &planned.new_runs())?;
        self.register_runtime(&planned.sweep.name, spec, planned.runs.iter().map(|r| r.run_id.0.clone()));
        self.inner.wake.notify_one();
        Ok(result)
    }

    fn register_runtime(&self, sweep: &str, spec: &SweepSpec, runs: impl Iterator<Item = String>) {
        let rt = RunRuntime {
            runtime: spec.runtime.clone(),
            threads: self.inner.cfg.threads_per_run.unwrap_or(spec.executor.threads_per_run()),
            sweep: sweep.into(),
        };
        let mut map = self.inner.runtimes.lock().unwrap_or_else(|p| p.into_inner());
        for r in runs {
            map.entry(r).or_insert_with(|| rt.clone());
        }
    }

    /// Runtime settings of a run (defaults if no stored sweep says otherwise).
    pub fn runtime_of(&self, run_id: &str) -> RunRuntime {
        self.inner.runtimes.lock().unwrap_or_else(|p| p.into_inner()).get(run_id).cloned().unwrap_or(RunRuntime {
            runtime: RuntimeSpec::default(),
            threads: 1,
            sweep: String::new(),
        })
    }

    /// Makes the state left by an earlier coordinator consistent: reloads runtime settings of
    /// stored sweeps, and ends attempts this coordinator cannot adopt (their workers are
    /// asked to checkpoint and stop; the runs are requeued and resume from a checkpoint).
    pub fn recover(&self) -> Result<usize, CoordinatorError> {
        let store = &self.inner.store;
        for sweep in store.sweeps()? {
            if let Ok(spec) = SweepSpec::parse(Path::new(&sweep.spec_path), &sweep.spec_yaml) {
                let runs = store.sweep_runs(&sweep.name)?;
                self.register_runtime(&sweep.name, &spec, runs.into_iter().map(|r| r.run_id));
            }
        }
        let mut ended = 0;
        for a in store.active_attempts()? {
            if self.inner.executor.is_tracking(&a.run_id, a.attempt) {
                // Adopted: its worker gets a full lease to find the new coordinator.
                let lease = now_ms() + (self.inner.cfg.lease + self.launch_grace()).as_millis() as i64;
                let _ = store.renew_lease(&a.run_id, a.attempt, lease);
                continue;
            }
            self.inner.executor.stop_orphan(&a.executor_ref, &a.run_id);
            let end = AttemptEnd {
                outcome: AttemptOutcome::Interrupted,
                failure_class: Some(FailureClass::Preempted),
                message: "coordinator restarted; resuming from the newest checkpoint".into(),
                not_before_ms: None,
                spend_retry: false,
            };
            self.end_attempt(&a.run_id, a.attempt, &end, RunState::Queued);
            ended += 1;
        }
        Ok(ended)
    }

    /// Ends an attempt and moves the run, broadcasting the change; a stale attempt is ignored.
    pub(crate) fn end_attempt(&self, run_id: &str, attempt: u64, end: &AttemptEnd, to: RunState) -> bool {
        let from = self.inner.store.run(run_id).ok().flatten().map(|r| r.state);
        match self.inner.store.end_attempt(run_id, attempt, end, to) {
            Ok(()) => {
                info!(run_id, attempt, to = %to, class = ?end.failure_class, "attempt ended: {}", end.message);
                self.broadcast_state(run_id, from.unwrap_or(to), to, end.failure_class, &end.message);
                self.inner.wake.notify_one();
                true
            }
            Err(StoreError::StaleAttempt { .. }) => false,
            Err(e) => {
                warn!(run_id, attempt, "cannot end attempt: {e}");
                false
            }
        }
    }

    pub(crate) fn broadcast_state(&self, run_id: &str, from: RunState, to: RunState, class: Option<FailureClass>, msg: &str) {
        let _ = self.inner.events.send(pb::RunEvent {
            run_id: run_id.into(),
            unix_millis: now_ms(),
            event: Some(pb::run_event::Event::State(pb::StateChanged {
                from: pb_state(from),
                to: pb_state(to),
                failure_class: pb_class(class),
                message: msg.into(),
            })),
        });
    }

    pub(crate) fn broadcast(&self, run_id: &str, event: pb::run_event::Event) {
        let _ = self.inner.events.send(pb::RunEvent { run_id: run_id.into(), unix_millis: now_ms(), event: Some(event) });
    }

    /// Ends a failed attempt, deciding by its class whether the run is retried.
    pub(crate) fn fail_attempt(&self, run_id: &str, attempt: u64, class: FailureClass, message: String) -> bool {
        let retries_used = self.inner.store.run(run_id).ok().flatten().map(|r| r.retries_used).unwrap_or(0);
        let d = after_failure(class, retries_used, self.inner.cfg.max_retries, self.inner.cfg.backoff_base);
        let end = AttemptEnd {
            outcome: AttemptOutcome::Failed,
            failure_class: Some(class),
            message,
            not_before_ms: (d.next == RunState::Queued).then(|| now_ms() + d.delay.as_millis() as i64),
            spend_retry: d.spend_retry,
        };
        self.end_attempt(run_id, attempt, &end, d.next)
    }

    /// Whether the worker of a run should stop at its next report.
    pub fn should_stop(&self, run_id: &str) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
            || self.inner.stopping.lock().unwrap_or_else(|p| p.into_inner()).contains(run_id)
    }

    /// Cancels one run: a live worker is stopped, the run ends `cancelled`.
    pub fn cancel_run(&self, run_id: &str) -> Result<bool, CoordinatorError> {
        let store = &self.inner.store;
        let run = store.run(run_id)?.ok_or_else(|| CoordinatorError::UnknownRun(run_id.into()))?;
        if run.state.is_terminal() {
            return Ok(false);
        }
        let live_attempt = store.attempt(run_id, run.attempts)?.is_some_and(|a| a.outcome == AttemptOutcome::Active);
        if live_attempt {
            let end = AttemptEnd {
                outcome: AttemptOutcome::Cancelled,
                failure_class: None,
                message: "cancelled".into(),
                not_before_ms: None,
                spend_retry: false,
            };
            self.inner.stopping.lock().unwrap_or_else(|p| p.into_inner()).insert(run_id.into());
            if self.end_attempt(run_id, run.attempts, &end, RunState::Cancelled) {
                self.inner.executor.stop(run_id, run.attempts);
                self.inner.executor.forget_run(run_id);
                return Ok(true);
            }
            return Ok(false);
        }
        store.transition(run_id, RunState::Cancelled, &Change { message: "cancelled".into(), ..Change::default() })?;
        self.broadcast_state(run_id, run.state, RunState::Cancelled, None, "cancelled");
        self.inner.executor.forget_run(run_id);
        Ok(true)
    }

    /// Cancels every unfinished run of a sweep.
    pub fn cancel_sweep(&self, sweep: &str) -> Result<u32, CoordinatorError> {
        let runs = self.sweep_runs(sweep)?;
        let mut n = 0;
        for r in runs {
            if self.cancel_run(&r.run_id)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Requeues the runs of a sweep that ended failed or cancelled; diverged runs only when
    /// asked. Their retry budget starts afresh.
    pub fn resume_sweep(&self, sweep: &str, include_diverged: bool) -> Result<u32, CoordinatorError> {
        let mut n = 0;
        for r in self.sweep_runs(sweep)? {
            let eligible = match r.state {
                RunState::Failed => include_diverged || r.failure_class != Some(FailureClass::Diverged),
                RunState::Cancelled => true,
                _ => false,
            };
            if !eligible {
                continue;
            }
            self.inner.stopping.lock().unwrap_or_else(|p| p.into_inner()).remove(&r.run_id);
            let change = Change { message: "resumed".into(), reset_retries: true, not_before_ms: Some(0), ..Change::default() };
            self.inner.store.transition(&r.run_id, RunState::Queued, &change)?;
            self.broadcast_state(&r.run_id, r.state, RunState::Queued, None, "resumed");
            n += 1;
        }
        self.inner.wake.notify_one();
        Ok(n)
    }

    fn sweep_runs(&self, sweep: &str) -> Result<Vec<isoflop_store::RunRow>, CoordinatorError> {
        if self.inner.store.sweep(sweep)?.is_none() {
            return Err(CoordinatorError::UnknownSweep(sweep.into()));
        }
        Ok(self.inner.store.sweep_runs(sweep)?)
    }

    /// The scheduler loop: reaps exits, expires leases, launches queued runs. Returns after
    /// `shutdown` is cancelled and the drain (workers checkpoint and stop) is over.
    pub async fn run_scheduler(self, mut exits: mpsc::UnboundedReceiver<ExecutorEvent>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(event) = exits.recv() => self.on_event(event),
                _ = tick.tick() => {}
                _ = self.inner.wake.notified() => {}
            }
            while let Ok(event) = exits.try_recv() {
                self.on_event(event);
            }
            self.expire_leases();
            self.launch_ready();
        }
        self.drain(&mut exits).await;
    }

    /// Stops launching and asks every live worker to checkpoint and stop; waits for them
    /// (killing those that outlive the grace period).
    async fn drain(&self, exits: &mut mpsc::UnboundedReceiver<ExecutorEvent>) {
        if self.inner.executor.survives_restart() {
            // Cluster Jobs keep training; the next coordinator adopts them.
            info!("leaving running attempts to the next coordinator");
            return;
        }
        self.inner.draining.store(true, Ordering::SeqCst);
        let active = self.inner.store.active_attempts().unwrap_or_default();
        for a in &active {
            self.inner.executor.stop(&a.run_id, a.attempt);
        }
        let deadline = tokio::time::Instant::now() + self.inner.cfg.drain_grace;
        loop {
            let live: Vec<_> = self
                .inner
                .store
                .active_attempts()
                .unwrap_or_default()
                .into_iter()
                .filter(|a| self.inner.executor.is_tracking(&a.run_id, a.attempt))
                .collect();
            if live.is_empty() && active.iter().all(|a| !self.inner.executor.is_tracking(&a.run_id, a.attempt)) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for a in &live {
                    warn!(run_id = %a.run_id, "worker did not stop in time; killing it");
                    self.inner.executor.kill(&a.run_id, a.attempt);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
            tokio::select! {
                Some(event) = exits.recv() => self.on_event(event),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        while let Ok(event) = exits.try_recv() {
            self.on_event(event);
        }
        // Attempts whose workers never attached or vanished: requeue them.
        for a in self.inner.store.active_attempts().unwrap_or_default() {
            let end = AttemptEnd {
                outcome: AttemptOutcome::Interrupted,
                failure_class: Some(FailureClass::Preempted),
                message: "coordinator stopped".into(),
                not_before_ms: None,
                spend_retry: false,
            };
            self.end_attempt(&a.run_id, a.attempt, &end, RunState::Queued);
        }
    }

    fn on_event(&self, event: ExecutorEvent) {
        match event {
            ExecutorEvent::Exited(exit) => self.on_exit(exit),
            ExecutorEvent::Blocked { run_id, attempt, message } => self.on_blocked(&run_id, attempt, &message),
            ExecutorEvent::Placed { run_id, attempt } => self.on_placed(&run_id, attempt),
        }
    }

    /// The live attempt `attempt` of `run_id` and its run's state, if that attempt is live.
    fn live(&self, run_id: &str, attempt: u64) -> Option<RunState> {
        let a = self.inner.store.attempt(run_id, attempt).ok().flatten()?;
        let run = self.inner.store.run(run_id).ok().flatten()?;
        (a.outcome == AttemptOutcome::Active && run.attempts == attempt).then_some(run.state)
    }

    /// The executor cannot place the attempt now: the run shows `blocked` with the reason.
    fn on_blocked(&self, run_id: &str, attempt: u64, message: &str) {
        // Only a launching attempt becomes blocked; one already blocked keeps the reason it was
        // blocked with until it is placed or ends (states have no self-loops).
        if self.live(run_id, attempt) != Some(RunState::Launching) {
            return;
        }
        let from = RunState::Launching;
        let change = Change { attempt: Some(attempt), message: message.into(), ..Change::default() };
        match self.inner.store.transition(run_id, RunState::Blocked, &change) {
            Ok(_) => self.broadcast_state(run_id, from, RunState::Blocked, None, message),
            Err(e) => warn!(run_id, attempt, "cannot mark run blocked: {e}"),
        }
    }

    /// A blocked attempt was placed: its worker is starting, with a fresh start-up lease.
    fn on_placed(&self, run_id: &str, attempt: u64) {
        if self.live(run_id, attempt) != Some(RunState::Blocked) {
            return;
        }
        let lease = now_ms() + (self.inner.cfg.lease + self.launch_grace()).as_millis() as i64;
        let _ = self.inner.store.renew_lease(run_id, attempt, lease);
        let change = Change { attempt: Some(attempt), message: "placed".into(), ..Change::default() };
        match self.inner.store.transition(run_id, RunState::Launching, &change) {
            Ok(_) => self.broadcast_state(run_id, RunState::Blocked, RunState::Launching, None, "placed"),
            Err(e) => warn!(run_id, attempt, "cannot mark run launching: {e}"),
        }
    }

    fn launch_grace(&self) -> Duration {
        self.inner.cfg.launch_grace
    }

    /// A worker ended. If it reported its outcome, nothing is left to do; otherwise the
    /// attempt failed and is classified here (by the executor's class when it has one).
    fn on_exit(&self, exit: ExitReport) {
        let Ok(Some(a)) = self.inner.store.attempt(&exit.run_id, exit.attempt) else { return };
        if a.outcome != AttemptOutcome::Active {
            return;
        }
        let draining = self.inner.draining.load(Ordering::SeqCst);
        let class = match exit.class {
            Some(c) => c,
            None if draining => FailureClass::Preempted,
            None => FailureClass::Unknown,
        };
        let msg = format!("worker {} without reporting an outcome", exit.describe());
        warn!(run_id = %exit.run_id, attempt = exit.attempt, "{msg}");
        self.fail_attempt(&exit.run_id, exit.attempt, class, msg);
    }

    /// Attempts whose lease ran out: the worker is presumed lost.
    fn expire_leases(&self) {
        let now = now_ms();
        for a in self.inner.store.active_attempts().unwrap_or_default() {
            if a.lease_expires_ms >= now {
                continue;
            }
            // A blocked attempt has no worker yet; its lease starts when it is placed.
            if self.inner.store.run(&a.run_id).ok().flatten().is_some_and(|r| r.state == RunState::Blocked) {
                continue;
            }
            self.inner.executor.kill(&a.run_id, a.attempt);
            let msg = format!("no report for {} s: lease expired", self.inner.cfg.lease.as_secs());
            self.fail_attempt(&a.run_id, a.attempt, FailureClass::NodeLost, msg);
        }
    }

    fn launch_ready(&self) {
        if self.inner.draining.load(Ordering::SeqCst) {
            return;
        }
        let store = &self.inner.store;
        let active = store.active_attempts().map(|a| a.len()).unwrap_or(usize::MAX);
        let free = self.inner.executor.slots().saturating_sub(active);
        if free == 0 {
            return;
        }
        let Ok(ready) = store.runs_in_state(RunState::Queued, Some(now_ms())) else { return };
        for run in ready.into_iter().take(free) {
            self.launch(&run.run_id);
        }
    }

    fn launch(&self, run_id: &str) {
        let store = &self.inner.store;
        let token = auth::new_token();
        // The first lease covers process start and libtorch loading.
        let lease = now_ms() + (self.inner.cfg.lease + self.launch_grace()).as_millis() as i64;
        let attempt = match store.start_attempt(run_id, &auth::hash_token(&token), lease) {
            Ok(a) => a,
            Err(e) => {
                warn!(run_id, "cannot start attempt: {e}");
                return;
            }
        };
        self.inner.stopping.lock().unwrap_or_else(|p| p.into_inner()).remove(run_id);
        self.broadcast_state(run_id, RunState::Queued, RunState::Launching, None, "");
        let spec = LaunchSpec {
            run_id: run_id.into(),
            sweep: self.runtime_of(run_id).sweep,
            attempt: attempt.attempt,
            token,
            coordinator_url: self.inner.cfg.worker_url.clone(),
            log_path: self.log_path(run_id, attempt.attempt),
        };
        match self.inner.executor.launch(&spec) {
            Ok(r) => {
                let _ = store.set_executor_ref(run_id, attempt.attempt, &r);
                info!(run_id, attempt = attempt.attempt, executor_ref = %r, "launched");
            }
            Err(e) => {
                self.fail_attempt(run_id, attempt.attempt, FailureClass::Unknown, e.to_string());
            }
        }
    }
}

/// Log file of an attempt under an artifacts directory.
pub fn log_path(artifacts: &Path, run_id: &str, attempt: u64) -> PathBuf {
    artifacts.join(run_id).join("logs").join(format!("attempt-{attempt}.log"))
}
