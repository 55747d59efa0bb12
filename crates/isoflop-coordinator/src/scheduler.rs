//! The scheduler loop: executor events (exits, blocked, placed), lease expiry, launches, and
//! the drain on shutdown. Each step is a method that reads time from the coordinator's clock,
//! so the unit tests below drive it with a clock they move.

use crate::auth;
use crate::coordinator::{Coordinator, CoordinatorError, log_err};
use crate::executor::{ExecutorEvent, ExitReport, LaunchSpec};
use isoflop_core::FailureClass;
use isoflop_store::{AttemptOutcome, Ending, RunRow, StoreError};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn};

impl Coordinator {
    /// The scheduler loop: handles executor events, expires leases, launches queued runs.
    /// Returns after `shutdown` is cancelled and the drain (workers checkpoint and stop) is
    /// over. A failing step is logged and tried again at the next tick.
    pub async fn run_scheduler(self, mut events: mpsc::UnboundedReceiver<ExecutorEvent>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(event) = events.recv() => batch.push(event),
                _ = tick.tick() => {}
                _ = self.inner.wake.notified() => {}
            }
            while let Ok(event) = events.try_recv() {
                batch.push(event);
            }
            self.blocking(move |c| {
                c.on_each(batch);
                log_err("scheduling", c.tick());
            })
            .await;
        }
        self.drain(&mut events).await;
    }

    /// Handles executor events off the async runtime (their store calls block).
    async fn on_events(&self, events: Vec<ExecutorEvent>) {
        if !events.is_empty() {
            self.blocking(move |c| c.on_each(events)).await;
        }
    }

    /// Handles executor events in order, logging what fails.
    fn on_each(&self, events: Vec<ExecutorEvent>) {
        for event in events {
            log_err("executor event", self.on_event(event));
        }
    }

    /// One scheduling pass: fails attempts whose lease expired, then launches queued runs
    /// whose back-off has passed into the executor's free slots.
    pub fn tick(&self) -> Result<(), CoordinatorError> {
        self.expire_leases()?;
        self.launch_ready()
    }

    /// Handles what the executor saw about an attempt.
    pub fn on_event(&self, event: ExecutorEvent) -> Result<(), CoordinatorError> {
        match event {
            ExecutorEvent::Exited(exit) => self.on_exit(exit),
            ExecutorEvent::Blocked { run_id, attempt, message } => {
                // Only a launching attempt becomes blocked; one already blocked keeps the
                // reason it was blocked with until it is placed or ends (no self-loops).
                if let Some(ev) = self.inner.store.block_attempt(&run_id, attempt, &message)? {
                    info!(run_id, attempt, "blocked: {message}");
                    self.publish(&ev);
                }
                Ok(())
            }
            ExecutorEvent::Placed { run_id, attempt } => {
                // Placed: its worker is starting, with a fresh start-up lease.
                if let Some(ev) = self.inner.store.place_attempt(&run_id, attempt, self.start_lease())? {
                    info!(run_id, attempt, "placed");
                    self.publish(&ev);
                }
                Ok(())
            }
        }
    }

    /// A worker ended. If it reported its outcome, nothing is left to do; otherwise the
    /// attempt failed and is classified here (by the executor's class when it has one; a
    /// silent exit during a drain counts as interrupted).
    fn on_exit(&self, exit: ExitReport) -> Result<(), CoordinatorError> {
        let Some(a) = self.inner.store.attempt(&exit.run_id, exit.attempt)? else { return Ok(()) };
        if a.outcome != AttemptOutcome::Active {
            return Ok(());
        }
        let class = match exit.class {
            Some(c) => c,
            None if self.inner.draining.load(Ordering::SeqCst) => FailureClass::Interrupted,
            None => FailureClass::Unknown,
        };
        let message = format!("worker {} without reporting an outcome", exit.describe());
        if self.fail(&exit.run_id, exit.attempt, class, message.clone())?.is_some() {
            warn!(run_id = %exit.run_id, attempt = exit.attempt, class = %class, "{message}");
        }
        Ok(())
    }

    /// Attempts whose lease ran out: the worker is presumed lost (`node_lost`). The store
    /// checks the lease and the run's state again in the transaction that fails it.
    fn expire_leases(&self) -> Result<(), CoordinatorError> {
        let now = self.now_ms();
        for a in self.inner.store.active_attempts()? {
            if a.lease_expires_ms >= now {
                continue;
            }
            if let Some(ev) = self.inner.store.expire_lease(&a.run_id, a.attempt, now, self.inner.cfg.retries)? {
                warn!(run_id = %a.run_id, attempt = a.attempt, "{}", ev.message);
                self.inner.executor.kill(&a.run_id, a.attempt);
                self.publish(&ev);
                self.inner.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Launches queued runs whose back-off has passed into free slots, in plan order.
    fn launch_ready(&self) -> Result<(), CoordinatorError> {
        if self.inner.draining.load(Ordering::SeqCst) {
            return Ok(());
        }
        let store = &self.inner.store;
        let active = store.active_attempts()?.len();
        let free = self.inner.executor.slots().saturating_sub(active);
        if free == 0 {
            return Ok(());
        }
        // A run whose earlier worker is still exiting waits for it (see `recover`).
        let held = self.inner.orphaned.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let ready = store.launchable(self.now_ms(), free + held.len())?;
        for run in ready.into_iter().filter(|r| !held.contains(&r.run_id)).take(free) {
            self.launch(&run)?;
        }
        Ok(())
    }

    /// Starts an attempt of a queued run and hands it to the executor.
    fn launch(&self, run: &RunRow) -> Result<(), CoordinatorError> {
        let store = &self.inner.store;
        // A sweep submitted a moment ago commits its runs before the submitting thread has
        // re-derived their settings; a tick in between must not fail them (found by
        // bench/coordinator on PostgreSQL: runs of a new sweep failed as user errors).
        if self.runtime_of(&run.run_id).is_err() {
            self.reload_runtimes()?;
        }
        let token = auth::new_token();
        let (attempt, ev) = match store.start_attempt(&run.run_id, &auth::hash_token(&token), self.start_lease()) {
            Ok(started) => started,
            // The run moved since it was read (cancelled by a client): nothing to launch.
            Err(StoreError::Transition { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let span = info_span!("attempt", run_id = %run.run_id, attempt = attempt.attempt);
        let _entered = span.enter();
        self.inner.stopping.lock().unwrap_or_else(|p| p.into_inner()).remove(&run.run_id);
        self.publish(&ev);
        let rt = match self.runtime_of(&run.run_id) {
            Ok(rt) => rt,
            Err(why) => {
                error!("no runtime settings: {why}");
                self.fail(&run.run_id, attempt.attempt, FailureClass::UserError, format!("no runtime settings: {why}"))?;
                return Ok(());
            }
        };
        let spec = LaunchSpec {
            run_id: run.run_id.clone(),
            sweep: rt.sweep,
            attempt: attempt.attempt,
            token,
            coordinator_url: self.inner.cfg.worker_url.clone(),
            log_path: self.log_path(&run.artifacts_key, attempt.attempt),
            artifacts_key: run.artifacts_key.clone(),
            eval: !run.is_training(),
        };
        match self.inner.executor.launch(&spec) {
            Ok(r) => {
                if let Err(e) = store.set_executor_ref(&run.run_id, attempt.attempt, &r) {
                    // A worker the store cannot name would be an orphan nobody stops after a
                    // restart: kill it (its lease expires, the run is requeued as node_lost).
                    error!(executor_ref = %r, "cannot record the worker's reference; killing it: {e}");
                    self.inner.executor.kill(&run.run_id, attempt.attempt);
                    return Err(e.into());
                }
                info!(executor_ref = %r, "launched");
            }
            Err(e) => {
                warn!("cannot launch: {e}");
                self.fail(&run.run_id, attempt.attempt, FailureClass::Unknown, e.to_string())?;
            }
        }
        Ok(())
    }

    /// Stops launching and asks every live worker to checkpoint and stop; waits for them
    /// (killing those that outlive the grace period), then requeues what is still active.
    async fn drain(&self, events: &mut mpsc::UnboundedReceiver<ExecutorEvent>) {
        if self.inner.executor.survives_restart() {
            // Cluster Jobs keep training; the next coordinator adopts them.
            info!("leaving running attempts to the next coordinator");
            return;
        }
        self.inner.draining.store(true, Ordering::SeqCst);
        let exec = &self.inner.executor;
        let deadline = tokio::time::Instant::now() + self.inner.cfg.drain_grace;
        let mut asked: Option<HashSet<(String, u64)>> = None;
        let mut killed_at = None;
        loop {
            match self.blocking(|c| c.inner.store.active_attempts()).await {
                Err(e) => error!("drain: cannot read the active attempts (retrying): {e}"),
                Ok(active) => {
                    let asked = asked.get_or_insert_with(|| {
                        for a in &active {
                            exec.stop(&a.run_id, a.attempt);
                        }
                        active.iter().map(|a| (a.run_id.clone(), a.attempt)).collect()
                    });
                    // Done when no worker asked to stop, and no active attempt, still runs.
                    let mut live: Vec<(String, u64)> =
                        active.iter().map(|a| (a.run_id.clone(), a.attempt)).filter(|(r, a)| exec.is_tracking(r, *a)).collect();
                    live.extend(asked.iter().filter(|(r, a)| exec.is_tracking(r, *a)).cloned());
                    if live.is_empty() {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline && killed_at.is_none() {
                        for (run_id, attempt) in &live {
                            warn!(run_id, attempt, "worker did not stop in time; killing it");
                            exec.kill(run_id, *attempt);
                        }
                        killed_at = Some(tokio::time::Instant::now());
                    }
                }
            }
            if killed_at.is_some_and(|t| t.elapsed() >= Duration::from_secs(2)) {
                break;
            }
            tokio::select! {
                Some(event) = events.recv() => self.on_events(vec![event]).await,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let mut rest = Vec::new();
        while let Ok(event) = events.try_recv() {
            rest.push(event);
        }
        self.on_events(rest).await;
        // Attempts whose workers never attached or vanished: requeue them.
        self.blocking(|c| match c.inner.store.active_attempts() {
            Err(e) => error!("drain: cannot read the active attempts; the next coordinator recovers them: {e}"),
            Ok(active) => {
                for a in active {
                    let ending = Ending::Interrupted {
                        checkpoint: None,
                        class: FailureClass::Interrupted,
                        message: "coordinator stopped".into(),
                    };
                    log_err("drain", c.end(&a.run_id, a.attempt, &ending).map(|_| ()));
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CoordinatorConfig;
    use crate::executor::{Executor, ExecutorError, Orphan};
    use isoflop_core::RunState;
    use isoflop_core::{Clock, ManualClock, Retries};
    use isoflop_store::{NewRun, NewSweep, SqliteStore, Store};
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    /// An executor that records what it is asked and starts nothing.
    #[derive(Default)]
    struct Recorder {
        slots: usize,
        launched: Mutex<Vec<LaunchSpec>>,
        stopped: Mutex<Vec<(String, u64)>>,
        killed: Mutex<Vec<(String, u64)>>,
        forgotten: Mutex<Vec<String>>,
        refuse: Mutex<bool>,
        /// Workers of an earlier coordinator still alive, by executor reference; stopping one
        /// blocks until [`Recorder::orphans_exit`].
        orphans: Mutex<HashSet<String>>,
        orphans_gone: (Mutex<bool>, std::sync::Condvar),
    }

    impl Recorder {
        fn orphans_exit(&self) {
            *self.orphans_gone.0.lock().unwrap() = true;
            self.orphans_gone.1.notify_all();
        }
    }

    #[async_trait::async_trait]
    impl Executor for Recorder {
        fn slots(&self) -> usize {
            self.slots
        }
        fn launch(&self, spec: &LaunchSpec) -> Result<String, ExecutorError> {
            if *self.refuse.lock().unwrap() {
                return Err(ExecutorError::Cluster("quota exceeded".into()));
            }
            self.launched.lock().unwrap().push(spec.clone());
            Ok(format!("test:{}:{}", spec.run_id, spec.attempt))
        }
        fn stop(&self, run_id: &str, attempt: u64) {
            self.stopped.lock().unwrap().push((run_id.into(), attempt));
        }
        fn kill(&self, run_id: &str, attempt: u64) {
            self.killed.lock().unwrap().push((run_id.into(), attempt));
        }
        fn is_tracking(&self, _: &str, _: u64) -> bool {
            false
        }
        fn orphan_alive(&self, orphan: &Orphan<'_>) -> bool {
            self.orphans.lock().unwrap().contains(orphan.executor_ref)
        }
        fn stop_orphan(&self, orphan: &Orphan<'_>) {
            if self.orphan_alive(orphan) {
                let (gone, cv) = &self.orphans_gone;
                let _exited = cv.wait_while(gone.lock().unwrap(), |g| !*g).unwrap();
            }
        }
        fn forget_runs(&self, run_ids: &[String]) {
            self.forgotten.lock().unwrap().extend(run_ids.iter().cloned());
        }
    }

    /// A spec that parses without data files (external corpus), with a runtime section.
    fn spec(name: &str, device: &str) -> String {
        format!(
            "name: {name}\nbudgets: [1e12]\nmodel: {{family: llama, seq_len: 64}}\n\
             grid: {{hidden: [32], layers: {{fixed: 1}}, heads: {{head_size: 16}}, fixed_batch: 8, lr_constant: 0.1, lr_max: 0.01}}\n\
             recipe: {{warmup_frac: 0.1, decay_frac: 0.2, weight_decay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1.0e-8, grad_clip: 1.0}}\n\
             data: {{tokenizer: byte, corpora: [{{name: ext, external: ds}}]}}\n\
             executor: {{kind: local, max_parallel: 2, threads_per_run: 3}}\nruntime: {{device: {device}}}\n"
        )
    }

    struct World {
        clock: Arc<ManualClock>,
        store: Arc<dyn Store>,
        exec: Arc<Recorder>,
        coord: Coordinator,
    }

    const LEASE: Duration = Duration::from_secs(60);
    const GRACE: Duration = Duration::from_secs(30);

    fn world(slots: usize, runs: &[&str]) -> World {
        let clock = Arc::new(ManualClock::at(1_000_000));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
        let exec = Arc::new(Recorder { slots, ..Recorder::default() });
        let cfg = CoordinatorConfig {
            worker_url: "http://127.0.0.1:1".into(),
            artifacts_dir: PathBuf::from("/artifacts"),
            retries: Retries { max: 2, backoff_base: Duration::from_secs(2) },
            lease: LEASE,
            launch_grace: GRACE,
            tick: Duration::from_millis(250),
            drain_grace: Duration::from_secs(1),
            threads_per_run: None,
            clock: clock.clone(),
        };
        let coord = Coordinator::new(store.clone(), exec.clone(), cfg);
        submit(&coord, "a", "cpu", runs);
        World { clock, store, exec, coord }
    }

    fn submit(coord: &Coordinator, sweep: &str, device: &str, runs: &[&str]) {
        let new: Vec<NewRun> = runs
            .iter()
            .map(|id| NewRun {
                run_id: (*id).into(),
                name: format!("{sweep}-{id}"),
                corpus: "ext".into(),
                budget: 1e12,
                config_json: "{}".into(),
                eval: None,
            })
            .collect();
        let s = NewSweep { name: sweep.into(), spec_yaml: spec(sweep, device), spec_path: format!("/specs/{sweep}.yaml") };
        coord.store().submit_sweep(&s, &new).unwrap();
        coord.reload_runtimes().unwrap();
    }

    fn state(w: &World, run: &str) -> RunRow {
        w.store.run(run).unwrap().unwrap()
    }

    fn launched(w: &World) -> Vec<(String, u64)> {
        w.exec.launched.lock().unwrap().iter().map(|l| (l.run_id.clone(), l.attempt)).collect()
    }

    #[test]
    fn launches_fill_the_free_slots_in_plan_order() {
        let w = world(2, &["r1", "r2", "r3"]);
        w.coord.tick().unwrap();
        assert_eq!(launched(&w), [("r1".into(), 1), ("r2".into(), 1)]);
        assert_eq!((state(&w, "r1").state, state(&w, "r3").state), (RunState::Launching, RunState::Queued));
        let a = w.store.attempt("r1", 1).unwrap().unwrap();
        assert_eq!(a.executor_ref, "test:r1:1");
        assert_eq!(a.lease_expires_ms, 1_000_000 + (LEASE + GRACE).as_millis() as i64, "start-up lease from the clock");
        // Full: nothing more, however often it ticks.
        w.coord.tick().unwrap();
        assert_eq!(launched(&w).len(), 2);
        // A slot frees up (a success): the next run goes in.
        w.store.attach("r1", 1, 0, 2_000_000).unwrap();
        w.coord.finish("r1", 1, &Ending::Succeeded { results: vec![], items: vec![], message: "done".into() }).unwrap();
        w.coord.tick().unwrap();
        assert_eq!(launched(&w).last(), Some(&("r3".into(), 1)));
        // The launch carries the owner's runtime: the sweep (for Job labels) and token.
        let l = w.exec.launched.lock().unwrap()[2].clone();
        assert_eq!((l.sweep.as_str(), l.coordinator_url.as_str()), ("a", "http://127.0.0.1:1"));
        let id = w.store.store_id().unwrap();
        assert_eq!(
            l.log_path,
            PathBuf::from(format!("/artifacts/{id}/r3/logs/attempt-1.log")),
            "under the store's own directory"
        );
    }

    #[test]
    fn leases_expire_by_the_clock_except_while_blocked() {
        let w = world(2, &["r1", "r2"]);
        w.coord.tick().unwrap();
        // r2 cannot be placed: blocked, with the scheduler's reason; its lease does not run.
        w.coord
            .on_event(ExecutorEvent::Blocked {
                run_id: "r2".into(),
                attempt: 1,
                message: "0/3 nodes: Insufficient nvidia.com/gpu".into(),
            })
            .unwrap();
        assert_eq!(state(&w, "r2").state, RunState::Blocked);
        assert!(state(&w, "r2").message.contains("Insufficient"));
        // Just before the start-up lease ends nothing happens; just after, r1 is node_lost.
        w.clock.advance(LEASE + GRACE);
        w.coord.tick().unwrap();
        assert_eq!(state(&w, "r1").state, RunState::Launching);
        w.clock.advance(Duration::from_millis(1));
        w.coord.tick().unwrap();
        let r1 = state(&w, "r1");
        let a = w.store.attempt("r1", 1).unwrap().unwrap();
        assert_eq!((a.outcome, a.failure_class), (AttemptOutcome::Failed, Some(FailureClass::NodeLost)));
        assert!(a.message.contains("lease expired"), "{}", a.message);
        assert_eq!(r1.retries_used, 0, "node_lost retries without spending the budget");
        assert_eq!(*w.exec.killed.lock().unwrap(), [("r1".to_string(), 1)], "the lost worker is killed");
        // It was requeued at once and relaunched into the free slot in the same tick.
        assert_eq!(launched(&w).last(), Some(&("r1".into(), 2)));
        assert_eq!(state(&w, "r2").state, RunState::Blocked, "a blocked attempt has no lease to lose");
        // Placed: a fresh start-up lease from now; a report keeps it alive.
        w.coord.on_event(ExecutorEvent::Placed { run_id: "r2".into(), attempt: 1 }).unwrap();
        assert_eq!(state(&w, "r2").state, RunState::Launching);
        w.clock.advance(LEASE);
        w.coord.tick().unwrap();
        assert_eq!(state(&w, "r2").state, RunState::Launching, "within its new start-up lease");
        // A stale placement or block (an old attempt) changes nothing.
        w.coord.on_event(ExecutorEvent::Blocked { run_id: "r1".into(), attempt: 1, message: "old".into() }).unwrap();
        assert_eq!(state(&w, "r1").state, RunState::Launching);
    }

    #[test]
    fn retries_follow_the_failure_class_and_back_off_by_the_clock() {
        let w = world(1, &["r1"]);
        let exit = |attempt, class| {
            ExecutorEvent::Exited(ExitReport { run_id: "r1".into(), attempt, signal: Some(9), class, ..ExitReport::default() })
        };
        w.coord.tick().unwrap();
        // A silent death (unknown): counted, 2 s back-off.
        w.coord.on_event(exit(1, None)).unwrap();
        let r = state(&w, "r1");
        assert_eq!((r.state, r.retries_used, r.failure_class), (RunState::Queued, 1, Some(FailureClass::Unknown)));
        w.coord.tick().unwrap();
        assert_eq!(launched(&w).len(), 1, "not before its back-off");
        w.clock.advance(Duration::from_secs(2));
        w.coord.tick().unwrap();
        assert_eq!(launched(&w).len(), 2);
        // OOMKilled (the executor's class): counted, back-off doubles.
        w.coord.on_event(exit(2, Some(FailureClass::Oom))).unwrap();
        assert_eq!(state(&w, "r1").not_before_ms, w.clock.now_ms() + 4_000);
        w.clock.advance(Duration::from_secs(4));
        w.coord.tick().unwrap();
        // Preempted: free, at once, however many times.
        for attempt in [3, 4, 5] {
            w.coord.on_event(exit(attempt, Some(FailureClass::Preempted))).unwrap();
            w.coord.tick().unwrap();
            assert_eq!(state(&w, "r1").retries_used, 2);
        }
        // Budget spent: the next counted failure is final.
        w.coord.on_event(exit(6, None)).unwrap();
        assert_eq!(state(&w, "r1").state, RunState::Failed);
        w.clock.advance(Duration::from_secs(600));
        w.coord.tick().unwrap();
        assert_eq!(launched(&w).len(), 6, "a failed run is not relaunched");
        // An exit after the worker reported its own outcome changes nothing.
        w.coord.on_event(exit(6, None)).unwrap();
        assert_eq!(w.store.events("r1").unwrap().iter().filter(|e| e.to == RunState::Failed).count(), 1);
    }

    #[test]
    fn a_refused_launch_fails_the_attempt_and_a_diverged_run_stays_failed() {
        let w = world(1, &["r1", "r2"]);
        *w.exec.refuse.lock().unwrap() = true;
        w.coord.tick().unwrap();
        let a = w.store.attempt("r1", 1).unwrap().unwrap();
        assert_eq!((a.failure_class, a.message.as_str()), (Some(FailureClass::Unknown), "cluster: quota exceeded"));
        *w.exec.refuse.lock().unwrap() = false;
        w.clock.advance(Duration::from_secs(2));
        w.coord.tick().unwrap();
        let (run, attempt) = launched(&w)[0].clone();
        w.store.attach(&run, attempt, 0, w.clock.now_ms() + 60_000).unwrap();
        let diverged = Ending::Failed {
            class: FailureClass::Diverged,
            message: "loss became NaN".into(),
            retries: w.coord.config().retries,
        };
        w.coord.finish(&run, attempt, &diverged).unwrap();
        assert_eq!(state(&w, &run).state, RunState::Failed, "diverged is never retried");
        // The worker's outcome is final: a second finish is refused, and the worker sees it.
        let err = w.coord.finish(&run, attempt, &diverged).unwrap_err();
        assert!(matches!(err, CoordinatorError::Store(StoreError::StaleAttempt { .. })), "{err}");
    }

    #[test]
    fn shared_runs_keep_the_owner_sweeps_runtime_across_restarts() {
        let w = world(2, &["r1", "r2"]);
        // A later sweep shares r2 and asks for CUDA: r2 keeps the owner's (sweep a's) settings.
        submit(&w.coord, "b", "cuda:1", &["r2", "r3"]);
        let rt = |c: &Coordinator, run: &str| c.runtime_of(run).map(|r| (r.sweep, r.runtime.device.to_string(), r.threads));
        assert_eq!(rt(&w.coord, "r2"), Ok(("a".into(), "cpu".into(), 3)));
        assert_eq!(rt(&w.coord, "r3"), Ok(("b".into(), "cuda:1".into(), 3)));
        // A new coordinator over the same store derives the same, whatever it reads first.
        let again = Coordinator::new(w.store.clone(), w.exec.clone(), w.coord.config().clone());
        again.recover().unwrap();
        assert_eq!(rt(&again, "r2"), Ok(("a".into(), "cpu".into(), 3)));
        assert_eq!(rt(&again, "r3"), Ok(("b".into(), "cuda:1".into(), 3)));
        // A daemon's thread count overrides the specs'.
        let mut cfg = w.coord.config().clone();
        cfg.threads_per_run = Some(8);
        let daemon = Coordinator::new(w.store.clone(), w.exec.clone(), cfg);
        daemon.recover().unwrap();
        assert_eq!(rt(&daemon, "r2").unwrap().2, 8);
    }

    /// Regression (the chaos drill): a restarted coordinator waited for each orphaned worker
    /// before it served, up to the 30 s SIGKILL grace for one that hung on the unanswered port.
    /// Now recovery returns at once; the orphan's attempt stays live over the wait (its stop
    /// checkpoint and outcome can still arrive), and its run is launched again only after the
    /// process has exited, even once its own outcome has ended the attempt.
    #[test]
    fn recovery_waits_for_no_orphan_and_relaunches_its_run_only_after_it_exited() {
        let w = world(2, &["r1", "r2"]);
        w.coord.tick().unwrap();
        w.store.attach("r1", 1, 0, 1_001_000).unwrap();
        w.store.attach("r2", 1, 0, 1_001_000).unwrap();
        // A new coordinator: r1's worker still runs here, r2's is gone.
        let exec = Arc::new(Recorder { slots: 2, ..Recorder::default() });
        exec.orphans.lock().unwrap().insert("test:r1:1".into());
        let again = Coordinator::new(w.store.clone(), exec.clone(), w.coord.config().clone());
        w.clock.advance(Duration::from_secs(600));
        let started = std::time::Instant::now();
        assert_eq!(again.recover().unwrap(), crate::Recovered { requeued: 1, stopping: 1 });
        assert!(started.elapsed() < Duration::from_secs(1), "recovery waited for the orphan");
        let a = w.store.attempt("r1", 1).unwrap().unwrap();
        assert_eq!(a.outcome, AttemptOutcome::Active, "the orphan's attempt stays live while it stops");
        let wait = (LEASE + GRACE + crate::executor::ORPHAN_STOP_LIMIT).as_millis() as i64;
        assert_eq!(a.lease_expires_ms, w.clock.now_ms() + wait, "its lease covers the wait");
        // The lease does not expire under the scheduler; only r2 goes again.
        again.tick().unwrap();
        let relaunched =
            |e: &Recorder| e.launched.lock().unwrap().iter().map(|l| (l.run_id.clone(), l.attempt)).collect::<Vec<_>>();
        assert_eq!(relaunched(&exec), [("r2".to_string(), 2)]);
        // The orphan reports its outcome to the new coordinator, then takes its time to exit.
        let stopped = Ending::Interrupted { checkpoint: None, class: FailureClass::Interrupted, message: "stopped".into() };
        again.finish("r1", 1, &stopped).unwrap();
        assert_eq!(state(&w, "r1").state, RunState::Queued);
        again.tick().unwrap();
        assert_eq!(relaunched(&exec).len(), 1, "not launched while the orphan's process lives");
        exec.orphans_exit();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !again.inner.orphaned.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the orphan's stop thread did not end");
            std::thread::sleep(Duration::from_millis(5));
        }
        again.tick().unwrap();
        assert_eq!(relaunched(&exec), [("r2".to_string(), 2), ("r1".to_string(), 2)]);
        assert_eq!(w.store.attempt("r1", 1).unwrap().unwrap().message, "stopped", "the orphan's own outcome stands");
    }

    /// Regression (bench/coordinator, PostgreSQL): a tick between a submit's commit and its
    /// re-derivation of runtime settings failed the new runs as user errors.
    #[test]
    fn a_tick_right_after_a_submit_commits_launches_its_runs() {
        let w = world(2, &[]);
        let run = NewRun {
            run_id: "r7".into(),
            name: "b-r7".into(),
            corpus: "ext".into(),
            budget: 1e12,
            config_json: "{}".into(),
            eval: None,
        };
        let sweep = NewSweep { name: "b".into(), spec_yaml: spec("b", "cpu"), spec_path: "/specs/b.yaml".into() };
        // Committed, but this coordinator has not derived the sweep's settings yet.
        w.store.submit_sweep(&sweep, &[run]).unwrap();
        w.coord.tick().unwrap();
        assert_eq!(launched(&w), [("r7".to_string(), 1)]);
        assert_eq!(state(&w, "r7").state, RunState::Launching);
    }

    #[test]
    fn a_run_without_parsable_settings_fails_as_user_error_instead_of_defaults() {
        let w = world(2, &[]);
        let broken = NewSweep {
            name: "old".into(),
            spec_yaml: spec("old", "cpu").replace("llama", "gpt"),
            spec_path: "/specs/old.yaml".into(),
        };
        let run = NewRun {
            run_id: "r9".into(),
            name: "old-r9".into(),
            corpus: "ext".into(),
            budget: 1e12,
            config_json: "{}".into(),
            eval: None,
        };
        w.store.submit_sweep(&broken, &[run]).unwrap();
        w.coord.recover().unwrap();
        assert!(w.coord.runtime_of("r9").unwrap_err().contains("stored spec of sweep `old` no longer parses"));
        w.coord.tick().unwrap();
        let a = w.store.attempt("r9", 1).unwrap().unwrap();
        assert_eq!(a.failure_class, Some(FailureClass::UserError));
        assert!(a.message.starts_with("no runtime settings: the stored spec of sweep `old`"), "{}", a.message);
        assert!(launched(&w).is_empty(), "nothing trains on default settings");
        // A later sweep that parses and holds the run gives it settings.
        w.store.resume_run("r9", false).unwrap();
        submit(&w.coord, "new", "cpu", &["r9"]);
        assert_eq!(w.coord.runtime_of("r9").unwrap().sweep, "new");
    }

    #[test]
    fn cancel_stops_live_workers_and_forgets_the_runs_once() {
        let w = world(1, &["r1", "r2"]);
        w.coord.tick().unwrap();
        let mut events = w.coord.subscribe();
        assert_eq!(w.coord.cancel_sweep("a").unwrap(), 2);
        assert_eq!(*w.exec.stopped.lock().unwrap(), [("r1".to_string(), 1)], "only the live worker is stopped");
        assert_eq!(*w.exec.forgotten.lock().unwrap(), ["r1", "r2"], "one request for the whole sweep");
        assert!(w.coord.should_stop("r1"));
        // The broadcast events are the stored ones, with their real `from` states.
        let froms: Vec<i32> = (0..2)
            .map(|_| match events.try_recv().unwrap().event.unwrap() {
                isoflop_proto::v1::run_event::Event::State(s) => s.from,
                e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(froms, [isoflop_proto::v1::RunState::Launching as i32, isoflop_proto::v1::RunState::Queued as i32]);
        assert_eq!(w.coord.cancel_sweep("a").unwrap(), 0);
        assert!(matches!(w.coord.cancel_run("nope"), Err(CoordinatorError::UnknownRun(_))));
        assert_eq!(w.coord.resume_sweep("a", false).unwrap(), 2);
        assert!(!w.coord.should_stop("r1"));
    }
}
