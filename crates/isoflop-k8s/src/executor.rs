//! The Kubernetes executor: one Job per attempt, watched (not polled) through the API server.
//!
//! * `launch` records the attempt and creates its Secret (the token) and Job in the
//!   background, rate-limited; names are deterministic, so a create retried after an error or
//!   by a restarted coordinator finds the existing object (409) instead of making a second.
//! * Two kube-runtime watchers (bookmarks on) follow the Jobs and Pods labelled as ours and
//!   turn their status into [`ExecutorEvent`]s: `Blocked` with the scheduler's message while a
//!   pod is unschedulable (or Kueue holds the Job suspended), `Placed` when it is bound, and
//!   `Exited` with a failure class when the pod or Job ends (see [`crate::status`]).
//! * `stop` deletes the Job (its pod gets SIGTERM and checkpoints), `kill` deletes it with no
//!   grace, `forget_run` deletes every Job of a cancelled run.
//! * [`KubernetesExecutor::connect`] lists the Jobs already there first, so a restarted
//!   coordinator adopts running attempts instead of requeueing them, and the workers' reports
//!   keep arriving. On shutdown the Jobs are left running ([`Executor::survives_restart`]).

use crate::api::{ApiCalls, CountLayer, Limiter};
use crate::manifest::CONTAINER;
use crate::manifest::{
    AttemptRef, LABEL_ATTEMPT, LABEL_RUN, LABEL_SWEEP, RUN_ID_ANNOTATION, job_for, job_name, label_value, secret_for,
};
use crate::status::{JobVerdict, PodVerdict, job_verdict, pod_verdict};
use futures::StreamExt;
use isoflop_coordinator::executor::{Executor, ExecutorError, ExecutorEvent, ExitReport, LaunchSpec};
use isoflop_core::FailureClass;
use isoflop_core::kubernetes::KubernetesSpec;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Label every object of ours carries; the watchers and adoption select on it.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=isoflop-coordinator";

/// Errors connecting to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubeExecutorError {
    #[error("cannot load a Kubernetes client configuration (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Config(String),
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

#[derive(Debug, Default)]
struct Tracked {
    job: String,
    /// The Job or pod ended, or the coordinator gave up on it; nothing more is reported.
    done: bool,
    /// The coordinator asked for it to go; its disappearance is not a failure.
    stopping: bool,
    blocked: bool,
    /// Since when the pod has been stuck (bad image, missing secret), and why.
    stuck: Option<(Instant, String)>,
}

type Key = (String, u64);

struct Shared {
    /// A weak handle to itself, for tasks spawned from `&self` methods.
    this: std::sync::OnceLock<std::sync::Weak<Shared>>,
    cfg: KubernetesSpec,
    /// Where the coordinator keeps attempt logs; a finished attempt's pod log is copied there.
    artifacts: PathBuf,
    jobs: Api<Job>,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    limiter: Limiter,
    tracked: Mutex<HashMap<Key, Tracked>>,
    events: UnboundedSender<ExecutorEvent>,
}

/// The `kubernetes` executor.
pub struct KubernetesExecutor {
    shared: Arc<Shared>,
    calls: ApiCalls,
    stop: CancellationToken,
}

impl std::fmt::Debug for KubernetesExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesExecutor").field("namespace", &self.shared.cfg.namespace).finish()
    }
}

impl Drop for KubernetesExecutor {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn run_of(meta: &kube::api::ObjectMeta) -> Option<Key> {
    let labels = meta.labels.as_ref()?;
    let attempt = labels.get(LABEL_ATTEMPT)?.parse().ok()?;
    let run = meta.annotations.as_ref().and_then(|a| a.get(RUN_ID_ANNOTATION)).or_else(|| labels.get(LABEL_RUN))?;
    Some((run.clone(), attempt))
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether a failed call is worth retrying (server trouble, throttling, the network).
fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        _ => true,
    }
}

impl KubernetesExecutor {
    /// Connects with the usual client configuration (`KUBECONFIG`, `~/.kube/config`, or the
    /// pod's service account), adopts the Jobs already in the namespace, and starts watching.
    /// `artifacts` is the coordinator's artifacts directory: each finished attempt's pod log is
    /// copied to its log file there (`isoflop logs`).
    pub async fn connect(
        cfg: KubernetesSpec,
        artifacts: PathBuf,
        events: UnboundedSender<ExecutorEvent>,
    ) -> Result<Self, KubeExecutorError> {
        let config = Config::infer().await.map_err(|e| KubeExecutorError::Config(e.to_string()))?;
        Self::with_config(config, cfg, artifacts, events).await
    }

    /// As [`KubernetesExecutor::connect`], with an explicit client configuration.
    pub async fn with_config(
        config: Config,
        cfg: KubernetesSpec,
        artifacts: PathBuf,
        events: UnboundedSender<ExecutorEvent>,
    ) -> Result<Self, KubeExecutorError> {
        let calls = ApiCalls::default();
        let builder =
            kube::client::ClientBuilder::try_from(config.clone()).map_err(|e| KubeExecutorError::Config(e.to_string()))?;
        let client: Client = builder.with_layer(&CountLayer(calls.clone())).build();
        let ns = cfg.namespace.clone();
        let shared = Arc::new(Shared {
            this: std::sync::OnceLock::new(),
            limiter: Limiter::new(cfg.qps, cfg.burst),
            jobs: Api::namespaced(client.clone(), &ns),
            pods: Api::namespaced(client.clone(), &ns),
            secrets: Api::namespaced(client, &ns),
            cfg,
            artifacts,
            tracked: Mutex::default(),
            events,
        });
        let _ = shared.this.set(Arc::downgrade(&shared));
        // Adopt what an earlier coordinator started: every unfinished Job of ours.
        shared.limiter.acquire().await;
        let existing = shared.jobs.list(&ListParams::default().labels(MANAGED_SELECTOR)).await?;
        {
            let mut t = shared.tracked.lock().unwrap_or_else(|p| p.into_inner());
            for job in existing.items {
                let Some(key) = run_of(&job.metadata) else { continue };
                let done = matches!(job_verdict(&job), JobVerdict::Complete | JobVerdict::Failed { .. })
                    || job.metadata.deletion_timestamp.is_some();
                t.insert(key, Tracked { job: job.name_any(), done, ..Tracked::default() });
            }
            let live = t.values().filter(|x| !x.done).count();
            if !t.is_empty() {
                info!(jobs = t.len(), live, "adopted Kubernetes Jobs of an earlier coordinator");
            }
        }
        let stop = CancellationToken::new();
        let (s1, s2) = (shared.clone(), shared.clone());
        tokio::spawn(watch(shared.jobs.clone(), stop.clone(), "Job", move |j: &Job, deleted| s1.on_job(j, deleted)));
        tokio::spawn(watch(shared.pods.clone(), stop.clone(), "Pod", move |p: &Pod, deleted| s2.on_pod(p, deleted)));
        tokio::spawn(check_stuck(shared.clone(), stop.clone()));
        Ok(KubernetesExecutor { shared, calls, stop })
    }

    /// HTTP requests this executor's client has sent, by kind.
    pub fn api_calls(&self) -> &ApiCalls {
        &self.calls
    }
}

/// Whose Jobs [`delete_jobs`] deletes.
#[derive(Debug, Clone, Copy)]
pub enum JobsOf<'a> {
    Sweep(&'a str),
    Run(&'a str),
}

/// Deletes the Jobs (with their pods and Secrets) of a sweep or of a run, from a short-lived
/// command; returns how many Jobs there were.
pub async fn delete_jobs(cfg: &KubernetesSpec, of: JobsOf<'_>) -> Result<usize, KubeExecutorError> {
    let client = Client::try_default().await.map_err(|e| KubeExecutorError::Config(e.to_string()))?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &cfg.namespace);
    let secrets: Api<Secret> = Api::namespaced(client, &cfg.namespace);
    let selector = match of {
        JobsOf::Sweep(s) => format!("{MANAGED_SELECTOR},{LABEL_SWEEP}={}", label_value(s)),
        JobsOf::Run(r) => format!("{MANAGED_SELECTOR},{LABEL_RUN}={}", label_value(r)),
    };
    let lp = ListParams::default().labels(&selector);
    let n = jobs.list_metadata(&lp).await?.items.len();
    jobs.delete_collection(&DeleteParams::background(), &lp).await?;
    secrets.delete_collection(&DeleteParams::background(), &lp).await?;
    Ok(n)
}

/// The name of an attempt's pod, if it exists.
async fn attempt_pod(pods: &Api<Pod>, run_id: &str, attempt: u64) -> Result<Option<String>, kube::Error> {
    let lp = ListParams::default().labels(&format!("{LABEL_RUN}={},{LABEL_ATTEMPT}={attempt}", label_value(run_id)));
    Ok(pods.list(&lp).await?.items.into_iter().next().map(|p| p.name_any()))
}

/// The log of a live attempt's worker, read from its pod now (for `isoflop logs` while the
/// attempt runs; the coordinator copies it to the log file when the attempt ends).
pub async fn live_pod_log(cfg: &KubernetesSpec, run_id: &str, attempt: u64) -> Result<Option<String>, KubeExecutorError> {
    let client = Client::try_default().await.map_err(|e| KubeExecutorError::Config(e.to_string()))?;
    let pods: Api<Pod> = Api::namespaced(client, &cfg.namespace);
    let Some(pod) = attempt_pod(&pods, run_id, attempt).await? else { return Ok(None) };
    Ok(Some(pods.logs(&pod, &LogParams { container: Some(CONTAINER.into()), ..LogParams::default() }).await?))
}

impl Shared {
    fn send(&self, event: ExecutorEvent) {
        let _ = self.events.send(event);
    }

    fn with<R>(&self, key: &Key, f: impl FnOnce(&mut Tracked) -> R) -> Option<R> {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner()).get_mut(key).map(f)
    }

    /// Marks the attempt done and reports how it ended, once.
    fn exited(&self, key: &Key, exit: ExitReport) {
        let first = self.with(key, |t| !std::mem::replace(&mut t.done, true)).unwrap_or(false);
        if first {
            info!(run_id = %key.0, attempt = key.1, class = ?exit.class, "attempt ended: {}", exit.describe());
            self.send(ExecutorEvent::Exited(exit));
            if let Some(me) = self.me() {
                tokio::spawn(me.save_log(key.clone()));
            }
        }
    }

    fn me(&self) -> Option<Arc<Shared>> {
        self.this.get().and_then(std::sync::Weak::upgrade)
    }

    /// Copies an ended attempt's pod log (through the API server's pods/log) to the attempt's
    /// log file, where `isoflop logs` reads it. A pod whose node is gone has no log to give.
    async fn save_log(self: Arc<Self>, key: Key) {
        let path = isoflop_coordinator::log_path(&self.artifacts, &key.0, key.1);
        let text = match self.pod_log(&key).await {
            Ok(Some(t)) => t,
            Ok(None) => "(no pod left to read the log from)\n".to_string(),
            Err(e) => format!("(the pod log could not be read: {e})\n"),
        };
        let write = async {
            if let Some(d) = path.parent() {
                tokio::fs::create_dir_all(d).await?;
            }
            tokio::fs::write(&path, text).await
        };
        if let Err(e) = write.await {
            warn!(path = %path.display(), "cannot write the attempt's log: {e}");
        }
    }

    /// The log of an attempt's worker container, if its pod still exists.
    async fn pod_log(&self, key: &Key) -> Result<Option<String>, kube::Error> {
        self.limiter.acquire().await;
        let Some(pod) = attempt_pod(&self.pods, &key.0, key.1).await? else { return Ok(None) };
        self.limiter.acquire().await;
        self.pods.logs(&pod, &LogParams { container: Some(CONTAINER.into()), ..LogParams::default() }).await.map(Some)
    }

    fn failure(key: &Key, code: Option<i32>, signal: Option<i32>, class: FailureClass, reason: String) -> ExitReport {
        ExitReport { run_id: key.0.clone(), attempt: key.1, code, signal, class: Some(class), reason: Some(reason) }
    }

    /// Creates the attempt's Secret and Job, retrying transient errors; a refusal fails the
    /// attempt as `user_error` (the spec asks for something the cluster will not run).
    async fn create(self: Arc<Self>, spec: LaunchSpec) {
        let key = (spec.run_id.clone(), spec.attempt);
        let a = AttemptRef { sweep: &spec.sweep, run_id: &spec.run_id, attempt: spec.attempt };
        let secret = secret_for(&a, &self.cfg, &spec.token);
        let job = job_for(&a, &self.cfg);
        let mut delay = Duration::from_millis(500);
        for attempt in 0.. {
            match self.try_create(&secret, &job).await {
                Ok(()) => return,
                Err(e) if is_transient(&e) && attempt < 8 => {
                    warn!(run_id = %spec.run_id, "creating the Job failed ({e}); retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    let class = if is_transient(&e) { FailureClass::Unknown } else { FailureClass::UserError };
                    self.exited(
                        &key,
                        Self::failure(&key, None, None, class, format!("cannot create Job {}: {e}", job.name_any())),
                    );
                    return;
                }
            }
        }
    }

    async fn try_create(&self, secret: &Secret, job: &Job) -> Result<(), kube::Error> {
        self.limiter.acquire().await;
        match self.secrets.create(&PostParams::default(), secret).await {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(e),
        }
        self.limiter.acquire().await;
        let created = match self.jobs.create(&PostParams::default(), job).await {
            Ok(j) => j,
            Err(e) if is_conflict(&e) => {
                self.limiter.acquire().await;
                self.jobs.get(&job.name_any()).await?
            }
            Err(e) => return Err(e),
        };
        // The Secret belongs to the Job: the garbage collector removes it with the Job.
        let owner = OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: created.name_any(),
            uid: created.uid().unwrap_or_default(),
            ..OwnerReference::default()
        };
        let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
        self.limiter.acquire().await;
        self.secrets.patch(&secret.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    /// Deletes an attempt's Job; `grace = Some(0)` kills its pod at once.
    async fn delete_job(self: Arc<Self>, name: String, grace: Option<u32>) {
        let mut dp = DeleteParams::background();
        if let Some(g) = grace {
            dp = dp.grace_period(g);
        }
        self.limiter.acquire().await;
        match self.jobs.delete(&name, &dp).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => warn!(job = %name, "cannot delete Job: {e}"),
        }
        if grace == Some(0) {
            let lp = ListParams::default().labels(&format!("job-name={name}"));
            self.limiter.acquire().await;
            if let Err(e) = self.pods.delete_collection(&dp, &lp).await {
                warn!(job = %name, "cannot delete pods: {e}");
            }
        }
    }

    fn on_job(&self, job: &Job, deleted: bool) {
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
                    tokio::spawn(me.settle_failed_job(key, job.name_any(), reason, deadline));
                }
            }
            _ => {}
        }
    }

    /// A Job failed and no pod event has said why yet: read its pod; no pod left means its
    /// node took it (or the deadline did, when the Job says so).
    async fn settle_failed_job(self: Arc<Self>, key: Key, job: String, reason: String, deadline: bool) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if self.with(&key, |t| t.done).unwrap_or(true) {
            return;
        }
        self.limiter.acquire().await;
        let pods = self.pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await;
        let verdict = pods.ok().and_then(|p| p.items.first().map(pod_verdict));
        let exit = match verdict {
            Some(PodVerdict::Failed { code, signal, class, reason }) => Self::failure(&key, code, signal, class, reason),
            _ if deadline => Self::failure(&key, None, None, FailureClass::UserError, reason),
            _ => Self::failure(&key, None, None, FailureClass::NodeLost, reason),
        };
        self.exited(&key, exit);
    }

    fn on_pod(&self, pod: &Pod, deleted: bool) {
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
}

/// Follows the objects of ours of one kind (a kube-runtime watcher: an initial list, then a
/// watch with bookmarks, re-listing with back-off after errors) and hands each to `on`, with
/// `true` when it was deleted.
async fn watch<K>(api: Api<K>, stop: CancellationToken, what: &'static str, on: impl Fn(&K, bool))
where
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
            Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => on(&o, false),
            Some(Ok(watcher::Event::Delete(o))) => on(&o, true),
            Some(Ok(_)) => {}
            Some(Err(e)) => warn!("{what} watch: {e}"),
            None => return,
        }
    }
}

/// Fails attempts whose pods have been stuck (bad image, missing Secret) past the grace
/// period as `user_error`, deleting their Jobs.
async fn check_stuck(shared: Arc<Shared>, stop: CancellationToken) {
    let grace = Duration::from_secs(shared.cfg.user_error_grace_seconds);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let expired: Vec<(Key, String, String)> = shared
            .tracked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, t)| !t.done && t.stuck.as_ref().is_some_and(|(since, _)| since.elapsed() >= grace))
            .map(|(k, t)| (k.clone(), t.job.clone(), t.stuck.as_ref().map(|s| s.1.clone()).unwrap_or_default()))
            .collect();
        for (key, job, why) in expired {
            let reason = format!("pod could not start for {} s: {why}", grace.as_secs());
            shared.exited(&key, Shared::failure(&key, None, None, FailureClass::UserError, reason));
            tokio::spawn(shared.clone().delete_job(job, Some(0)));
        }
    }
}

impl Executor for KubernetesExecutor {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn slots(&self) -> usize {
        self.shared.cfg.max_parallel as usize
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<String, ExecutorError> {
        let name = job_name(&spec.run_id, spec.attempt);
        let key = (spec.run_id.clone(), spec.attempt);
        self.shared
            .tracked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, Tracked { job: name.clone(), ..Tracked::default() });
        tokio::spawn(self.shared.clone().create(spec.clone()));
        Ok(name)
    }

    fn stop(&self, run_id: &str, attempt: u64) {
        let key = (run_id.to_string(), attempt);
        if let Some(job) = self.shared.with(&key, |t| {
            t.stopping = true;
            t.job.clone()
        }) {
            tokio::spawn(self.shared.clone().delete_job(job, None));
        }
    }

    fn kill(&self, run_id: &str, attempt: u64) {
        let key = (run_id.to_string(), attempt);
        let job = self
            .shared
            .with(&key, |t| {
                t.stopping = true;
                t.done = true;
                t.job.clone()
            })
            .unwrap_or_else(|| job_name(run_id, attempt));
        tokio::spawn(self.shared.clone().delete_job(job, Some(0)));
    }

    fn is_tracking(&self, run_id: &str, attempt: u64) -> bool {
        self.shared.with(&(run_id.to_string(), attempt), |t| !t.done).unwrap_or(false)
    }

    fn stop_orphan(&self, executor_ref: &str, _run_id: &str) {
        if !executor_ref.is_empty() {
            tokio::spawn(self.shared.clone().delete_job(executor_ref.to_string(), None));
        }
    }

    fn forget_run(&self, run_id: &str) {
        for t in self.shared.tracked.lock().unwrap_or_else(|p| p.into_inner()).iter_mut().filter(|(k, _)| k.0 == run_id) {
            t.1.stopping = true;
            t.1.done = true;
        }
        let shared = self.shared.clone();
        let lp = ListParams::default().labels(&format!("{LABEL_RUN}={}", label_value(run_id)));
        tokio::spawn(async move {
            shared.limiter.acquire().await;
            if let Err(e) = shared.jobs.delete_collection(&DeleteParams::background(), &lp).await {
                warn!("cannot delete the Jobs of a cancelled run: {e}");
            }
        });
    }

    fn survives_restart(&self) -> bool {
        true
    }
}
