//! Pure functions from an attempt and the executor settings to Kubernetes objects.

use isoflop_core::kubernetes::{KubernetesSpec, SHM_PATH};
use isoflop_proto::env::{ATTEMPT as ENV_ATTEMPT, COORDINATOR as ENV_COORDINATOR, RUN_ID as ENV_RUN_ID, TOKEN as ENV_TOKEN};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
    PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    ResourceRequirements, Secret, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Label of the sweep an attempt belongs to.
pub const LABEL_SWEEP: &str = "isoflop.dev/sweep";
/// Label of the run.
pub const LABEL_RUN: &str = "isoflop.dev/run";
/// Label of the attempt number.
pub const LABEL_ATTEMPT: &str = "isoflop.dev/attempt";
/// Annotation with the exact run id (labels hold it too when it is a valid label value).
pub const RUN_ID_ANNOTATION: &str = "isoflop.dev/run-id";
/// Annotation with the directory of the run's files under the artifacts root (where its
/// attempt logs are copied; not the run id for a run re-keyed by a migration).
pub const ARTIFACTS_KEY_ANNOTATION: &str = "isoflop.dev/artifacts-key";
/// Label saying what the pod does: `train` or `eval`.
pub const LABEL_KIND: &str = "isoflop.dev/kind";
/// Kueue's queue-name label.
pub const LABEL_KUEUE_QUEUE: &str = "kueue.x-k8s.io/queue-name";
/// Key of the token in an attempt's Secret.
pub const TOKEN_KEY: &str = "token";
/// Name of the worker container.
pub const CONTAINER: &str = "worker";
/// Name of the memory-backed volume at `/dev/shm` (`shm_size`).
pub const SHM_VOLUME: &str = "dshm";

/// The attempt a Job is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptRef<'a> {
    pub sweep: &'a str,
    pub run_id: &'a str,
    pub attempt: u64,
    /// The run's directory under the artifacts root.
    pub artifacts_key: &'a str,
    /// An evaluation job (its pod gets `eval_resources`).
    pub eval: bool,
}

/// The deterministic name of an attempt's Job (and of its Secret).
pub fn job_name(run_id: &str, attempt: u64) -> String {
    format!("isoflop-{run_id}-a{attempt}")
}

/// A valid label value: `s` itself when it is one, else a stable hash of it.
pub fn label_value(s: &str) -> String {
    let ok = s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric());
    if ok { s.to_string() } else { format!("h-{}", &hex::encode(Sha256::digest(s.as_bytes()))[..32]) }
}

/// Labels of everything made for an attempt; a restarted coordinator finds its Jobs by them.
pub fn labels(a: &AttemptRef<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "isoflop".to_string()),
        ("app.kubernetes.io/component".to_string(), "worker".to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "isoflop-coordinator".to_string()),
        (LABEL_SWEEP.to_string(), label_value(a.sweep)),
        (LABEL_RUN.to_string(), label_value(a.run_id)),
        (LABEL_ATTEMPT.to_string(), a.attempt.to_string()),
        (LABEL_KIND.to_string(), if a.eval { "eval" } else { "train" }.to_string()),
    ])
}

fn meta(a: &AttemptRef<'_>, cfg: &KubernetesSpec) -> ObjectMeta {
    ObjectMeta {
        name: Some(job_name(a.run_id, a.attempt)),
        namespace: Some(cfg.namespace.clone()),
        labels: Some(labels(a)),
        annotations: Some(BTreeMap::from([
            (RUN_ID_ANNOTATION.to_string(), a.run_id.to_string()),
            (ARTIFACTS_KEY_ANNOTATION.to_string(), a.artifacts_key.to_string()),
        ])),
        ..ObjectMeta::default()
    }
}

/// The Secret holding an attempt's bearer token (same name as its Job).
pub fn secret_for(a: &AttemptRef<'_>, cfg: &KubernetesSpec, token: &str) -> Secret {
    Secret {
        metadata: meta(a, cfg),
        string_data: Some(BTreeMap::from([(TOKEN_KEY.to_string(), token.to_string())])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

/// The batch/v1 Job of an attempt: one pod running `isoflop worker`, never retried by
/// Kubernetes (`backoffLimit: 0`; the coordinator owns retries), with a pod failure policy that
/// fails the Job at once on a disruption or a non-zero exit so the reason surfaces quickly.
pub fn job_for(a: &AttemptRef<'_>, cfg: &KubernetesSpec) -> Job {
    let name = job_name(a.run_id, a.attempt);
    let mut metadata = meta(a, cfg);
    if let Some(q) = &cfg.kueue_queue {
        metadata.labels.get_or_insert_with(BTreeMap::new).insert(LABEL_KUEUE_QUEUE.into(), q.clone());
    }
    let mut limits = BTreeMap::new();
    let (gpus, cpu, memory) = cfg.resources(a.eval);
    if gpus > 0 {
        limits.insert(cfg.gpu_resource.clone(), Quantity(gpus.to_string()));
    }
    if let Some(c) = cpu {
        limits.insert("cpu".to_string(), Quantity(c));
    }
    if let Some(m) = memory {
        limits.insert("memory".to_string(), Quantity(m));
    }
    let resources = (!limits.is_empty()).then(|| ResourceRequirements {
        requests: Some(limits.clone()),
        limits: Some(limits),
        ..ResourceRequirements::default()
    });
    let container = Container {
        name: CONTAINER.into(),
        image: Some(cfg.image.clone()),
        image_pull_policy: Some(cfg.image_pull_policy.clone()),
        command: Some(vec!["isoflop".into(), "worker".into()]),
        env: Some(vec![
            env(ENV_COORDINATOR, &cfg.coordinator_url),
            env(ENV_RUN_ID, a.run_id),
            env(ENV_ATTEMPT, a.attempt.to_string()),
            EnvVar {
                name: ENV_TOKEN.into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector { name: name.clone(), key: TOKEN_KEY.into(), optional: Some(false) }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
        ]),
        resources,
        volume_mounts: (!cfg.volumes.is_empty() || cfg.shm_size.is_some()).then(|| {
            let mut mounts: Vec<VolumeMount> = cfg
                .volumes
                .iter()
                .map(|v| VolumeMount {
                    name: v.name.clone(),
                    mount_path: v.mount_path.clone(),
                    read_only: Some(v.read_only),
                    sub_path: v.sub_path.clone(),
                    ..VolumeMount::default()
                })
                .collect();
            if cfg.shm_size.is_some() {
                mounts.push(VolumeMount { name: SHM_VOLUME.into(), mount_path: SHM_PATH.into(), ..VolumeMount::default() });
            }
            mounts
        }),
        security_context: Some(SecurityContext { allow_privilege_escalation: Some(false), ..SecurityContext::default() }),
        ..Container::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        // Workers talk to the coordinator, never to the API server.
        automount_service_account_token: Some(false),
        containers: vec![container],
        node_selector: (!cfg.node_selector.is_empty()).then(|| cfg.node_selector.clone()),
        tolerations: (!cfg.tolerations.is_empty()).then(|| cfg.tolerations.clone()),
        affinity: cfg.affinity.clone(),
        priority_class_name: cfg.priority_class.clone(),
        service_account_name: cfg.service_account.clone(),
        volumes: (!cfg.volumes.is_empty() || cfg.shm_size.is_some()).then(|| {
            let mut volumes: Vec<Volume> = cfg
                .volumes
                .iter()
                .map(|v| Volume {
                    name: v.name.clone(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: v.claim.clone(),
                        read_only: Some(v.read_only),
                    }),
                    ..Volume::default()
                })
                .collect();
            if let Some(size) = &cfg.shm_size {
                volumes.push(Volume {
                    name: SHM_VOLUME.into(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: Some("Memory".into()),
                        size_limit: Some(Quantity(size.clone())),
                        ..EmptyDirVolumeSource::default()
                    }),
                    ..Volume::default()
                });
            }
            volumes
        }),
        ..PodSpec::default()
    };
    let fail = |rule: PodFailurePolicyRule| PodFailurePolicyRule { action: "FailJob".into(), ..rule };
    Job {
        metadata: metadata.clone(),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            completions: Some(1),
            parallelism: Some(1),
            suspend: cfg.kueue_queue.as_ref().map(|_| true),
            ttl_seconds_after_finished: Some(cfg.ttl_seconds_after_finished),
            active_deadline_seconds: cfg.active_deadline_seconds,
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    fail(PodFailurePolicyRule {
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".into(),
                            status: Some("True".into()),
                        }]),
                        ..PodFailurePolicyRule::default()
                    }),
                    fail(PodFailurePolicyRule {
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some(CONTAINER.into()),
                            operator: "NotIn".into(),
                            values: vec![0],
                        }),
                        ..PodFailurePolicyRule::default()
                    }),
                ],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: metadata.labels.clone(),
                    annotations: metadata.annotations.clone(),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> KubernetesSpec {
        let mut c: KubernetesSpec = serde_yaml::from_str(isoflop_core::kubernetes::EXAMPLE_YAML).unwrap();
        c.gpus_per_run = 2;
        c
    }

    const A: AttemptRef<'static> = AttemptRef {
        sweep: "marin-2025",
        run_id: "9d8df6557f84421f",
        attempt: 3,
        artifacts_key: "9d8df6557f84421f",
        eval: false,
    };

    #[test]
    fn names_and_labels_are_deterministic() {
        let j1 = job_for(&A, &cfg());
        let j2 = job_for(&A, &cfg());
        assert_eq!(j1, j2);
        assert_eq!(j1.metadata.name.as_deref(), Some("isoflop-9d8df6557f84421f-a3"));
        assert_eq!(j1.metadata.namespace.as_deref(), Some("isoflop"));
        let l = j1.metadata.labels.as_ref().unwrap();
        assert_eq!(l[LABEL_SWEEP], "marin-2025");
        assert_eq!(l[LABEL_RUN], "9d8df6557f84421f");
        assert_eq!(l[LABEL_ATTEMPT], "3");
        assert_eq!(l["app.kubernetes.io/name"], "isoflop");
        assert_eq!(l[LABEL_KUEUE_QUEUE], "gpu-queue");
        let tl = j1.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(tl[LABEL_RUN], "9d8df6557f84421f", "pods carry the labels too");
        assert_eq!(label_value("ok.name_1"), "ok.name_1");
        let long = "x".repeat(80);
        assert!(label_value(&long).starts_with("h-") && label_value(&long).len() <= 63);
        assert_eq!(label_value(&long), label_value(&long));
    }

    #[test]
    fn job_spec_leaves_retries_to_the_coordinator() {
        let j = job_for(&A, &cfg());
        let s = j.spec.unwrap();
        assert_eq!(
            (s.backoff_limit, s.suspend, s.ttl_seconds_after_finished, s.active_deadline_seconds),
            (Some(0), Some(true), Some(3600), Some(86400))
        );
        let rules = s.pod_failure_policy.unwrap().rules;
        assert!(rules.iter().all(|r| r.action == "FailJob"));
        assert_eq!(rules[0].on_pod_conditions.as_ref().unwrap()[0].type_, "DisruptionTarget");
        assert_eq!(rules[1].on_exit_codes.as_ref().unwrap().values, vec![0]);
        let pod = s.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.service_account_name.as_deref(), Some("isoflop-worker"));
        assert_eq!(pod.priority_class_name.as_deref(), Some("research"));
        assert_eq!(pod.node_selector.unwrap()["nvidia.com/gpu.product"], "NVIDIA-H100-80GB-HBM3");
        assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("nvidia.com/gpu"));
    }

    #[test]
    fn container_env_resources_and_volumes() {
        let pod = job_for(&A, &cfg()).spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.command.as_ref().unwrap(), &["isoflop", "worker"]);
        let env = c.env.as_ref().unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).unwrap();
        assert_eq!(get(ENV_COORDINATOR).value.as_deref(), Some("http://isoflop-coordinator.isoflop.svc:7700"));
        assert_eq!(get(ENV_RUN_ID).value.as_deref(), Some("9d8df6557f84421f"));
        assert_eq!(get(ENV_ATTEMPT).value.as_deref(), Some("3"));
        let token = get(ENV_TOKEN);
        assert!(token.value.is_none(), "the token never appears in the Job");
        let sel = token.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("isoflop-9d8df6557f84421f-a3", TOKEN_KEY));
        let r = c.resources.as_ref().unwrap();
        let limits = r.limits.as_ref().unwrap();
        assert_eq!(limits["nvidia.com/gpu"], Quantity("2".into()));
        assert_eq!(limits["memory"], Quantity("64Gi".into()));
        assert_eq!(r.requests, r.limits);
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert_eq!((mounts[0].mount_path.as_str(), mounts[0].read_only), ("/data", Some(true)));
        let vols = pod.volumes.unwrap();
        assert_eq!(vols[1].persistent_volume_claim.as_ref().unwrap().claim_name, "isoflop-ckpt");
        // shm_size: a memory-backed /dev/shm of that size.
        let shm = mounts.iter().find(|m| m.mount_path == SHM_PATH).unwrap();
        let v = vols.iter().find(|v| v.name == shm.name).unwrap().empty_dir.clone().unwrap();
        assert_eq!((v.medium.as_deref(), v.size_limit), (Some("Memory"), Some(Quantity("8Gi".into()))));
        assert_eq!(c.security_context.as_ref().unwrap().allow_privilege_escalation, Some(false));
    }

    #[test]
    fn evaluation_pods_ask_for_their_own_resources_and_logs_go_by_artifacts_key() {
        use isoflop_core::kubernetes::PodResources;
        let mut c = cfg();
        c.eval_resources = Some(PodResources { gpus_per_run: Some(0), cpu: Some("2".into()), memory: None });
        let eval = AttemptRef { eval: true, artifacts_key: "0123456789abcdef", ..A };
        let j = job_for(&eval, &c);
        assert_eq!(j.metadata.labels.as_ref().unwrap()[LABEL_KIND], "eval");
        assert_eq!(j.metadata.annotations.as_ref().unwrap()[ARTIFACTS_KEY_ANNOTATION], "0123456789abcdef");
        let pod = j.spec.unwrap().template.spec.unwrap();
        let limits = pod.containers[0].resources.as_ref().unwrap().limits.clone().unwrap();
        assert!(!limits.contains_key("nvidia.com/gpu"), "no GPU for the evaluation: {limits:?}");
        assert_eq!((limits["cpu"].0.as_str(), limits["memory"].0.as_str()), ("2", "64Gi"), "memory falls back to training's");
        // Training pods keep theirs.
        let t = job_for(&A, &c);
        assert_eq!(t.metadata.labels.as_ref().unwrap()[LABEL_KIND], "train");
        let limits = t.spec.unwrap().template.spec.unwrap().containers[0].resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits["nvidia.com/gpu"], Quantity("2".into()));
        // A bad quantity is refused, naming the key.
        c.eval_resources = Some(PodResources { memory: Some("lots".into()), ..PodResources::default() });
        assert_eq!(c.validate().unwrap_err().key, "eval_resources.memory");
    }

    #[test]
    fn cpu_only_without_kueue_has_no_gpu_or_suspend() {
        let mut c = cfg();
        c.gpus_per_run = 0;
        c.kueue_queue = None;
        c.cpu = None;
        c.memory = None;
        let j = job_for(&A, &c);
        assert!(!j.metadata.labels.as_ref().unwrap().contains_key(LABEL_KUEUE_QUEUE));
        let s = j.spec.unwrap();
        assert_eq!(s.suspend, None);
        assert!(s.template.spec.unwrap().containers[0].resources.is_none());
    }

    #[test]
    fn secret_carries_the_token_under_the_job_name() {
        let s = secret_for(&A, &cfg(), "t0ken");
        assert_eq!(s.metadata.name.as_deref(), Some("isoflop-9d8df6557f84421f-a3"));
        assert_eq!(s.string_data.unwrap()[TOKEN_KEY], "t0ken");
        let json = serde_json::to_value(job_for(&A, &cfg())).unwrap();
        assert_eq!(json["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"]["operator"], "NotIn", "serialises in API casing");
    }
}
