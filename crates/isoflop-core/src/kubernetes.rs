//! The `executor: {kind: kubernetes, ...}` section of a sweep spec: where and how attempts run
//! as Kubernetes Jobs. The Job itself is built by `isoflop-k8s`; this is only the settings and
//! their validation, so the spec can be checked before anything talks to a cluster.

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where and how attempts run as Kubernetes Jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// Jobs in flight at once (the cluster queues beyond its capacity; runs it cannot place
    /// show as `blocked`).
    #[serde(default = "default_max_parallel")]
    pub max_parallel: u64,
    /// Counted retries per run (preemptions and lost nodes are not counted).
    #[serde(default = "default_retries")]
    pub max_retries: u64,
    /// A worker that does not report for this long is presumed lost.
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
    /// Time a placed pod gets to pull its image and start its worker before its lease counts.
    #[serde(default = "default_start_grace")]
    pub start_grace_seconds: u64,
    /// How long a pod may sit in ImagePullBackOff, ErrImagePull or CreateContainerConfigError
    /// before the attempt fails as `user_error`.
    #[serde(default = "default_user_error_grace")]
    pub user_error_grace_seconds: u64,
    /// CPU threads each worker uses.
    #[serde(default = "default_threads")]
    pub threads_per_run: u64,
    /// Namespace of the Jobs, Pods and Secrets (the coordinator's RBAC is scoped to it).
    pub namespace: String,
    /// Worker image (it runs `isoflop worker`).
    pub image: String,
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: String,
    /// How workers reach the coordinator's worker API (a Service address), e.g.
    /// `http://isoflop-coordinator.isoflop.svc:7700`.
    pub coordinator_url: String,
    /// Address the coordinator's gRPC server binds (workers reach it at `coordinator_url`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// GPUs per attempt (0: CPU-only workers).
    #[serde(default)]
    pub gpus_per_run: u32,
    /// Extended resource name of a GPU.
    #[serde(default = "default_gpu_resource")]
    pub gpu_resource: String,
    /// CPU request and limit (a Kubernetes quantity such as `8` or `7500m`).
    #[serde(default)]
    pub cpu: Option<String>,
    /// Memory request and limit (a quantity such as `64Gi`).
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub affinity: Option<Affinity>,
    #[serde(default)]
    pub priority_class: Option<String>,
    #[serde(default)]
    pub service_account: Option<String>,
    /// Persistent volume claims mounted into workers (token shards, checkpoints).
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// What an evaluation job's pod asks for instead (each field absent: training's). An
    /// evaluation reads one checkpoint and scores it, and may want less than a training pod.
    #[serde(default)]
    pub eval_resources: Option<PodResources>,
    /// Size of a memory-backed `/dev/shm` in every worker (a quantity such as `8Gi`; absent:
    /// the container runtime's default, often 64Mi).
    #[serde(default)]
    pub shm_size: Option<String>,
    /// A ConfigMap of the namespace that owns every Job (and so their pods and Secrets):
    /// deleting it deletes them. The Helm chart names its serve config, so `helm uninstall`
    /// leaves no Job behind. The coordinator reads its UID once at start (`get` on that one
    /// ConfigMap).
    #[serde(default)]
    pub owner_config_map: Option<String>,
    /// Kueue LocalQueue: Jobs are created suspended with the queue-name label.
    #[serde(default)]
    pub kueue_queue: Option<String>,
    /// Finished Jobs are deleted by Kubernetes after this long.
    #[serde(default = "default_ttl")]
    pub ttl_seconds_after_finished: i32,
    /// Optional hard limit on an attempt's run time.
    #[serde(default)]
    pub active_deadline_seconds: Option<i64>,
    /// Client-side rate limit of API calls.
    #[serde(default = "default_qps")]
    pub qps: f32,
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_max_parallel() -> u64 {
    64
}
fn default_retries() -> u64 {
    3
}
fn default_lease() -> u64 {
    60
}
fn default_start_grace() -> u64 {
    600
}
fn default_user_error_grace() -> u64 {
    120
}
fn default_threads() -> u64 {
    8
}
fn default_listen() -> String {
    "0.0.0.0:7700".into()
}
fn default_pull_policy() -> String {
    "IfNotPresent".into()
}
fn default_gpu_resource() -> String {
    "nvidia.com/gpu".into()
}
fn default_ttl() -> i32 {
    3600
}
fn default_qps() -> f32 {
    5.0
}
fn default_burst() -> u32 {
    10
}

/// Resource requests and limits of a pod (each absent: the training pod's setting).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodResources {
    #[serde(default)]
    pub gpus_per_run: Option<u32>,
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
}

/// A persistent volume claim mounted into every worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Volume name in the pod (a DNS-1123 label).
    pub name: String,
    /// The existing PersistentVolumeClaim.
    pub claim: String,
    /// Absolute mount path in the worker container.
    pub mount_path: String,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub sub_path: Option<String>,
}

/// A setting that cannot be used, with its key path (relative to `executor`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("executor.{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

/// Whether `s` is a DNS-1123 label (lowercase alphanumerics and `-`, at most 63 characters,
/// starting and ending alphanumeric).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Where [`KubernetesSpec::shm_size`] mounts its memory-backed volume.
pub const SHM_PATH: &str = "/dev/shm";

/// Whether `s` is a DNS-1123 subdomain (the name of most objects): dot-separated labels, at
/// most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Whether `s` looks like a Kubernetes quantity (`8`, `500m`, `64Gi`, `1.5`, `2e3`).
pub fn is_quantity(s: &str) -> bool {
    let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let unit = matches!(suffix, "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei");
    let exponent = suffix.starts_with(['e', 'E']) && suffix[1..].parse::<i32>().is_ok();
    !num.is_empty() && num.parse::<f64>().is_ok() && (unit || exponent)
}

impl KubernetesSpec {
    /// The GPUs, CPU and memory a pod asks for: training's, or for an evaluation job its
    /// `eval_resources` where given.
    pub fn resources(&self, eval: bool) -> (u32, Option<String>, Option<String>) {
        let e = self.eval_resources.as_ref().filter(|_| eval);
        (
            e.and_then(|e| e.gpus_per_run).unwrap_or(self.gpus_per_run),
            e.and_then(|e| e.cpu.clone()).or_else(|| self.cpu.clone()),
            e.and_then(|e| e.memory.clone()).or_else(|| self.memory.clone()),
        )
    }

    /// Checks every value a type cannot check.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, message: String| Err(ConfigError { key: key.into(), message });
        if !is_dns_label(&self.namespace) {
            return err("namespace", format!("`{}` is not a DNS-1123 label", self.namespace));
        }
        if self.image.trim().is_empty() {
            return err("image", "expected a worker image".into());
        }
        if !matches!(self.image_pull_policy.as_str(), "Always" | "IfNotPresent" | "Never") {
            return err("image_pull_policy", format!("`{}`: expected Always, IfNotPresent or Never", self.image_pull_policy));
        }
        if !(self.coordinator_url.starts_with("http://") || self.coordinator_url.starts_with("https://")) {
            return err("coordinator_url", format!("`{}`: expected an http:// or https:// URL", self.coordinator_url));
        }
        let eval = self.eval_resources.clone().unwrap_or_default();
        for (key, q) in [
            ("cpu", &self.cpu),
            ("memory", &self.memory),
            ("eval_resources.cpu", &eval.cpu),
            ("eval_resources.memory", &eval.memory),
            ("shm_size", &self.shm_size),
        ] {
            if let Some(q) = q
                && !is_quantity(q)
            {
                return err(key, format!("`{q}` is not a Kubernetes quantity (for example 8, 7500m, 64Gi)"));
            }
        }
        for (i, v) in self.volumes.iter().enumerate() {
            if !is_dns_label(&v.name) {
                return err(&format!("volumes[{i}].name"), format!("`{}` is not a DNS-1123 label", v.name));
            }
            if self.volumes[..i].iter().any(|o| o.name == v.name) {
                return err(&format!("volumes[{i}].name"), format!("volume `{}` appears twice", v.name));
            }
            if v.claim.is_empty() {
                return err(&format!("volumes[{i}].claim"), "expected a PersistentVolumeClaim name".into());
            }
            if !v.mount_path.starts_with('/') {
                return err(&format!("volumes[{i}].mount_path"), format!("`{}` is not an absolute path", v.mount_path));
            }
        }
        if let Some(q) = &self.kueue_queue
            && !is_dns_label(q)
        {
            return err("kueue_queue", format!("`{q}` is not a DNS-1123 label"));
        }
        if let Some(o) = &self.owner_config_map
            && !is_dns_subdomain(o)
        {
            return err("owner_config_map", format!("`{o}` is not a ConfigMap name (a DNS-1123 subdomain)"));
        }
        if self.volumes.iter().any(|v| v.mount_path == SHM_PATH) && self.shm_size.is_some() {
            return err("shm_size", format!("a volume is mounted at {SHM_PATH} already"));
        }
        if self.ttl_seconds_after_finished < 0 {
            return err("ttl_seconds_after_finished", "expected seconds >= 0".into());
        }
        if self.active_deadline_seconds.is_some_and(|s| s <= 0) {
            return err("active_deadline_seconds", "expected seconds > 0".into());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return err("listen", format!("`{}`: expected ADDRESS:PORT such as 0.0.0.0:7700", self.listen));
        }
        if let Err((key, expected)) =
            crate::spec::executor::check_counts(self.max_parallel, self.threads_per_run, self.lease_seconds)
        {
            return err(key, expected.into());
        }
        if !(self.qps.is_finite() && self.qps > 0.0) || self.burst == 0 {
            return err("qps", "expected qps > 0 and burst >= 1".into());
        }
        Ok(())
    }
}

/// A complete example of the section (the keys after `kind: kubernetes`), used by docs and tests.
pub const EXAMPLE_YAML: &str = "\
namespace: isoflop
image: ghcr.io/isoflop/worker:0.1
coordinator_url: http://isoflop-coordinator.isoflop.svc:7700
gpus_per_run: 1
cpu: \"8\"
memory: 64Gi
node_selector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
priority_class: research
service_account: isoflop-worker
volumes:
  - {name: data, claim: isoflop-data, mount_path: /data, read_only: true}
  - {name: ckpt, claim: isoflop-ckpt, mount_path: /ckpt}
kueue_queue: gpu-queue
shm_size: 8Gi
active_deadline_seconds: 86400
";

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KubernetesSpec {
        serde_yaml::from_str(EXAMPLE_YAML).unwrap()
    }

    #[test]
    fn parses_with_defaults_and_validates() {
        let s = sample();
        s.validate().unwrap();
        assert_eq!((s.image_pull_policy.as_str(), s.ttl_seconds_after_finished, s.burst), ("IfNotPresent", 3600, 10));
        assert_eq!(s.tolerations[0].operator.as_deref(), Some("Exists"));
        assert!(serde_yaml::from_str::<KubernetesSpec>(&format!("{EXAMPLE_YAML}gpus: 2\n")).is_err(), "unknown keys are refused");
    }

    #[test]
    fn bad_values_name_the_key() {
        let bad = |f: fn(&mut KubernetesSpec)| {
            let mut s = sample();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert!(bad(|s| s.namespace = "Isoflop".into()).starts_with("executor.namespace:"));
        assert!(bad(|s| s.memory = Some("lots".into())).starts_with("executor.memory: `lots` is not a Kubernetes quantity"));
        assert!(bad(|s| s.volumes[1].name = "data".into()).contains("volumes[1].name: volume `data` appears twice"));
        assert!(bad(|s| s.volumes[0].mount_path = "data".into()).contains("volumes[0].mount_path"));
        assert!(bad(|s| s.coordinator_url = "isoflop:7700".into()).starts_with("executor.coordinator_url"));
        assert!(bad(|s| s.qps = 0.0).starts_with("executor.qps"));
        assert!(bad(|s| s.shm_size = Some("big".into())).starts_with("executor.shm_size: `big`"));
        assert!(bad(|s| s.owner_config_map = Some("My_Config".into())).starts_with("executor.owner_config_map"));
        assert!(bad(|s| s.volumes[0].mount_path = SHM_PATH.into()).starts_with("executor.shm_size"));
        assert!(is_quantity("7500m") && is_quantity("64Gi") && is_quantity("1.5") && is_quantity("2e3") && !is_quantity("Gi"));
    }
}
