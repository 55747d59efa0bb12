//! End-to-end test harness for the Kubernetes executor: a **real** Kubernetes control plane on loopback and a
//! Rust node agent that plays the kubelet.
//!
//! # What is real
//!
//! [`ControlPlane::start`] runs the real `etcd`, `kube-apiserver`, `kube-controller-manager` and `kube-scheduler`
//! binaries (Kubernetes v1.37.2, built from Go modules by `scripts/controlplane.sh`, see [`controlplane_bin_dir`]) on
//! free loopback ports, with TLS, client-certificate authentication, RBAC, the default admission plugins and all
//! default controllers (job, podgc, nodelifecycle, serviceaccount, garbagecollector, ttl-after-finished, ...).
//! Jobs, Pods, scheduling by extended resources (`nvidia.com/gpu`), owner-reference garbage collection, Job
//! tracking finalizers and pod garbage collection are therefore the genuine Kubernetes behaviour.
//!
//! # What is faked
//!
//! There is no kubelet (beyond the log endpoint below), container runtime, image, network or storage. [`NodeAgent`]
//! registers Node objects with the capacity of a [`NodeSpec`] (cpu, memory, `pods: 110`, `nvidia.com/gpu`), keeps their Leases in
//! `kube-node-lease` renewed every 10 s so that the node lifecycle controller keeps them Ready, and for every
//! pod the scheduler binds to one of its nodes runs the first container's `command + args` as a local process in
//! its own process group (the image is ignored; `command[0]` can be remapped with [`AgentOptions::commands`]).
//! It writes pod status like a kubelet (Running, then Succeeded/Failed with the container's exit code), honours
//! graceful deletion (SIGTERM to the process group, SIGKILL after `deletionGracePeriodSeconds`, then the final
//! delete with `gracePeriodSeconds=0`), resolves `env` values (`value`, `valueFrom.secretKeyRef`,
//! `valueFrom.fieldRef` for the pod's name/namespace/node/IPs), and maps PersistentVolumeClaims to local
//! directories ([`AgentOptions::volume_dirs`]). A pod whose claims are mounted at their local directories (the
//! workers of the executor's tests) runs as a plain process. A pod with any other volume mount gets a mount
//! namespace and a root of its own, as from a container runtime: ConfigMap, Secret, downward API and projected
//! volumes are written out (a projected service-account token is a real token of the pod's ServiceAccount, bound
//! to the pod, from the TokenRequest API; `kube-root-ca.crt` is the cluster CA), emptyDir is a fresh directory,
//! claims and hostPath are bind mounts, each at its mount path (read-only where asked), and nothing of it is seen
//! outside the pod (`volumes.rs`). With [`AgentOptions::api_server`] every process gets the in-cluster
//! environment, so a client in the pod talks to the API server as the pod's ServiceAccount. `envFrom` and
//! `$(VAR)` expansion are not supported, resource limits and security contexts are not enforced (use
//! [`NodeAgent::oom_kill`] to play the kernel's OOM killer), the working directory is the agent's own, and
//! `HOSTNAME` is set to the pod name.
//!
//! # `pods/log`: the kubelet endpoint
//!
//! With [`AgentOptions::kubelet_tls`] set to [`ControlPlane::kubelet_tls`], the agent runs one HTTPS server on a free
//! loopback port for all its nodes and writes that port into every Node's `status.daemonEndpoints.kubeletEndpoint`.
//! `GET /api/v1/namespaces/{ns}/pods/{pod}/log` (`kubectl logs`, kube's `Api::<Pod>::logs`) then works as on a real
//! cluster: the apiserver (`--kubelet-client-certificate`, `--kubelet-certificate-authority`,
//! `--kubelet-preferred-address-types=InternalIP`) proxies it to the agent's `GET /containerLogs/{ns}/{pod}/{container}`,
//! which serves the container's log file (stdout and stderr interleaved, no stream separation) with `tailLines` and
//! `limitBytes`. The agent serves a pod's logs while it knows the pod, also after the process exited, until the pod
//! object is deleted; unknown pods get 404, a container not started yet 400, `previous=true` 400 (containers are
//! never restarted). Not like a kubelet: `follow=true` returns what the file holds now and ends (no streaming),
//! `timestamps` and `sinceSeconds`/`sinceTime` are ignored. Only client certificates signed by the cluster CA get
//! through the TLS handshake (any of them; there is no webhook authorization, and no anonymous access). `exec`,
//! `attach`, `port-forward` and the other kubelet APIs are not served. Without `kubelet_tls` Nodes name port 10250
//! and nothing listens there.
//!
//! Missing Secrets behave as on a kubelet: the pod stays Pending with its container waiting, reason
//! `CreateContainerConfigError`, and the agent retries every second. A command that cannot be started or a
//! volume that cannot be mapped ends the pod Failed, its container terminated with exit code 128, reason
//! `StartError` and the cause in the message.
//!
//! # A machine dying: [`NodeAgent::delete_node`]
//!
//! The node's processes are SIGKILLed at once, no status is written, its Lease stops being renewed and is
//! deleted, and its Node object is deleted. What the v1.37 control plane then does (measured by `tests/e2e.rs`):
//!
//! 1. For about 40–60 s nothing changes: the pod still reads phase `Running`, `Ready=True`, its container
//!    `running`. The controller manager's pod garbage collector scans every 20 s and quarantines a pod whose
//!    node is missing for 40 s (in case the node re-registers).
//! 2. Then, in one step, the pod GC patches the pod to phase `Failed` with condition `DisruptionTarget=True`,
//!    reason `DeletionByPodGC`, message `PodGC: node no longer exists` (the container status is left as the
//!    agent last wrote it: `running`, `ready: true`) and deletes it with grace period 0.
//! 3. A Job pod lingers about a second more with its `batch.kubernetes.io/job-tracking` finalizer until the
//!    Job controller has counted it (`failed: 1`; with `backoffLimit: 0` the Job gets `FailureTarget` and
//!    `Failed`, reason `BackoffLimitExceeded`) and removed the finalizer; then the pod is gone.
//!
//! Measured on a 2-core machine over five runs: 53–56 s from `delete_node` to the pod `Failed`, 54–57 s to the pod
//! gone (the bound is 40 s quarantine + up to 20 s until the next scan + the Job controller; tests should allow 120 s).
//! Nothing in the harness shortens this (the pod GC's period and quarantine are not flags).
//!
//! # Control-plane details
//!
//! The apiserver runs with `--endpoint-reconciler-type=none` (a loopback address may not be published as the
//! `kubernetes` Service's endpoint, and nothing here needs it) and `--enable-priority-and-fairness=false`; etcd with
//! `--unsafe-no-fsync`. The controller manager and scheduler use the admin client certificate, without leader
//! election. [`ControlPlane::start`] takes about 3–4 s on a warm cache. PersistentVolumeClaims only let a pod be
//! scheduled once Bound: [`ControlPlane::create_local_pvc`] creates a claim pre-bound to a hostPath volume.
//!
//! # Using it
//!
//! ```no_run
//! # async fn demo() -> Result<(), isoflop_kube_harness::HarnessError> {
//! use isoflop_kube_harness::*;
//! let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
//! let bin = controlplane_bin_dir(&repo)?;
//! let work = tempfile::tempdir().unwrap();
//! let cp = ControlPlane::start(&bin, work.path()).await?;
//! let opts = AgentOptions { log_dir: work.path().join("pods"), kubelet_tls: Some(cp.kubelet_tls()), ..Default::default() };
//! let node = NodeSpec { name: "gpu-0".into(), gpus: 1, cpu: "8".into(), memory: "32Gi".into() };
//! let _agent = NodeAgent::start(cp.client(), &[node], opts).await?;
//! // Create Jobs with cp.client() or hand cp.kubeconfig_path() to a process as KUBECONFIG.
//! # Ok(()) }
//! ```

mod agent;
mod certs;
mod controlplane;
mod kubelet;
mod volumes;

pub use agent::{AgentOptions, NodeAgent, NodeSpec};
pub use controlplane::ControlPlane;
pub use kubelet::KubeletTls;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Everything that can go wrong in the harness; every variant says why.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// `scripts/controlplane.sh` failed or its output is unusable.
    #[error("building the test control plane failed: {0}")]
    Build(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A component exited or never became ready.
    #[error("control plane: {0}")]
    ControlPlane(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("node agent: {0}")]
    Agent(String),
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

/// The four control-plane binaries in the directory [`controlplane_bin_dir`] returns.
pub const CONTROLPLANE_BINARIES: [&str; 4] = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"];

/// Runs `scripts/controlplane.sh` of the repository at `repo_root` (which builds the binaries on first use, taking a
/// lock so concurrent callers wait for one build) and returns the directory holding [`CONTROLPLANE_BINARIES`].
/// A failed build or a missing binary is an error carrying the script's stderr; nothing is skipped silently.
pub fn controlplane_bin_dir(repo_root: &Path) -> Result<PathBuf, HarnessError> {
    let script = repo_root.join("scripts/controlplane.sh");
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(repo_root)
        .output()
        .map_err(io_err(format!("running {}", script.display())))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(HarnessError::Build(format!("{} exited with {}; stderr:\n{stderr}", script.display(), out.status)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| HarnessError::Build(format!("{} printed no directory; stderr:\n{stderr}", script.display())))?;
    for b in CONTROLPLANE_BINARIES {
        let p = dir.join(b);
        if !p.is_file() {
            return Err(HarnessError::Build(format!("{} is missing after {}; stderr:\n{stderr}", p.display(), script.display())));
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_repo(script: &str) -> tempfile::TempDir {
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(repo.path().join("scripts")).unwrap();
        std::fs::write(repo.path().join("scripts/controlplane.sh"), script).unwrap();
        repo
    }

    #[test]
    fn a_failed_build_is_an_error_with_its_stderr() {
        let repo = fake_repo("echo 'go: module lookup disabled' >&2; exit 1\n");
        let e = controlplane_bin_dir(repo.path()).unwrap_err().to_string();
        assert!(e.contains("go: module lookup disabled") && e.contains("exit status: 1"), "{e}");
    }

    #[test]
    fn a_missing_binary_is_an_error() {
        let repo = fake_repo("mkdir -p \"$PWD/bin\"; touch \"$PWD/bin/etcd\"; echo \"$PWD/bin\"\n");
        let e = controlplane_bin_dir(repo.path()).unwrap_err().to_string();
        assert!(e.contains("kube-apiserver is missing"), "{e}");
    }
}
