//! From watched Jobs and Pods to executor events.

use super::{Key, MANAGED_SELECTOR, Shared, run_of};
use crate::status::{JobVerdict, PodVerdict, job_verdict, pod_verdict};
use futures::StreamExt;
use isoflop_coordinator::executor::{ExecutorEvent, ExitReport};
use isoflop_core::FailureClass;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a failed Job waits for its pod's event before the pod is read.
pub(super) const SETTLE: Duration = Duration::from_secs(2);
/// How often stuck pods are checked against their grace period.
pub(super) const STUCK_CHECK: Duration = Duration::from_secs(2);

impl Shared {
    /// Starts the two watchers and the stuck-pod check (tracked tasks, stopped by `stop`).
    pub(super) fn start_watching(self: &Arc<Self>) {
        let (s1, s2) = (self.clone(), self.clone());
        let status = |kind: &'static str| {
            let shared = Arc::downgrade(self);
            move |state: Result<(), String>| {
                if let Some(s) = shared.upgrade() {
                    s.watching.lock().unwrap_or_else(|p| p.into_inner()).insert(kind, Some(state));
                }
            }
        };
        self.spawn(watch(
            self.jobs.clone(),
            self.stop.clone(),
            "Job",
            move |j: &Job, deleted| s1.on_job(j, deleted),
            status("Job"),
        ));
        self.spawn(watch(
            self.pods.clone(),
            self.stop.clone(),
            "Pod",
            move |p: &Pod, deleted| s2.on_pod(p, deleted),
            status("Pod"),
        ));
        self.spawn(check_stuck(self.clone(), self.stop.clone()));
    }

    fn send(&self, event: ExecutorEvent) {
        // Nobody listens only once the coordinator has stopped.
        let _ = self.events.send(event);
    }

    /// Marks the attempt done and reports how it ended, once; its pod log is then copied.
    pub(super) fn exited(&self, key: &Key, exit: ExitReport) {
        let first = self.with(key, |t| !std::mem::replace(&mut t.done, true)).unwrap_or(false);
        if first {
            info!(run_id = %key.0, attempt = key.1, class = ?exit.class, "attempt ended: {}", exit.describe());
            self.send(ExecutorEvent::Exited(exit));
            if let Some(me) = self.me() {
                self.spawn(me.save_log(key.clone()));
            }
        }
    }

    pub(super) fn failure(key: &Key, code: Option<i32>, signal: Option<i32>, class: FailureClass, reason: String) -> ExitReport {
        ExitReport { run_id: key.0.clone(), attempt: key.1, code, signal, class: Some(class), reason: Some(reason) }
    }

    pub(super) fn on_job(&self, job: &Job, deleted: bool) {
        let Some(key) = run_of(&job.metadata) else { return };
        let (stopping, blocked) = match self.with(&key, |t| (t.done, t.stopping, t.blocked)) {
            Some((false, stopping, blocked)) => (stopping, blocked),
            _ => return,
        };
        if deleted {
            if !stopping {
                let reason = "the attempt's Job was deleted by someone else".to_string();
                self.exited(&key, Self::failure(&key, None, None, FailureClass::Preempted, reason));
            }
            return;
        }
        match job_verdict(job) {
            JobVerdict::Suspended if !blocked => {
                self.with(&key, |t| t.blocked = true);
                let queue = self.cfg.kueue_queue.as_deref().unwrap_or("?");
                let message = format!("Job suspended: waiting for Kueue to admit it (queue {queue})");
                self.send(ExecutorEvent::Blocked { run_id: key.0.clone(), attempt: key.1, message });
            }
            JobVerdict::Active if blocked && job.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0 => {
                // Admitted; the pod watcher reports whether the pod itself can be placed.
            }
            JobVerdict::Failed { reason, deadline } => {
                // Normally the pod's status says how it ended, and the two watches need not
                // deliver in order: give the pod's event a moment, then read the pod.
                if let Some(me) = self.me() {
                    self.spawn(me.settle_failed_job(key, job.name_any(), reason, deadline));
                }
            }
            _ => {}
        }
    }

    /// A Job failed and no pod event has said why yet: read its pod; no pod left means its
    /// node took it (or the deadline did, when the Job says so).
    async fn settle_failed_job(self: Arc<Self>, key: Key, job: String, reason: String, deadline: bool) {
        tokio::time::sleep(SETTLE).await;
        if self.with(&key, |t| t.done).unwrap_or(true) {
            return;
        }
        self.limiter.acquire().await;
        let verdict = match self.pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await {
            Ok(p) => p.items.first().map(pod_verdict),
            Err(e) => {
                warn!(job, "cannot read the failed Job's pod: {e}");
                None
            }
        };
        let exit = match verdict {
            Some(PodVerdict::Failed { code, signal, class, reason }) => Self::failure(&key, code, signal, class, reason),
            _ if deadline => Self::failure(&key, None, None, FailureClass::UserError, reason),
            _ => Self::failure(&key, None, None, FailureClass::NodeLost, reason),
        };
        self.exited(&key, exit);
    }

    pub(super) fn on_pod(&self, pod: &Pod, deleted: bool) {
        let Some(key) = run_of(&pod.metadata) else { return };
        let Some((false, stopping, blocked)) = self.with(&key, |t| (t.done, t.stopping, t.blocked)) else { return };
        let verdict = pod_verdict(pod);
        if !matches!(verdict, PodVerdict::Stuck { .. }) {
            self.with(&key, |t| t.stuck = None);
        }
        match verdict {
            PodVerdict::Unschedulable(message) => {
                self.with(&key, |t| t.blocked = true);
                self.send(ExecutorEvent::Blocked { run_id: key.0.clone(), attempt: key.1, message });
            }
            PodVerdict::Placed | PodVerdict::Running if blocked => {
                self.with(&key, |t| t.blocked = false);
                self.send(ExecutorEvent::Placed { run_id: key.0.clone(), attempt: key.1 });
            }
            PodVerdict::Stuck { reason, message } => {
                self.with(&key, |t| {
                    if t.stuck.is_none() {
                        t.stuck = Some((Instant::now(), format!("{reason}: {message}")));
                    }
                });
            }
            PodVerdict::Failed { code, signal, class, reason } => {
                self.exited(&key, Self::failure(&key, code, signal, class, reason));
            }
            PodVerdict::Succeeded => {
                // The worker reported its outcome before exiting 0; if it did not, the
                // coordinator classifies the silent exit.
                self.exited(&key, ExitReport { run_id: key.0.clone(), attempt: key.1, code: Some(0), ..ExitReport::default() });
            }
            _ => {}
        }
        if deleted && !stopping {
            let reason = "the attempt's pod was deleted before it finished".to_string();
            self.exited(&key, Self::failure(&key, None, None, FailureClass::Preempted, reason));
        }
    }

    /// Fails attempts whose pods have been stuck (bad image, missing Secret) past the grace
    /// period as `user_error`, deleting their Jobs.
    pub(super) fn expire_stuck(&self) {
        let grace = Duration::from_secs(self.cfg.user_error_grace_seconds);
        let expired: Vec<(Key, String, String)> = self
            .lock()
            .iter()
            .filter(|(_, t)| !t.done)
            .filter_map(|(k, t)| {
                let (since, why) = t.stuck.as_ref()?;
                (since.elapsed() >= grace).then(|| (k.clone(), t.job.clone(), why.clone()))
            })
            .collect();
        for (key, job, why) in expired {
            let reason = format!("pod could not start for {} s: {why}", grace.as_secs());
            self.exited(&key, Self::failure(&key, None, None, FailureClass::UserError, reason));
            if let Some(me) = self.me() {
                self.spawn(me.delete_job(job, Some(0)));
            }
        }
    }
}

/// Follows the objects of ours of one kind (a kube-runtime watcher: an initial list, then a
/// watch with bookmarks, re-listing with back-off after errors) and hands each to `on`, with
/// `true` when it was deleted.
async fn watch<K>(
    api: Api<K>,
    stop: CancellationToken,
    what: &'static str,
    on: impl Fn(&K, bool),
    status: impl Fn(Result<(), String>),
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let cfg = watcher::Config::default().labels(MANAGED_SELECTOR);
    let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::default_backoff(watcher(api, cfg)));
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = stream.next() => ev,
        };
        match ev {
            Some(Ok(watcher::Event::Apply(o))) => {
                on(&o, false);
                status(Ok(()));
            }
            Some(Ok(watcher::Event::InitApply(o))) => on(&o, false),
            Some(Ok(watcher::Event::Delete(o))) => {
                on(&o, true);
                status(Ok(()));
            }
            Some(Ok(watcher::Event::InitDone)) => status(Ok(())),
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                warn!("{what} watch: {e}");
                status(Err(e.to_string()));
            }
            None => return,
        }
    }
}

/// Checks stuck pods every [`STUCK_CHECK`] until stopped.
async fn check_stuck(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(STUCK_CHECK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => shared.expire_stuck(),
        }
    }
}
