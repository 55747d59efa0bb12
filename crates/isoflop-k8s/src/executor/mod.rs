//! The Kubernetes executor: one Job per attempt, watched (not polled) through the API server.
//!
//! * `launch` records the attempt and creates its Secret (the token) and Job in the
//!   background, rate-limited; names are deterministic, so a create retried after an error or
//!   by a restarted coordinator finds the existing object (409) instead of making a second.
//! * Two kube-runtime watchers (bookmarks on) follow the Jobs and Pods labelled as ours and
//!   turn their status into [`ExecutorEvent`]s ([`events`]): `Blocked` with the scheduler's
//!   message while a pod is unschedulable (or Kueue holds the Job suspended), `Placed` when it
//!   is bound, and `Exited` with a failure class when the pod or Job ends ([`crate::status`]).
//! * `stop` deletes the Job (its pod gets SIGTERM and checkpoints), `kill` deletes it with no
//!   grace, `forget_runs` deletes every Job and Secret of cancelled runs: the one place a run's
//!   cluster objects are deleted ([`objects`]).
//! * [`KubernetesExecutor::connect`] lists the Jobs already there first, so a restarted
//!   coordinator adopts running attempts instead of requeueing them, and the workers' reports
//!   keep arriving. On shutdown the Jobs are left running ([`Executor::survives_restart`]).
//!   [`KubernetesExecutor::for_control`] is the same executor without watchers or adoption,
//!   for a short-lived command (`isoflop cancel`, `isoflop logs`) that acts on the cluster.
//! * Every background task (creates, deletes, log copies, watchers) is tracked;
//!   [`Executor::shutdown`] stops the watchers and waits for the rest.

mod events;
mod objects;
#[cfg(test)]
mod tests;

use crate::api::{ApiCalls, CountLayer, Limiter};
use crate::manifest::{LABEL_ATTEMPT, LABEL_RUN, RUN_ID_ANNOTATION, job_name};
use crate::status::{JobVerdict, job_verdict};
use isoflop_coordinator::executor::{Executor, ExecutorError, ExecutorEvent, LaunchSpec, Orphan};
use isoflop_core::kubernetes::KubernetesSpec;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams};
use kube::{Client, Config, ResourceExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Label every object of ours carries; the watchers and adoption select on it.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=isoflop-coordinator";

/// How long [`Executor::shutdown`] waits for background work before giving up on it.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

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
    /// The run's directory under the artifacts root (from the launch, or from the Job's
    /// annotation when adopted); its attempt log is copied there.
    artifacts_key: Option<String>,
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
    config_maps: Api<ConfigMap>,
    limiter: Limiter,
    tracked: Mutex<HashMap<Key, Tracked>>,
    events: UnboundedSender<ExecutorEvent>,
    /// Every background task; joined by [`Executor::shutdown`].
    tasks: TaskTracker,
    /// Stops the watchers and the stuck-pod check.
    stop: CancellationToken,
    /// What every Job names as its owner (`owner_config_map`), once its UID is known.
    owner: std::sync::OnceLock<OwnerReference>,
    /// Each watcher's state, by kind: `None` until its first list is done, then the error of
    /// its last attempt, if it failed ([`Executor::readiness`]).
    watching: Mutex<HashMap<&'static str, Option<Result<(), String>>>>,
}

/// The `kubernetes` executor.
pub struct KubernetesExecutor {
    shared: Arc<Shared>,
    calls: ApiCalls,
}

impl std::fmt::Debug for KubernetesExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesExecutor").field("namespace", &self.shared.cfg.namespace).finish()
    }
}

impl Drop for KubernetesExecutor {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

fn run_of(meta: &kube::api::ObjectMeta) -> Option<Key> {
    let labels = meta.labels.as_ref()?;
    let attempt = labels.get(LABEL_ATTEMPT)?.parse().ok()?;
    let run = meta.annotations.as_ref().and_then(|a| a.get(RUN_ID_ANNOTATION)).or_else(|| labels.get(LABEL_RUN))?;
    Some((run.clone(), attempt))
}

async fn infer() -> Result<Config, KubeExecutorError> {
    Config::infer().await.map_err(|e| KubeExecutorError::Config(e.to_string()))
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
        Self::with_config(infer().await?, cfg, artifacts, events).await
    }

    /// As [`KubernetesExecutor::connect`], with an explicit client configuration.
    pub async fn with_config(
        config: Config,
        cfg: KubernetesSpec,
        artifacts: PathBuf,
        events: UnboundedSender<ExecutorEvent>,
    ) -> Result<Self, KubeExecutorError> {
        let exec = Self::build(config, cfg, artifacts, events)?;
        exec.resolve_owner().await?;
        exec.adopt().await?;
        exec.shared.start_watching();
        Ok(exec)
    }

    /// The executor for a command that acts on the cluster once (`isoflop cancel` deletes a
    /// run's Jobs, `isoflop logs` reads a running attempt's pod log): the same client, rate
    /// limit and call counts, without adopting Jobs or watching (it reports no events).
    pub async fn for_control(cfg: KubernetesSpec, artifacts: PathBuf) -> Result<Self, KubeExecutorError> {
        let (events, _) = tokio::sync::mpsc::unbounded_channel();
        Self::build(infer().await?, cfg, artifacts, events)
    }

    fn build(
        config: Config,
        cfg: KubernetesSpec,
        artifacts: PathBuf,
        events: UnboundedSender<ExecutorEvent>,
    ) -> Result<Self, KubeExecutorError> {
        let calls = ApiCalls::default();
        let builder = kube::client::ClientBuilder::try_from(config).map_err(|e| KubeExecutorError::Config(e.to_string()))?;
        let client: Client = builder.with_layer(&CountLayer(calls.clone())).build();
        Ok(Self::with_client(client, cfg, artifacts, events, calls))
    }

    /// An executor over a client, not adopting or watching yet.
    fn with_client(
        client: Client,
        cfg: KubernetesSpec,
        artifacts: PathBuf,
        events: UnboundedSender<ExecutorEvent>,
        calls: ApiCalls,
    ) -> Self {
        let ns = cfg.namespace.clone();
        let shared = Arc::new(Shared {
            this: std::sync::OnceLock::new(),
            limiter: Limiter::new(cfg.qps, cfg.burst),
            jobs: Api::namespaced(client.clone(), &ns),
            pods: Api::namespaced(client.clone(), &ns),
            secrets: Api::namespaced(client.clone(), &ns),
            config_maps: Api::namespaced(client, &ns),
            cfg,
            artifacts,
            tracked: Mutex::default(),
            events,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            owner: std::sync::OnceLock::new(),
            watching: Mutex::new(HashMap::from([("Job", None), ("Pod", None)])),
        });
        // Set once, just after construction: it cannot have been set already.
        let _ = shared.this.set(Arc::downgrade(&shared));
        KubernetesExecutor { shared, calls }
    }

    /// Reads the UID of `owner_config_map`, which every Job then names as its owner (so that
    /// deleting the ConfigMap, as `helm uninstall` does, deletes the Jobs, their pods and
    /// Secrets). A missing ConfigMap is a configuration error: the coordinator does not start.
    async fn resolve_owner(&self) -> Result<(), KubeExecutorError> {
        let Some(name) = self.shared.cfg.owner_config_map.clone() else { return Ok(()) };
        self.shared.limiter.acquire().await;
        let map = self.shared.config_maps.get_opt(&name).await?.ok_or_else(|| {
            KubeExecutorError::Config(format!(
                "executor.owner_config_map: ConfigMap {name} not found in namespace {}",
                self.shared.cfg.namespace
            ))
        })?;
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name,
            uid: map.uid().unwrap_or_default(),
            ..OwnerReference::default()
        };
        let _ = self.shared.owner.set(owner);
        Ok(())
    }

    /// Adopts what an earlier coordinator started: every Job of ours (finished ones as done).
    async fn adopt(&self) -> Result<(), KubeExecutorError> {
        let shared = &self.shared;
        shared.limiter.acquire().await;
        let existing = shared.jobs.list(&ListParams::default().labels(MANAGED_SELECTOR)).await?;
        let mut t = shared.lock();
        for job in existing.items {
            let Some(key) = run_of(&job.metadata) else { continue };
            let done = matches!(job_verdict(&job), JobVerdict::Complete | JobVerdict::Failed { .. })
                || job.metadata.deletion_timestamp.is_some();
            let artifacts_key =
                job.metadata.annotations.as_ref().and_then(|a| a.get(crate::manifest::ARTIFACTS_KEY_ANNOTATION)).cloned();
            t.insert(key, Tracked { job: job.name_any(), done, artifacts_key, ..Tracked::default() });
        }
        let live = t.values().filter(|x| !x.done).count();
        if !t.is_empty() {
            info!(jobs = t.len(), live, "adopted Kubernetes Jobs of an earlier coordinator");
        }
        Ok(())
    }

    /// HTTP requests this executor's client has sent, by kind.
    pub fn api_calls(&self) -> &ApiCalls {
        &self.calls
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Tracked>> {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<R>(&self, key: &Key, f: impl FnOnce(&mut Tracked) -> R) -> Option<R> {
        self.lock().get_mut(key).map(f)
    }

    fn me(&self) -> Option<Arc<Shared>> {
        self.this.get().and_then(std::sync::Weak::upgrade)
    }

    /// Runs `work` as a tracked background task (joined by [`Executor::shutdown`]).
    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(work);
    }
}

#[async_trait::async_trait]
impl Executor for KubernetesExecutor {
    fn slots(&self) -> usize {
        self.shared.cfg.max_parallel as usize
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<String, ExecutorError> {
        let name = job_name(&spec.run_id, spec.attempt);
        let key = (spec.run_id.clone(), spec.attempt);
        let artifacts_key = Some(spec.artifacts_key.clone());
        self.shared.lock().insert(key, Tracked { job: name.clone(), artifacts_key, ..Tracked::default() });
        self.shared.spawn(self.shared.clone().create(spec.clone()));
        Ok(name)
    }

    fn stop(&self, run_id: &str, attempt: u64) {
        let key = (run_id.to_string(), attempt);
        if let Some(job) = self.shared.with(&key, |t| {
            t.stopping = true;
            t.job.clone()
        }) {
            self.shared.spawn(self.shared.clone().delete_job(job, None));
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
        self.shared.spawn(self.shared.clone().delete_job(job, Some(0)));
    }

    fn is_tracking(&self, run_id: &str, attempt: u64) -> bool {
        self.shared.with(&(run_id.to_string(), attempt), |t| !t.done).unwrap_or(false)
    }

    /// Deletes the Job; one whose name was never recorded (the coordinator died between
    /// creating it and storing its name) has the name launch gives every Job.
    fn stop_orphan(&self, orphan: &Orphan<'_>) {
        let job = match orphan.executor_ref {
            "" => job_name(orphan.run_id, orphan.attempt),
            name => name.to_string(),
        };
        self.shared.spawn(self.shared.clone().delete_job(job, None));
    }

    fn forget_runs(&self, run_ids: &[String]) {
        for (k, t) in self.shared.lock().iter_mut() {
            if run_ids.contains(&k.0) {
                t.stopping = true;
                t.done = true;
            }
        }
        self.shared.spawn(self.shared.clone().delete_runs(run_ids.to_vec()));
    }

    fn survives_restart(&self) -> bool {
        true
    }

    fn readiness(&self) -> Result<(), String> {
        let watching = self.shared.watching.lock().unwrap_or_else(|p| p.into_inner());
        for (kind, state) in watching.iter() {
            match state {
                None => return Err(format!("the {kind} watcher has not listed yet")),
                Some(Err(e)) => return Err(format!("the {kind} watcher: {e}")),
                Some(Ok(())) => {}
            }
        }
        Ok(())
    }

    async fn live_log(&self, run_id: &str, attempt: u64) -> Result<Option<String>, ExecutorError> {
        self.shared.pod_log(&(run_id.to_string(), attempt)).await.map_err(|e| ExecutorError::Cluster(e.to_string()))
    }

    async fn shutdown(&self) {
        self.shared.stop.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(SHUTDOWN_WAIT, self.shared.tasks.wait()).await.is_err() {
            warn!(left = self.shared.tasks.len(), "Kubernetes requests still running after {SHUTDOWN_WAIT:?}; leaving them");
        }
    }
}
