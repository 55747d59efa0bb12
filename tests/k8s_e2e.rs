//! The Kubernetes executor against a real control plane: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler v1.37 built from their Go modules
//! (`scripts/controlplane.sh`), with the harness's node agent playing the kubelet of GPU nodes.
//! Real Jobs → the real Job controller makes pods → the real scheduler binds them by
//! `nvidia.com/gpu` → the agent runs the real `isoflop worker` → results in the store.
//!
//! A control plane that cannot be built or started fails these tests with the reason.

mod common;
#[path = "common/chaos.rs"]
mod drill;

use common::{TINY_SWEEP, show, wait_for, write_spec};
use isoflop_core::{FailureClass, RunState};
use isoflop_kube_harness::{AgentOptions, ControlPlane, NodeAgent, NodeSpec, controlplane_bin_dir};
use isoflop_store::{AttemptOutcome, SqliteStore, Store};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

/// One control plane and node agent for a test, with the corpus and an artifacts directory
/// offered to pods as bound PersistentVolumeClaims.
/// Fields drop in order: the agent's processes first, then the control plane, the runtime
/// and the files.
struct Cluster {
    agent: NodeAgent,
    cp: ControlPlane,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    artifacts: PathBuf,
    namespace: String,
}

impl Cluster {
    fn start(namespace: &str, nodes: &[NodeSpec]) -> Cluster {
        Cluster::start_with(namespace, nodes, Vec::new())
    }

    /// [`Cluster::start`] with `env` in every pod's environment.
    fn start_with(namespace: &str, nodes: &[NodeSpec], env: Vec<(String, String)>) -> Cluster {
        let t0 = Instant::now();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let bins = controlplane_bin_dir(&repo).unwrap_or_else(|e| panic!("the test control plane is not available: {e}"));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let artifacts = dir.path().join("artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let cp = rt
            .block_on(ControlPlane::start(&bins, &dir.path().join("cluster")))
            .unwrap_or_else(|e| panic!("control plane did not start: {e}"));
        rt.block_on(cp.create_namespace(namespace)).unwrap();
        let corpus = common::corpus().to_path_buf();
        let claims = [("isoflop-artifacts", artifacts.clone()), ("isoflop-data", corpus)];
        for (claim, dir) in &claims {
            rt.block_on(cp.create_local_pvc(namespace, claim, dir)).unwrap();
        }
        let opts = AgentOptions {
            volume_dirs: claims.iter().map(|(c, d)| (c.to_string(), d.clone())).collect::<HashMap<_, _>>(),
            commands: HashMap::from([("isoflop".to_string(), PathBuf::from(common::bin()))]),
            env,
            log_dir: dir.path().join("pod-logs"),
            kubelet_tls: Some(cp.kubelet_tls()),
            api_server: None,
        };
        let agent = rt.block_on(NodeAgent::start(cp.client(), nodes, opts)).unwrap();
        eprintln!("cluster ready in {:.1} s", t0.elapsed().as_secs_f64());
        Cluster { agent, cp, rt, dir, artifacts, namespace: namespace.into() }
    }

    /// A spec for `name` whose runs are Jobs in this cluster, with the coordinator on a free
    /// loopback port.
    fn spec(&self, base: &str, name: &str, gpus_per_run: u32) -> PathBuf {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let executor = self.executor(&port.to_string(), gpus_per_run, "");
        let body = base
            .replace("name: tiny", &format!("name: {name}"))
            .replace("executor: {kind: local, max_parallel: 2}\n", &executor)
            .replace(
                "store: {sqlite: state/isoflop.db}",
                &format!("store: {{sqlite: state/{name}.db, artifacts: {}}}", self.artifacts.join(name).display()),
            );
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        write_spec(&dir, &body)
    }

    /// The `executor:` block of a spec whose runs are Jobs in this cluster, with the
    /// coordinator on loopback port `port` and `extra` lines (indented by two) added.
    fn executor(&self, port: &str, gpus_per_run: u32, extra: &str) -> String {
        format!(
            "executor:
  kind: kubernetes
  namespace: {ns}
  image: isoflop-worker:test
  coordinator_url: http://127.0.0.1:{port}
  listen: 127.0.0.1:{port}
  gpus_per_run: {gpus_per_run}
  threads_per_run: 1
  lease_seconds: 20
  start_grace_seconds: 60
{extra}  volumes:
    - {{name: artifacts, claim: isoflop-artifacts, mount_path: {art}}}
    - {{name: data, claim: isoflop-data, mount_path: {corpus}, read_only: true}}
",
            ns = self.namespace,
            art = self.artifacts.display(),
            corpus = common::corpus().display()
        )
    }

    fn jobs(&self, selector: &str) -> Vec<Job> {
        let api: Api<Job> = Api::namespaced(self.cp.client(), &self.namespace);
        self.rt.block_on(api.list(&ListParams::default().labels(selector))).unwrap().items
    }

    fn pods(&self, selector: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.cp.client(), &self.namespace);
        self.rt.block_on(api.list(&ListParams::default().labels(selector))).unwrap().items
    }

    /// `isoflop ARGS` with this cluster's kubeconfig.
    fn isoflop(&self, args: &[&str]) -> Output {
        std::process::Command::new(common::bin()).args(args).env("KUBECONFIG", self.cp.kubeconfig_path()).output().unwrap()
    }

    fn spawn_run(&self, spec: &Path) -> std::process::Child {
        std::process::Command::new(common::bin())
            .args(["run", spec.to_str().unwrap(), "--plain"])
            .env("KUBECONFIG", self.cp.kubeconfig_path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn open_store(spec: &Path, name: &str) -> SqliteStore {
    let db = spec.parent().unwrap().join(format!("state/{name}.db"));
    wait_for(&SqliteStore::in_memory().unwrap(), 120, "the store", |_| {
        SqliteStore::open(&db).ok().filter(|s| !s.sweeps().unwrap().is_empty())
    })
}

/// The line `kubernetes: N API calls for J jobs (...)` of `isoflop run`.
fn api_calls_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with("kubernetes: ")).unwrap_or_default().to_string()
}

/// A sweep of 4 tiny runs that each want 2 GPUs, on two 1-GPU nodes: every run waits
/// `blocked` and `isoflop status` shows the scheduler's reason; a 2-GPU node joins and the runs
/// train on it one after another, and are evaluated. The API calls per run are printed.
#[test]
fn tiny_sweep_on_gpu_nodes_blocks_then_completes() {
    let c = Cluster::start("tiny", &[NodeSpec::gpu("gpu-a", 1), NodeSpec::gpu("gpu-b", 1)]);
    let spec = c.spec(TINY_SWEEP, "tiny", 2);
    let t0 = Instant::now();
    let child = c.spawn_run(&spec);
    let store = open_store(&spec, "tiny");
    wait_for(&store, 60, "every run to be blocked", |s| {
        common::training(s, "tiny").iter().all(|r| r.state == RunState::Blocked).then_some(())
    });
    let db = spec.parent().unwrap().join("state/tiny.db");
    let status = c.isoflop(&["status", "tiny", "--store", db.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("blocked") && text.contains("Insufficient nvidia.com/gpu"), "{}", show(&status));
    eprintln!("blocked runs in `isoflop status`:\n{text}");
    c.rt.block_on(c.agent.add_node(&NodeSpec::gpu("gpu-big", 2))).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    eprintln!("tiny sweep through Kubernetes: {:.1} s; {}", t0.elapsed().as_secs_f64(), api_calls_line(&out));
    let runs = common::training(&store, "tiny");
    assert_eq!(runs.len(), 4);
    let mut blocked = Vec::new();
    for r in &runs {
        assert_eq!(r.state, RunState::Succeeded, "{r:?}");
        assert_eq!(store.evals(&r.run_id).unwrap().len(), 5, "every distribution evaluated");
        assert!(r.progress.as_ref().is_some_and(|p| p.loss.is_finite()));
        blocked.extend(store.events(&r.run_id).unwrap().into_iter().filter(|e| e.to == RunState::Blocked).map(|e| e.message));
    }
    assert_eq!(blocked.len(), 4, "every run waited blocked, once: {blocked:?}");
    assert!(blocked.iter().all(|m| m.contains("nvidia.com/gpu")), "the scheduler's reason is kept: {blocked:?}");
    // The worker's log, copied from the pod through the API server's pods/log; the held-out
    // losses come from evaluation jobs, which ran as Jobs too.
    let logs = c.isoflop(&["logs", &runs[0].run_id, "--store", db.to_str().unwrap()]);
    assert!(logs.status.success(), "{}", show(&logs));
    assert!(String::from_utf8_lossy(&logs.stdout).contains("checkpoint at step"), "{}", show(&logs));
    let job = store.sweep_runs("tiny").unwrap().into_iter().find(|j| j.eval.as_ref().is_some_and(|e| e.parent == runs[0].run_id));
    let logs = c.isoflop(&["logs", &job.unwrap().run_id, "--store", db.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("worker: eval python bpb"), "{}", show(&logs));
    // One Job per run and per evaluation job: nothing was created twice.
    assert_eq!(c.jobs("isoflop.dev/sweep=tiny").len(), 8);
    assert!(api_calls_line(&out).contains("API calls for 8 jobs"), "{}", show(&out));

    // An evaluation-only submission: a multiple-choice task added to the finished sweep, its
    // pods without GPUs (`eval_resources`), so they fit on the 1-GPU nodes too. No training
    // Job; one evaluation Job per run; every item stored.
    let dir = spec.parent().unwrap();
    std::fs::write(
        dir.join("yes.jsonl"),
        (0..6).map(|i| format!("{{\"q\": \"Is {i} even?\", \"gold\": {}}}\n", i % 2)).collect::<String>(),
    )
    .unwrap();
    std::fs::write(dir.join("yes.yaml"), "items: yes.jsonl\ncontext: \"{q}\"\nchoices: [\"yes\", \"no\"]\ngold: \"{gold}\"\n")
        .unwrap();
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("  gpus_per_run: 2\n", "  gpus_per_run: 2\n  eval_resources: {gpus_per_run: 0}\n");
    let text = text.replacen("executor:", "eval:\n  tasks: [{name: parity, multiple_choice: {file: yes.yaml}}]\nexecutor:", 1);
    std::fs::write(&spec, text).unwrap();
    let out = c.spawn_run(&spec).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let trained: u64 = common::training(&store, "tiny").iter().map(|r| r.attempts).sum();
    assert_eq!(trained, 4, "no training attempt");
    let parity: Vec<_> = store.sweep_runs("tiny").unwrap().into_iter().filter(|j| j.name.ends_with("/parity")).collect();
    assert_eq!(parity.len(), 4);
    for j in &parity {
        assert_eq!((j.state, j.attempts), (RunState::Succeeded, 1), "{}: {}", j.name, j.message);
        assert_eq!(store.eval_items(&j.run_id).unwrap().len(), 6);
    }
    let eval_jobs = c.jobs("isoflop.dev/sweep=tiny,isoflop.dev/kind=eval");
    assert_eq!(eval_jobs.len(), 8, "the 4 held-out and the 4 new evaluation Jobs");
    assert_eq!(c.jobs("isoflop.dev/sweep=tiny").len(), 12, "4 more Jobs, no training one");
    for j in eval_jobs.iter().filter(|j| parity.iter().any(|p| j.metadata.name.as_deref().is_some_and(|n| n.contains(&p.run_id))))
    {
        let limits =
            j.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].resources.clone().and_then(|r| r.limits);
        assert!(limits.is_none_or(|l| !l.contains_key("nvidia.com/gpu")), "{:?}", j.metadata.name);
    }
    eprintln!("evaluation-only submission through Kubernetes: {}", api_calls_line(&out));
}

/// A pod OOMKilled → `oom`; its node deleted mid-run → `node_lost`, rescheduled on another node
/// and resumed from its checkpoint; the coordinator killed and restarted mid-sweep → the Jobs
/// are adopted, no run lost or trained twice; then `isoflop cancel` leaves nothing behind.
#[test]
fn failures_restarts_and_cancel_on_a_real_control_plane() {
    let c = Cluster::start("faults", &[NodeSpec::gpu("gpu-a", 1), NodeSpec::gpu("gpu-b", 1), NodeSpec::gpu("gpu-c", 1)]);
    let long = TINY_SWEEP.replace("[1.5e9, 3.0e9]", "[1.6e11]").replace("checkpoint_every: 20", "checkpoint_every: 25");
    let spec = c.spec(&long, "faults", 1);
    let mut child = c.spawn_run(&spec);
    let store = open_store(&spec, "faults");
    let runs = common::training(&store, "faults");
    assert_eq!(runs.len(), 2);
    let (a, b) = (runs[0].run_id.clone(), runs[1].run_id.clone());
    let pod_of = |run: &str, attempt: u64| -> Pod {
        let sel = format!("isoflop.dev/run={run},isoflop.dev/attempt={attempt}");
        wait_for(&store, 120, "the pod", |_| {
            c.pods(&sel).into_iter().find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        })
    };

    // 1. OOMKilled: run a's pod is killed by the "kernel" once it trains. While it trains,
    // `isoflop logs` reads its worker's log from the pod.
    wait_for(&store, 180, "run a to checkpoint", |s| s.latest_checkpoint(&a).unwrap().filter(|k| k.step >= 25));
    let db = spec.parent().unwrap().join("state/faults.db");
    let live = c.isoflop(&["logs", &a, "--attempt", "1", "--store", db.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&live.stdout).contains("worker: checkpoint at step"), "{}", show(&live));
    let pod = pod_of(&a, 1);
    c.rt.block_on(c.agent.oom_kill(&c.namespace, pod.metadata.name.as_deref().unwrap())).unwrap();
    let first = wait_for(&store, 60, "attempt 1 of a to end", |s| {
        s.attempt(&a, 1).unwrap().filter(|x| x.outcome != AttemptOutcome::Active)
    });
    assert_eq!((first.outcome, first.failure_class), (AttemptOutcome::Failed, Some(FailureClass::Oom)), "{first:?}");
    wait_for(&store, 120, "attempt 2 of a to resume", |s| s.attempt(&a, 2).unwrap().filter(|x| x.resume_step > 0));

    // 2. Node lost: run b's node disappears with its pod.
    wait_for(&store, 180, "run b to checkpoint", |s| s.latest_checkpoint(&b).unwrap().filter(|k| k.step >= 25));
    let pod = pod_of(&b, 1);
    let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
    let t = Instant::now();
    c.rt.block_on(c.agent.delete_node(&node)).unwrap();
    let lost = wait_for(&store, 120, "attempt 1 of b to end", |s| {
        s.attempt(&b, 1).unwrap().filter(|x| x.outcome != AttemptOutcome::Active)
    });
    eprintln!(
        "node {node} deleted: attempt ended as {:?} after {:.1} s: {}",
        lost.failure_class,
        t.elapsed().as_secs_f64(),
        lost.message
    );
    assert_eq!(lost.failure_class, Some(FailureClass::NodeLost), "{lost:?}");
    let resumed = wait_for(&store, 120, "attempt 2 of b to resume", |s| s.attempt(&b, 2).unwrap().filter(|x| x.resume_step > 0));
    let second_node = pod_of(&b, 2).spec.unwrap().node_name.unwrap();
    assert_ne!(second_node, node, "rescheduled on another node");
    assert!(resumed.resume_step >= 25);

    // 3. The coordinator dies mid-sweep and comes back.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = child.wait();
    let running_before: Vec<(String, u64)> =
        store.active_attempts().unwrap().into_iter().map(|x| (x.run_id, x.attempt)).collect();
    assert!(!running_before.is_empty(), "the coordinator was killed while attempts were live");
    let out = c.isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    for r in common::training(&store, "faults") {
        assert_eq!(r.state, RunState::Succeeded, "{r:?}");
        assert_eq!(store.evals(&r.run_id).unwrap().len(), 5);
        // Adopted attempts finished in place: no attempt beyond those running at the kill.
        let live_then = running_before.iter().find(|(run, _)| *run == r.run_id).map(|x| x.1);
        if let Some(n) = live_then {
            assert_eq!(r.attempts, n, "run {} was adopted, not relaunched", r.name);
        }
        // No duplicate: the newest attempt has its Job and no Job exists beyond it (a Job of
        // an attempt ended by lease expiry is deleted, so earlier ones may be gone).
        let jobs = c.jobs(&format!("isoflop.dev/run={}", r.run_id));
        let attempts: Vec<u64> = jobs.iter().map(|j| j.labels()["isoflop.dev/attempt"].parse().unwrap()).collect();
        assert!(attempts.contains(&r.attempts) && attempts.iter().all(|a| *a <= r.attempts), "{}: {attempts:?}", r.name);
    }
    eprintln!("{}", api_calls_line(&out));

    // 4. Cancel: a new sweep, cancelled while it runs, leaves no Job or pod.
    let spec2 = c.spec(&long.replace("hidden: [16, 32]", "hidden: [24]"), "doomed", 1);
    let child = c.spawn_run(&spec2);
    let store2 = open_store(&spec2, "doomed");
    let run = common::training(&store2, "doomed")[0].run_id.clone();
    wait_for(&store2, 120, "the doomed run to train", |s| s.run(&run).unwrap().filter(|r| r.state == RunState::Running));
    let out = c.isoflop(&["cancel", "doomed", "--store", spec2.parent().unwrap().join("state/doomed.db").to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let t = Instant::now();
    wait_for(&store2, 60, "the sweep's Jobs and pods to go", |_| {
        (c.jobs("isoflop.dev/sweep=doomed").is_empty() && c.pods("isoflop.dev/sweep=doomed").is_empty()).then_some(())
    });
    eprintln!("cancel: Jobs and pods gone {:.1} s after `isoflop cancel`", t.elapsed().as_secs_f64());
    let out = child.wait_with_output().unwrap();
    assert!(store2.run(&run).unwrap().unwrap().state == RunState::Cancelled, "{}", show(&out));
}

/// Issue 13, point 9: the chaos drill (tests/common/chaos.rs) on the test control plane. Its
/// `isoflop run` coordinator, whose runs are Jobs on three 1-GPU nodes, is SIGKILLed at
/// `ISOFLOP_CHAOS_KILLS` (default 10) random moments and restarted each time (adopting the
/// Jobs that still run); workers are SIGKILLed and newest checkpoints truncated on the way as
/// in the local drills; and while the coordinator lives, a training pod is OOMKilled (at the
/// third kill) and a node with a running pod is lost (at the sixth; a fresh node joins). The
/// drill's counts are the same as the local drills', with the same promised zeros.
#[test]
fn chaos_on_kubernetes() {
    use drill::{Drill, Injected, Kube, Mode, check, drill_dir, kills, seed};
    let (path, _dir) = drill_dir();
    let marker = vec![(drill::DRILL_ENV.to_string(), path.display().to_string())];
    let nodes = [NodeSpec::gpu("gpu-a", 1), NodeSpec::gpu("gpu-b", 1), NodeSpec::gpu("gpu-c", 1)];
    let c = Cluster::start_with("chaos", &nodes, marker);
    let executor = c.executor("@PORT@", 1, "  max_retries: 1000\n");
    let kube = Kube { executor, artifacts: c.artifacts.clone(), kubeconfig: c.cp.kubeconfig_path().to_path_buf() };
    // A running training pod whose attempt is live and still training (a pod whose worker is
    // finishing may succeed before the fault lands): its name, node, run and attempt.
    let db = path.join("state/isoflop.db");
    let running_training_pod = || -> Option<(String, String, String, u64)> {
        let store = SqliteStore::open(&db).ok()?;
        let running = c.agent.running();
        c.pods("isoflop.dev/kind=train").into_iter().find_map(|p| {
            let name = p.metadata.name.clone()?;
            let (_, _, node) = running.iter().find(|(ns, n, _)| *ns == c.namespace && *n == name)?;
            let labels = p.labels();
            let (run, attempt) = (labels.get("isoflop.dev/run")?.clone(), labels.get("isoflop.dev/attempt")?.parse().ok()?);
            let live = store.attempt(&run, attempt).ok()??.outcome == AttemptOutcome::Active;
            let last = store.progress(&run).ok()?.into_iter().rfind(|q| q.attempt == attempt)?;
            (live && last.step + 10 < last.total_steps).then_some((name, node.clone(), run, attempt))
        })
    };
    let (mut oomed, mut lost) = (None, None);
    let mut fresh = 0;
    let kills = kills();
    let counts = Drill::new(&path, Mode::Kubernetes(kube), seed(4)).run_with(kills, |k| {
        if k >= 2
            && oomed.is_none()
            && let Some((pod, _, run, attempt)) = running_training_pod()
        {
            c.rt.block_on(c.agent.oom_kill(&c.namespace, &pod)).unwrap();
            eprintln!("kill {k}: pod {pod} OOMKilled (run {run} attempt {attempt})");
            oomed = Some((run, attempt));
            return Injected::Oom;
        }
        if k >= 5
            && oomed.is_some()
            && lost.is_none()
            && let Some((pod, node, run, attempt)) = running_training_pod()
        {
            c.rt.block_on(c.agent.delete_node(&node)).unwrap();
            fresh += 1;
            c.rt.block_on(c.agent.add_node(&NodeSpec::gpu(&format!("gpu-fresh-{fresh}"), 1))).unwrap();
            eprintln!("kill {k}: node {node} lost with pod {pod} (run {run} attempt {attempt}); gpu-fresh-{fresh} joined");
            lost = Some((run, attempt));
            return Injected::NodeLost;
        }
        Injected::None
    });
    check(&counts, kills);
    assert_eq!((counts.ooms, counts.nodes_lost), (1, 1), "both faults injected: {counts:?}");
    // The attempts the faults hit ended (failed, or preempted), and their runs succeeded after all.
    let store = SqliteStore::open(&db).unwrap();
    for (what, (run, attempt)) in [("OOMKilled", oomed.unwrap()), ("node lost", lost.unwrap())] {
        let a = store.attempt(&run, attempt).unwrap().unwrap();
        eprintln!("{what}: run {run} attempt {attempt} ended {:?} ({:?}): {}", a.outcome, a.failure_class, a.message);
        assert!(matches!(a.outcome, AttemptOutcome::Failed | AttemptOutcome::Interrupted), "{what}: {a:?}");
        assert_eq!(store.run(&run).unwrap().unwrap().state, RunState::Succeeded);
    }
}
