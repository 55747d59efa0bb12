//! The executor's writes and reads of cluster objects: creating an attempt's Secret and Job,
//! deleting Jobs (one, or every Job of cancelled runs), and reading pod logs. Every request
//! waits for the rate limiter.

use super::{Key, MANAGED_SELECTOR, Shared};
use crate::manifest::{AttemptRef, CONTAINER, LABEL_ATTEMPT, LABEL_RUN, job_for, label_value, secret_for};
use isoflop_coordinator::executor::LaunchSpec;
use isoflop_core::FailureClass;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Runs per `delete_collection` of cancelled runs (a label selector `run in (...)`).
const RUNS_PER_DELETE: usize = 50;

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

/// The name of an attempt's pod, if it exists.
async fn attempt_pod(pods: &Api<Pod>, run_id: &str, attempt: u64) -> Result<Option<String>, kube::Error> {
    let lp = ListParams::default().labels(&format!("{LABEL_RUN}={},{LABEL_ATTEMPT}={attempt}", label_value(run_id)));
    Ok(pods.list(&lp).await?.items.into_iter().next().map(|p| p.name_any()))
}

impl Shared {
    /// Copies an ended attempt's pod log (through the API server's pods/log) to the attempt's
    /// log file, where `isoflop logs` reads it. A pod whose node is gone has no log to give.
    pub(super) async fn save_log(self: Arc<Self>, key: Key) {
        let dir = self.with(&key, |t| t.artifacts_key.clone()).flatten().unwrap_or_else(|| key.0.clone());
        let path = isoflop_coordinator::log_path(&self.artifacts, &dir, key.1);
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
    pub(super) async fn pod_log(&self, key: &Key) -> Result<Option<String>, kube::Error> {
        self.limiter.acquire().await;
        let Some(pod) = attempt_pod(&self.pods, &key.0, key.1).await? else { return Ok(None) };
        self.limiter.acquire().await;
        self.pods.logs(&pod, &LogParams { container: Some(CONTAINER.into()), ..LogParams::default() }).await.map(Some)
    }

    /// Creates the attempt's Secret and Job, retrying transient errors; a refusal fails the
    /// attempt as `user_error` (the spec asks for something the cluster will not run).
    pub(super) async fn create(self: Arc<Self>, spec: LaunchSpec) {
        let key = (spec.run_id.clone(), spec.attempt);
        let a = AttemptRef {
            sweep: &spec.sweep,
            run_id: &spec.run_id,
            attempt: spec.attempt,
            artifacts_key: &spec.artifacts_key,
            eval: spec.eval,
        };
        let mut secret = secret_for(&a, &self.cfg, &spec.token);
        let mut job = job_for(&a, &self.cfg);
        if let Some(owner) = self.owner.get() {
            job.metadata.owner_references = Some(vec![owner.clone()]);
            // Until the Job exists and becomes its owner (the patch below replaces the list),
            // the Secret is the ConfigMap's too: one left by a create that failed between the
            // two (the Role gone mid-uninstall, the coordinator killed) is collected with it.
            secret.metadata.owner_references = Some(vec![owner.clone()]);
        }
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
    pub(super) async fn delete_job(self: Arc<Self>, name: String, grace: Option<u32>) {
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

    /// Deletes every Job (their pods go with them) and Secret of cancelled runs, finished or
    /// not: one `delete_collection` of each kind per [`RUNS_PER_DELETE`] runs.
    pub(super) async fn delete_runs(self: Arc<Self>, run_ids: Vec<String>) {
        for chunk in run_ids.chunks(RUNS_PER_DELETE) {
            let values: Vec<String> = chunk.iter().map(|r| label_value(r)).collect();
            let lp = ListParams::default().labels(&format!("{MANAGED_SELECTOR},{LABEL_RUN} in ({})", values.join(",")));
            self.limiter.acquire().await;
            if let Err(e) = self.jobs.delete_collection(&DeleteParams::background(), &lp).await {
                warn!(runs = chunk.len(), "cannot delete the Jobs of cancelled runs: {e}");
            }
            self.limiter.acquire().await;
            if let Err(e) = self.secrets.delete_collection(&DeleteParams::background(), &lp).await {
                warn!(runs = chunk.len(), "cannot delete the Secrets of cancelled runs: {e}");
            }
        }
    }
}
