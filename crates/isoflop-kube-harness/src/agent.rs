//! The node agent: a kubelet stand-in that registers Nodes, renews their Leases and runs bound pods as local processes.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::kubelet::{self, KubeletTls};
use crate::{HarnessError, io_err};

const FIELD_MANAGER: &str = "isoflop-node-agent";
const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_DURATION_S: i32 = 40;
const LOCALHOST: &str = "127.0.0.1";
/// The kubelet port written into Nodes when the agent serves no kubelet endpoint (nothing listens there).
const DEFAULT_KUBELET_PORT: u16 = 10250;

/// One fake machine.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    /// Capacity of the extended resource `nvidia.com/gpu`.
    pub gpus: u32,
    /// A Kubernetes quantity, e.g. `"8"`.
    pub cpu: String,
    /// A Kubernetes quantity, e.g. `"32Gi"`.
    pub memory: String,
}

impl NodeSpec {
    /// A node with `gpus` GPUs, 16 CPUs and 64Gi of memory.
    pub fn gpu(name: &str, gpus: u32) -> NodeSpec {
        NodeSpec { name: name.into(), gpus, cpu: "16".into(), memory: "64Gi".into() }
    }
}

/// How the agent maps what a pod asks for onto this machine.
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    /// PVC claim name -> local directory. A container whose mount path for that claim is the local directory runs
    /// as an ordinary process; any other path is bind-mounted in the pod's own mount namespace (see `volumes`).
    pub volume_dirs: HashMap<String, PathBuf>,
    /// `command[0]` -> local executable (e.g. "isoflop" -> the built test binary); other names resolve via PATH.
    pub commands: HashMap<String, PathBuf>,
    /// Extra environment for every process (e.g. LD_LIBRARY_PATH); the agent's own PATH/HOME/LD_LIBRARY_PATH are passed too.
    pub env: Vec<(String, String)>,
    /// Where each container's stdout+stderr goes: `<log_dir>/<namespace>_<pod>_<container>.log`
    pub log_dir: PathBuf,
    /// With TLS material ([`crate::ControlPlane::kubelet_tls`]), the agent serves a kubelet endpoint for `pods/log`
    /// on a free loopback port (written into every Node's `status.daemonEndpoints.kubeletEndpoint.Port`); without,
    /// Nodes name port 10250 and nothing listens there.
    pub kubelet_tls: Option<KubeletTls>,
    /// The API server's URL (`https://127.0.0.1:PORT`, [`crate::ControlPlane::server`]): every process gets the in-cluster
    /// environment (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`), as a kubelet gives it, so that a pod's client
    /// reaches the API server with the service-account token mounted at
    /// `/var/run/secrets/kubernetes.io/serviceaccount`.
    pub api_server: Option<String>,
}

/// What the pod's task hears from the watcher.
#[derive(Clone, Copy, Debug, PartialEq)]
enum PodSignal {
    None,
    /// The pod has a deletionTimestamp: stop the process within `grace` seconds.
    Deleting {
        grace: i64,
    },
    /// The pod object no longer exists.
    Gone,
}

struct PodEntry {
    namespace: String,
    name: String,
    node: String,
    /// The process group while the process runs.
    pgid: Option<i32>,
    oom: bool,
    /// The node died: write nothing more.
    dead: bool,
    signal: watch::Sender<PodSignal>,
    task: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, Vec<JoinHandle<()>>>,
    /// By pod UID.
    pods: HashMap<String, PodEntry>,
    /// The kubelet endpoint's accept loop.
    server: Option<JoinHandle<()>>,
}

struct Inner {
    client: Client,
    opts: AgentOptions,
    base_env: Vec<(String, String)>,
    kubelet_port: u16,
    /// Shared with the kubelet endpoint (which holds it weakly).
    state: Arc<Mutex<State>>,
}

/// The kubelet stand-in for a set of nodes. Dropping it SIGKILLs every process it started and stops all its tasks
/// (the Node objects stay; their Leases expire).
pub struct NodeAgent {
    inner: Arc<Inner>,
}

fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null)
}

fn kill_group(pgid: i32, sig: Signal) {
    // Never signal group 0 (our own) or anything below.
    if pgid <= 1 {
        return;
    }
    let _ = killpg(Pid::from_raw(pgid), sig);
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl NodeAgent {
    /// Registers `nodes` (Ready at once) and starts watching for pods bound to them.
    pub async fn start(client: Client, nodes: &[NodeSpec], opts: AgentOptions) -> Result<NodeAgent, HarnessError> {
        std::fs::create_dir_all(&opts.log_dir).map_err(io_err(format!("creating {}", opts.log_dir.display())))?;
        let base_env = ["PATH", "HOME", "LD_LIBRARY_PATH"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        let state = Arc::new(Mutex::new(State::default()));
        let mut kubelet_port = DEFAULT_KUBELET_PORT;
        if let Some(tls) = &opts.kubelet_tls {
            let pods = Arc::downgrade(&state);
            let known: kubelet::KnownPod = Arc::new(move |ns: &str, pod: &str| {
                pods.upgrade().is_some_and(|st| {
                    let st = st.lock().unwrap_or_else(|p| p.into_inner());
                    st.pods.values().any(|e| e.namespace == ns && e.name == pod && !e.dead)
                })
            });
            let (port, task) = kubelet::start(tls, opts.log_dir.clone(), known).await?;
            kubelet_port = port;
            state.lock().unwrap_or_else(|p| p.into_inner()).server = Some(task);
            tracing::info!("kubelet endpoint (pods/log) on https://127.0.0.1:{port}");
        }
        let agent = NodeAgent { inner: Arc::new(Inner { client, opts, base_env, kubelet_port, state }) };
        for n in nodes {
            agent.add_node(n).await?;
        }
        Ok(agent)
    }

    /// Registers one more node, Ready at once.
    pub async fn add_node(&self, node: &NodeSpec) -> Result<(), HarnessError> {
        let inner = &self.inner;
        if inner.lock().nodes.contains_key(&node.name) {
            return Err(HarnessError::Agent(format!("node {} is already registered", node.name)));
        }
        let nodes: Api<Node> = Api::all(inner.client.clone());
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let obj = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64"}},
        });
        let created = nodes.patch(&node.name, &pp, &Patch::Apply(&obj)).await?;
        let resources = json!({"cpu": node.cpu, "memory": node.memory, "pods": "110", "nvidia.com/gpu": node.gpus.to_string()});
        let t = now();
        let cond = |ty: &str, status: &str, reason: &str, message: &str| json!({"type": ty, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": t, "lastTransitionTime": t});
        let status = json!({"status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "isoflop node agent is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": LOCALHOST}, {"type": "Hostname", "address": node.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": inner.kubelet_port}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "isoflop node agent",
                "containerRuntimeVersion": "isoflop-harness://0.1", "kubeletVersion": "v1.37.2", "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64"},
        }});
        nodes.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status)).await?;

        let leases: Api<Lease> = Api::namespaced(inner.client.clone(), "kube-node-lease");
        let owner = json!([{"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": created.uid().unwrap_or_default()}]);
        renew_lease(&leases, &node.name, &owner).await?;
        let name = node.name.clone();
        let lease_task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                if let Err(e) = renew_lease(&leases, &name, &owner).await {
                    tracing::warn!("renewing lease of node {name}: {e}");
                }
            }
        });
        let watch_task = tokio::spawn(watch_node(inner.clone(), node.name.clone()));
        inner.lock().nodes.insert(node.name.clone(), vec![lease_task, watch_task]);
        tracing::info!("node {} registered with {} GPUs", node.name, node.gpus);
        Ok(())
    }

    /// The machine dies: its processes are SIGKILLed at once (no status written), its lease stops (and is deleted),
    /// its Node object is deleted. The control plane's pod GC later fails and deletes its pods (see the crate docs).
    pub async fn delete_node(&self, name: &str) -> Result<(), HarnessError> {
        {
            let mut st = self.inner.lock();
            let tasks = st.nodes.remove(name).ok_or_else(|| HarnessError::Agent(format!("no node {name}")))?;
            for t in tasks {
                t.abort();
            }
            let uids: Vec<String> = st.pods.iter().filter(|(_, e)| e.node == name).map(|(u, _)| u.clone()).collect();
            for uid in uids {
                if let Some(mut e) = st.pods.remove(&uid) {
                    e.dead = true;
                    if let Some(pgid) = e.pgid {
                        kill_group(pgid, Signal::SIGKILL);
                    }
                    if let Some(t) = e.task.take() {
                        t.abort();
                    }
                }
            }
        }
        let leases: Api<Lease> = Api::namespaced(self.inner.client.clone(), "kube-node-lease");
        match leases.delete(name, &DeleteParams::default()).await {
            Err(e) if !is_status(&e, 404) => return Err(e.into()),
            _ => {}
        }
        let nodes: Api<Node> = Api::all(self.inner.client.clone());
        match nodes.delete(name, &DeleteParams::default()).await {
            Err(e) if !is_status(&e, 404) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// The kernel's OOM killer: SIGKILL the pod's process group and report the container terminated with reason
    /// `OOMKilled`, exit code 137.
    pub async fn oom_kill(&self, namespace: &str, pod: &str) -> Result<(), HarnessError> {
        let mut st = self.inner.lock();
        let e = st
            .pods
            .values_mut()
            .find(|e| e.namespace == namespace && e.name == pod && e.pgid.is_some())
            .ok_or_else(|| HarnessError::Agent(format!("pod {namespace}/{pod} has no running process")))?;
        e.oom = true;
        if let Some(pgid) = e.pgid {
            kill_group(pgid, Signal::SIGKILL);
        }
        Ok(())
    }

    /// Pods (namespace, name, node) whose process is running now.
    pub fn running(&self) -> Vec<(String, String, String)> {
        let st = self.inner.lock();
        let mut v: Vec<_> = st
            .pods
            .values()
            .filter(|e| e.pgid.is_some())
            .map(|e| (e.namespace.clone(), e.name.clone(), e.node.clone()))
            .collect();
        v.sort();
        v
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if let Some(t) = st.server.take() {
            t.abort();
        }
        for (_, tasks) in st.nodes.drain() {
            for t in tasks {
                t.abort();
            }
        }
        for (_, mut e) in st.pods.drain() {
            e.dead = true;
            if let Some(pgid) = e.pgid {
                kill_group(pgid, Signal::SIGKILL);
            }
            if let Some(t) = e.task.take() {
                t.abort();
            }
        }
    }
}

async fn renew_lease(leases: &Api<Lease>, node: &str, owner: &Value) -> Result<(), HarnessError> {
    let renew = serde_json::to_value(MicroTime(Timestamp::now())).unwrap_or(Value::Null);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": "kube-node-lease", "ownerReferences": owner},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_S, "renewTime": renew},
    });
    leases.patch(node, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&lease)).await?;
    Ok(())
}

async fn watch_node(inner: Arc<Inner>, node: String) {
    let pods: Api<Pod> = Api::all(inner.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = std::pin::pin!(watcher::watcher(pods, cfg).default_backoff());
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => inner.on_pod(&node, pod),
            Ok(Event::Delete(pod)) => inner.on_pod_gone(&pod),
            Ok(Event::Init | Event::InitDone) => {}
            Err(e) => tracing::warn!("watching pods of node {node}: {e}"),
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_pod(self: &Arc<Self>, node: &str, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        let signal = match (&pod.metadata.deletion_timestamp, pod.metadata.deletion_grace_period_seconds) {
            (Some(_), grace) => PodSignal::Deleting { grace: grace.unwrap_or(30) },
            (None, _) => PodSignal::None,
        };
        let mut st = self.lock();
        if let Some(e) = st.pods.get(&uid) {
            if signal != PodSignal::None {
                e.signal.send_if_modified(|s| {
                    let changed = *s == PodSignal::None;
                    if changed {
                        *s = signal;
                    }
                    changed
                });
            }
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        let terminal = phase == "Succeeded" || phase == "Failed";
        if terminal && signal == PodSignal::None {
            return; // finished before this agent saw it; nothing to do until it is deleted
        }
        let (tx, rx) = watch::channel(signal);
        let entry = PodEntry {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            node: node.to_string(),
            pgid: None,
            oom: false,
            dead: false,
            signal: tx,
            task: None,
        };
        st.pods.insert(uid.clone(), entry);
        let task = if terminal {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let (name, uid) = (pod.name_any(), uid.clone());
            tokio::spawn(async move { final_delete(&api, &name, &uid).await })
        } else {
            tokio::spawn(run_pod(self.clone(), pod, rx))
        };
        if let Some(e) = st.pods.get_mut(&uid) {
            e.task = Some(task);
        }
    }

    fn on_pod_gone(&self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.as_deref() else { return };
        let mut st = self.lock();
        if let Some(e) = st.pods.remove(uid) {
            // A kubelet kills the containers of a pod whose object was force-deleted.
            if let Some(pgid) = e.pgid {
                kill_group(pgid, Signal::SIGKILL);
            }
            e.signal.send_replace(PodSignal::Gone);
        }
    }

    /// Whether the pod's node died or its entry is gone (then nothing more may be written).
    fn silenced(&self, uid: &str) -> bool {
        self.lock().pods.get(uid).is_none_or(|e| e.dead)
    }
}

/// Why a pod's container could not be started.
#[derive(Debug)]
pub(crate) enum Prep {
    /// Retry soon, the pod stays Pending with its container waiting (`CreateContainerConfigError`).
    Retry(String),
    /// The pod fails (`StartError`).
    Fatal(String),
}

/// What the container runs.
struct Prepared {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: Option<PathBuf>,
    /// The pod's start script, when its volumes need a mount namespace of its own.
    script: Option<PathBuf>,
}

/// The kubelet's final delete of a pod whose containers are stopped.
async fn final_delete(api: &Api<Pod>, name: &str, uid: &str) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {}
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
        Err(e) => tracing::warn!("deleting pod {name}: {e}"),
    }
}

async fn run_pod(inner: Arc<Inner>, pod: Pod, rx: watch::Receiver<PodSignal>) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    if let Err(e) = run_pod_inner(&inner, pod, rx).await {
        tracing::warn!("pod {ns}/{name}: {e}");
    }
}

/// The container's status fields every report repeats.
fn container_base(c: &Container) -> serde_json::Map<String, Value> {
    let image = c.image.clone().unwrap_or_default();
    let mut m = serde_json::Map::new();
    m.insert("name".into(), json!(c.name));
    m.insert("imageID".into(), json!(format!("isoflop-harness://{image}")));
    m.insert("image".into(), json!(image));
    m.insert("restartCount".into(), json!(0));
    m
}

fn condition(ty: &str, status: &str, reason: Option<&str>) -> Value {
    let mut c = json!({"type": ty, "status": status, "lastTransitionTime": now()});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

fn ips() -> Value {
    json!({"hostIP": LOCALHOST, "hostIPs": [{"ip": LOCALHOST}], "podIP": LOCALHOST, "podIPs": [{"ip": LOCALHOST}]})
}

async fn patch_pod_status(api: &Api<Pod>, name: &str, status: Value) -> Result<(), HarnessError> {
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(json!({ "status": status }))).await?;
    Ok(())
}

/// The pod Failed with its container terminated by `reason` (a start error or the process's exit).
fn terminal_status(c: &Container, started_at: &Value, terminated: Value, phase: &str) -> Value {
    let mut cs = container_base(c);
    if let Some(id) = terminated.get("containerID") {
        cs.insert("containerID".into(), id.clone());
    }
    cs.insert("ready".into(), json!(false));
    cs.insert("started".into(), json!(false));
    cs.insert("state".into(), json!({"waiting": null, "running": null, "terminated": terminated}));
    let reason = if phase == "Succeeded" { "PodCompleted" } else { "PodFailed" };
    let mut s = ips();
    s["phase"] = json!(phase);
    s["startTime"] = started_at.clone();
    s["conditions"] = json!([
        condition("PodReadyToStartContainers", "False", None),
        condition("Initialized", "True", Some(reason)),
        condition("ContainersReady", "False", Some(reason)),
        condition("Ready", "False", Some(reason)),
    ]);
    s["containerStatuses"] = json!([cs]);
    s
}

/// The container could not be started (`msg` says why): the pod ends Failed with reason
/// `StartError`, exit code 128, as a kubelet reports it, and waits for its deletion.
async fn start_error(
    api: &Api<Pod>,
    name: &str,
    uid: &str,
    c: &Container,
    start_time: &Value,
    msg: String,
    rx: watch::Receiver<PodSignal>,
) -> Result<(), HarnessError> {
    tracing::info!("pod {name}: StartError: {msg}");
    let t = now();
    let term = json!({"exitCode": 128, "reason": "StartError", "message": msg, "startedAt": t, "finishedAt": t});
    patch_pod_status(api, name, terminal_status(c, start_time, term, "Failed")).await?;
    await_deletion(api, name, uid, rx).await;
    Ok(())
}

/// Waits until the pod is deleted (then makes the final delete) or gone.
async fn await_deletion(api: &Api<Pod>, name: &str, uid: &str, mut rx: watch::Receiver<PodSignal>) {
    loop {
        let s = *rx.borrow_and_update();
        match s {
            PodSignal::Deleting { .. } => return final_delete(api, name, uid).await,
            PodSignal::Gone => return,
            PodSignal::None => {}
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn run_pod_inner(inner: &Arc<Inner>, pod: Pod, mut rx: watch::Receiver<PodSignal>) -> Result<(), HarnessError> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(inner.client.clone(), &ns);
    let Some(c) = pod.spec.as_ref().and_then(|s| s.containers.first()).cloned() else {
        return Err(HarnessError::Agent("pod has no containers".into()));
    };
    let start_time = pod.status.as_ref().and_then(|s| s.start_time.clone()).map(|t| json!(t)).unwrap_or_else(now);

    // Prepare the container: env (Secrets may appear later), volumes, command.
    let mut last_wait = String::new();
    let prepared = loop {
        let s = *rx.borrow_and_update();
        match s {
            PodSignal::Gone => return Ok(()),
            PodSignal::Deleting { .. } => {
                if !inner.silenced(&uid) {
                    final_delete(&api, &name, &uid).await;
                }
                return Ok(());
            }
            PodSignal::None => {}
        }
        if inner.silenced(&uid) {
            return Ok(());
        }
        match inner.prepare(&pod, &c).await {
            Ok(p) => break p,
            Err(Prep::Retry(msg)) => {
                if msg != last_wait {
                    tracing::info!("pod {ns}/{name}: CreateContainerConfigError: {msg}");
                    let mut cs = container_base(&c);
                    cs.insert("ready".into(), json!(false));
                    cs.insert("started".into(), json!(false));
                    cs.insert(
                        "state".into(),
                        json!({"running": null, "terminated": null,
                            "waiting": {"reason": "CreateContainerConfigError", "message": msg}}),
                    );
                    let mut st = ips();
                    st["startTime"] = start_time.clone();
                    st["conditions"] = json!([
                        condition("PodReadyToStartContainers", "True", None),
                        condition("Initialized", "True", None),
                        condition("ContainersReady", "False", Some("ContainersNotReady")),
                        condition("Ready", "False", Some("ContainersNotReady")),
                    ]);
                    st["containerStatuses"] = json!([cs]);
                    patch_pod_status(&api, &name, st).await?;
                    last_wait = msg;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
            }
            Err(Prep::Fatal(msg)) => return start_error(&api, &name, &uid, &c, &start_time, msg, rx).await,
        }
    };

    // Start the process in its own process group.
    let log_path = inner.opts.log_dir.join(format!("{ns}_{name}_{}.log", c.name));
    let out = File::create(&log_path).map_err(io_err(format!("creating {}", log_path.display())))?;
    let err = out.try_clone().map_err(io_err("cloning a log file handle"))?;
    let mut cmd = match &prepared.script {
        None => {
            let mut cmd = tokio::process::Command::new(&prepared.program);
            cmd.args(&prepared.args);
            cmd
        }
        Some(script) => {
            // unshare and sh exec into chroot and then the program: one pid, the process group's leader.
            let mut cmd = tokio::process::Command::new("unshare");
            cmd.args(["--mount", "--propagation", "private", "/bin/sh"]).arg(script).arg(&prepared.program).args(&prepared.args);
            cmd
        }
    };
    cmd.env_clear()
        .envs(prepared.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    if let Some(d) = &prepared.working_dir {
        cmd.current_dir(d);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let msg = format!("starting {}: {e}", prepared.program.display());
            return start_error(&api, &name, &uid, &c, &start_time, msg, rx).await;
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or_default();
    let registered = match inner.lock().pods.get_mut(&uid) {
        Some(e) if !e.dead => {
            e.pgid = Some(pgid);
            true
        }
        _ => false,
    };
    if !registered {
        kill_group(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
        return Ok(());
    }
    let started_at = now();
    let container_id = format!("isoflop-harness://{pgid}");
    tracing::info!("pod {ns}/{name}: started pid {pgid}: {} {:?}", prepared.program.display(), prepared.args);

    let mut cs = container_base(&c);
    cs.insert("containerID".into(), json!(container_id));
    cs.insert("ready".into(), json!(true));
    cs.insert("started".into(), json!(true));
    cs.insert("state".into(), json!({"waiting": null, "terminated": null, "running": {"startedAt": started_at}}));
    let mut st = ips();
    st["phase"] = json!("Running");
    st["startTime"] = start_time.clone();
    st["conditions"] = json!([
        condition("PodReadyToStartContainers", "True", None),
        condition("Initialized", "True", None),
        condition("ContainersReady", "True", None),
        condition("Ready", "True", None),
    ]);
    st["containerStatuses"] = json!([cs]);
    if let Err(e) = patch_pod_status(&api, &name, st).await {
        tracing::warn!("pod {ns}/{name}: reporting Running: {e}");
    }

    // Wait for the exit, stopping the process when the pod is deleted.
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut stopping = false;
    let mut closed = false;
    let status: ExitStatus = loop {
        let s = *rx.borrow_and_update();
        if !stopping && s != PodSignal::None {
            stopping = true;
            let grace = match s {
                PodSignal::Deleting { grace } => grace.max(0) as u64,
                _ => 0,
            };
            if grace == 0 {
                kill_group(pgid, Signal::SIGKILL);
            } else {
                tracing::info!("pod {ns}/{name}: deleted; SIGTERM, SIGKILL after {grace} s");
                kill_group(pgid, Signal::SIGTERM);
                kill_at = Some(tokio::time::Instant::now() + Duration::from_secs(grace));
            }
        }
        let deadline = kill_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = child.wait() => break r.map_err(io_err("waiting for a pod's process"))?,
            r = rx.changed(), if !closed => closed = r.is_err(),
            _ = tokio::time::sleep_until(deadline), if kill_at.is_some() => {
                kill_group(pgid, Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    // Container teardown: nothing of the group survives its main process.
    kill_group(pgid, Signal::SIGKILL);
    let oom = {
        let mut st = inner.lock();
        match st.pods.get_mut(&uid) {
            Some(e) if !e.dead => {
                e.pgid = None;
                e.oom
            }
            _ => return Ok(()), // the machine died or the pod object is gone: nothing to report
        }
    };
    let finished_at = now();
    use std::os::unix::process::ExitStatusExt;
    let mut term = json!({"startedAt": started_at, "finishedAt": finished_at, "containerID": container_id});
    let (code, phase) = match (status.code(), status.signal()) {
        (Some(0), _) if !oom => {
            term["reason"] = json!("Completed");
            (0, "Succeeded")
        }
        (Some(code), _) => {
            term["reason"] = json!(if oom { "OOMKilled" } else { "Error" });
            (code, "Failed")
        }
        (None, sig) => {
            let sig = sig.unwrap_or(9);
            term["signal"] = json!(sig);
            term["reason"] = json!(if oom { "OOMKilled" } else { "Error" });
            (128 + sig, "Failed")
        }
    };
    term["exitCode"] = json!(code);
    tracing::info!("pod {ns}/{name}: process exited with {status}: phase {phase}, {term}");
    patch_pod_status(&api, &name, terminal_status(&c, &start_time, term, phase)).await?;
    await_deletion(&api, &name, &uid, rx).await;
    Ok(())
}

impl Inner {
    async fn prepare(&self, pod: &Pod, c: &Container) -> Result<Prepared, Prep> {
        let ns = pod.namespace().unwrap_or_default();
        let spec = pod.spec.as_ref().ok_or_else(|| Prep::Fatal("pod has no spec".into()))?;
        if c.env_from.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(Prep::Fatal("envFrom is not supported by the isoflop node agent".into()));
        }
        // Volumes: claims at their local directories need nothing; anything else is mounted in a namespace of the pod's own.
        let pod_dir = self.opts.log_dir.join(".pods").join(pod.metadata.uid.as_deref().unwrap_or("unknown"));
        let mounts = crate::volumes::mounts(&self.client, pod, c, &pod_dir, &self.opts.volume_dirs).await?;
        let script = if mounts.is_empty() {
            None
        } else {
            let text = crate::volumes::start_script(&pod_dir, &mounts)?;
            let path = pod_dir.join("start.sh");
            std::fs::write(&path, text).map_err(|e| Prep::Fatal(format!("writing {}: {e}", path.display())))?;
            Some(path)
        };
        // Environment: the agent's, the options', then the container's.
        let mut env = self.base_env.clone();
        env.extend(self.opts.env.iter().cloned());
        env.push(("HOSTNAME".into(), pod.name_any()));
        if let Some((host, port)) =
            self.opts.api_server.as_deref().and_then(|u| u.strip_prefix("https://")).and_then(|h| h.rsplit_once(':'))
        {
            env.push(("KUBERNETES_SERVICE_HOST".into(), host.to_string()));
            env.push(("KUBERNETES_SERVICE_PORT".into(), port.to_string()));
            env.push(("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()));
        }
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => Some(v.clone()),
                (None, None) => Some(String::new()),
                (None, Some(src)) => {
                    // A missing optional object or key is no variable; a missing required one waits.
                    if let Some(r) = &src.secret_key_ref {
                        let optional = r.optional.unwrap_or(false);
                        let data = crate::volumes::secret_data(&self.client, &ns, &r.name, optional).await?;
                        match data.get(&r.key) {
                            Some(b) => Some(String::from_utf8_lossy(b).into_owned()),
                            None if optional => None,
                            None => return Err(Prep::Retry(format!("couldn't find key {} in Secret {ns}/{}", r.key, r.name))),
                        }
                    } else if let Some(r) = &src.config_map_key_ref {
                        let optional = r.optional.unwrap_or(false);
                        let data = crate::volumes::config_map_data(&self.client, &ns, &r.name, optional).await?;
                        match data.get(&r.key) {
                            Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                            None if optional => None,
                            None => {
                                return Err(Prep::Retry(format!("couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name)));
                            }
                        }
                    } else if let Some(f) = &src.field_ref {
                        Some(match f.field_path.as_str() {
                            "metadata.name" => pod.name_any(),
                            "metadata.namespace" => ns.clone(),
                            "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
                            "spec.nodeName" => spec.node_name.clone().unwrap_or_default(),
                            "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_default(),
                            "status.podIP" | "status.hostIP" => LOCALHOST.to_string(),
                            other => {
                                return Err(Prep::Fatal(format!("env {}: fieldRef {other} is not supported", e.name)));
                            }
                        })
                    } else {
                        return Err(Prep::Fatal(format!("env {}: this valueFrom is not supported by the node agent", e.name)));
                    }
                }
            };
            if let Some(v) = value {
                env.retain(|(k, _)| k != &e.name);
                env.push((e.name.clone(), v));
            }
        }
        // Command.
        let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
        argv.extend(c.args.clone().unwrap_or_default());
        if argv.is_empty() {
            return Err(Prep::Fatal(
                "the container has no command; the node agent has no images to take an entrypoint from".into(),
            ));
        }
        let first = argv.remove(0);
        let program = self.opts.commands.get(&first).cloned().unwrap_or_else(|| PathBuf::from(&first));
        Ok(Prepared { program, args: argv, env, working_dir: c.working_dir.as_ref().map(PathBuf::from), script })
    }
}
