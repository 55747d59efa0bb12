//! End-to-end checks of the harness against the real control plane. They need the control-plane binaries, which
//! `scripts/controlplane.sh` builds on first use; a failed build fails these tests (with the reason), never skips them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use isoflop_kube_harness::{AgentOptions, ControlPlane, NodeAgent, NodeSpec, controlplane_bin_dir};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use serde_json::json;

const NS: &str = "e2e";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Polls `f` every 200 ms until it returns Some, panicking with `what` after `timeout`.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn job_pod(pods: &Api<Pod>, job: &str) -> Option<Pod> {
    pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await.ok()?.items.into_iter().next()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn terminated(p: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStateTerminated> {
    p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.terminated.clone()
}

fn print_status(label: &str, p: &Pod) {
    println!(
        "--- {label}: pod {} status:\n{}",
        p.metadata.name.as_deref().unwrap_or(""),
        serde_json::to_string_pretty(&p.status).unwrap()
    );
}

fn job(name: &str, script: &str, gpus: u32, node: Option<&str>) -> Job {
    let mut spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 10,
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script],
            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}],
    });
    if let Some(n) = node {
        spec["nodeSelector"] = json!({"kubernetes.io/hostname": n});
    }
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": spec}},
    }))
    .unwrap()
}

fn pod(name: &str, script: &str, gpus: u32) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 10,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script],
                "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_run_on_the_fake_nodes_of_a_real_control_plane() {
    let _ = tracing_subscriber::fmt().with_env_filter("isoflop_kube_harness=info").with_test_writer().try_init();
    let bin = controlplane_bin_dir(&repo_root()).unwrap_or_else(|e| panic!("the control plane is required: {e}"));
    let work = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let cp = ControlPlane::start(&bin, work.path()).await.unwrap_or_else(|e| panic!("control plane: {e}"));
    println!("TIMING control plane ready in {:.1} s (logs in {})", t0.elapsed().as_secs_f64(), cp.log_dir().display());
    let t = Instant::now();
    cp.create_namespace(NS).await.unwrap();
    println!("TIMING namespace {NS} with its default ServiceAccount in {:.1} s", t.elapsed().as_secs_f64());

    let client = cp.client();
    let log_dir = work.path().join("pod-logs");
    let data_dir = work.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let opts = AgentOptions {
        log_dir: log_dir.clone(),
        volume_dirs: [("data".to_string(), data_dir.clone())].into(),
        commands: [("shell".to_string(), PathBuf::from("/bin/sh"))].into(),
        env: vec![("FROM_AGENT".into(), "yes".into())],
        kubelet_tls: Some(cp.kubelet_tls()),
        api_server: None,
    };
    let agent = NodeAgent::start(client.clone(), &[NodeSpec::gpu("gpu-1a", 1)], opts).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    let minute = Duration::from_secs(60);

    // (1) A Job whose pod needs a Secret that does not exist yet, then fails with exit code 3.
    let mut j = job("fail3", "echo hi; echo \"greeting=$GREETING\"; exit 3", 1, None);
    j.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].env = Some(
        serde_json::from_value(json!([{"name": "GREETING", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "greeting"}}}]))
            .unwrap(),
    );
    jobs.create(&pp, &j).await.unwrap();
    let waiting = wait_for("fail3's pod waiting for its Secret", minute, || async {
        let p = job_pod(&pods, "fail3").await?;
        let w = p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.clone()?;
        (w.reason.as_deref() == Some("CreateContainerConfigError")).then_some(p)
    })
    .await;
    print_status("(1a) Secret missing", &waiting);
    assert_eq!(phase(&waiting), "Pending");
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s1"}, "stringData": {"greeting": "hello"}})).unwrap();
    Api::<Secret>::namespaced(client.clone(), NS).create(&pp, &secret).await.unwrap();
    let failed =
        wait_for("fail3's pod Failed", minute, || async { job_pod(&pods, "fail3").await.filter(|p| phase(p) == "Failed") }).await;
    print_status("(1b) exit 3", &failed);
    let term = terminated(&failed).unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (3, Some("Error")));
    assert_eq!(failed.spec.as_ref().unwrap().node_name.as_deref(), Some("gpu-1a"));
    let job_failed = wait_for("Job fail3 Failed", minute, || async {
        let j = jobs.get("fail3").await.ok()?;
        let conds = j.status.as_ref()?.conditions.clone()?;
        conds.iter().any(|c| c.type_ == "Failed" && c.status == "True").then_some(j)
    })
    .await;
    println!("--- (1c) Job fail3 status:\n{}", serde_json::to_string_pretty(&job_failed.status).unwrap());
    let log =
        std::fs::read_to_string(log_dir.join(format!("{NS}_{}_main.log", failed.metadata.name.as_deref().unwrap()))).unwrap();
    assert!(log.contains("hi\n") && log.contains("greeting=hello"), "log: {log:?}");
    // (1d) pods/log through the apiserver, which proxies to the agent's kubelet endpoint: the pod has finished, its
    // logs stay readable until it is deleted.
    let fail3_pod = failed.metadata.name.clone().unwrap();
    let t = Instant::now();
    let api_log = pods.logs(&fail3_pod, &LogParams::default()).await.unwrap();
    println!("TIMING pods/log of a finished pod through the apiserver in {:.3} s", t.elapsed().as_secs_f64());
    assert_eq!(api_log, log);
    let tail = LogParams { container: Some("main".into()), tail_lines: Some(1), ..LogParams::default() };
    assert_eq!(pods.logs(&fail3_pod, &tail).await.unwrap(), "greeting=hello\n");
    let limited = LogParams { limit_bytes: Some(2), ..LogParams::default() };
    assert_eq!(pods.logs(&fail3_pod, &limited).await.unwrap(), "hi");
    let followed = LogParams { follow: true, ..LogParams::default() };
    assert_eq!(pods.logs(&fail3_pod, &followed).await.unwrap(), log, "follow=true is served as a plain read");
    let node_port = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()).get("gpu-1a").await.unwrap().status.unwrap();
    let port = node_port.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port;
    assert_ne!(port, 10250, "the Node names the agent's own kubelet port");

    // (2) Two GPUs do not fit on one-GPU nodes until a two-GPU node joins.
    pods.create(&pp, &pod("big", "echo big; exit 0", 2)).await.unwrap();
    let unschedulable = wait_for("pod big Unschedulable", minute, || async {
        let p = pods.get("big").await.ok()?;
        let c = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled")?.clone();
        (c.status == "False" && c.reason.as_deref() == Some("Unschedulable")).then_some((p, c))
    })
    .await;
    print_status("(2a) 2 GPUs on 1-GPU nodes", &unschedulable.0);
    assert!(unschedulable.1.message.as_deref().unwrap_or("").contains("nvidia.com/gpu"), "{:?}", unschedulable.1);
    let t = Instant::now();
    agent.add_node(&NodeSpec::gpu("gpu-2a", 2)).await.unwrap();
    let done =
        wait_for("pod big Succeeded", minute, || async { pods.get("big").await.ok().filter(|p| phase(p) == "Succeeded") }).await;
    println!("TIMING add_node to the waiting pod Succeeded in {:.1} s", t.elapsed().as_secs_f64());
    print_status("(2b) after add_node", &done);
    assert_eq!(done.spec.as_ref().unwrap().node_name.as_deref(), Some("gpu-2a"));
    let term = terminated(&done).unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (0, Some("Completed")));

    // (3) The OOM killer.
    let t = Instant::now();
    pods.create(&pp, &pod("oom", "echo started; sleep 1000", 1)).await.unwrap();
    let running =
        wait_for("pod oom Running", minute, || async { pods.get("oom").await.ok().filter(|p| phase(p) == "Running") }).await;
    println!("TIMING pod create to Running (status written) in {:.2} s", t.elapsed().as_secs_f64());
    print_status("(3a) running", &running);
    assert!(agent.running().iter().any(|(ns, n, _)| ns == NS && n == "oom"), "{:?}", agent.running());
    // pods/log of a running pod.
    let lp = LogParams::default();
    wait_for("pods/log of running pod oom", minute, || async { pods.logs("oom", &lp).await.ok().filter(|l| l == "started\n") })
        .await;
    agent.oom_kill(NS, "oom").await.unwrap();
    let oom = wait_for("pod oom Failed", minute, || async { pods.get("oom").await.ok().filter(|p| phase(p) == "Failed") }).await;
    print_status("(3b) oom_kill", &oom);
    let term = terminated(&oom).unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (137, Some("OOMKilled")));

    // (4) Deleting a Job (Background propagation) SIGTERMs its pod's processes and the pod disappears.
    let t = Instant::now();
    jobs.create(&pp, &job("term", "trap 'echo TERM; exit 0' TERM; sleep 1000 & wait", 1, None)).await.unwrap();
    let running =
        wait_for("Job term's pod Running", minute, || async { job_pod(&pods, "term").await.filter(|p| phase(p) == "Running") })
            .await;
    println!("TIMING Job create to its pod Running (status written) in {:.2} s", t.elapsed().as_secs_f64());
    let term_pod = running.metadata.name.clone().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // let sh install its trap
    let t = Instant::now();
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
    jobs.delete("term", &dp).await.unwrap();
    wait_for("Job term's pod gone", minute, || async {
        pods.get_opt(&term_pod).await.ok().and_then(|p| p.is_none().then_some(()))
    })
    .await;
    println!("TIMING Job delete (Background) to its pod gone in {:.1} s", t.elapsed().as_secs_f64());
    let log = std::fs::read_to_string(log_dir.join(format!("{NS}_{term_pod}_main.log"))).unwrap();
    assert!(log.contains("TERM"), "the process saw no SIGTERM: {log:?}");
    assert!(!agent.running().iter().any(|(_, n, _)| n == &term_pod));

    // (4b) A process that ignores SIGTERM is SIGKILLed when the deletion grace period runs out.
    pods.create(&pp, &pod("stubborn", "trap '' TERM; sleep 1000", 1)).await.unwrap();
    wait_for("pod stubborn Running", minute, || async { pods.get("stubborn").await.ok().filter(|p| phase(p) == "Running") })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    pods.delete("stubborn", &DeleteParams { grace_period_seconds: Some(2), ..DeleteParams::default() }).await.unwrap();
    wait_for("pod stubborn gone", minute, || async {
        pods.get_opt("stubborn").await.ok().and_then(|p| p.is_none().then_some(()))
    })
    .await;
    let took = t.elapsed().as_secs_f64();
    println!("TIMING delete (grace 2 s) of a pod ignoring SIGTERM to the pod gone in {took:.1} s");
    assert!((1.8..10.0).contains(&took), "{took}");
    assert!(!agent.running().iter().any(|(_, n, _)| n == "stubborn"));

    // (6) PVCs map to local directories, mounted elsewhere in a mount namespace of the pod's own; command[0] can be
    // remapped.
    let t = Instant::now();
    cp.create_local_pvc(NS, "data", &data_dir).await.unwrap();
    println!("TIMING create_local_pvc Bound in {:.1} s", t.elapsed().as_secs_f64());
    let vol_pod = |name: &str, mount: &Path| -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
                "containers": [{"name": "main", "image": "busybox",
                    "command": ["shell", "-c", format!("echo $FROM_AGENT $POD_NODE > {}/out", mount.display())],
                    "env": [{"name": "POD_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    "volumeMounts": [{"name": "d", "mountPath": mount.display().to_string()}]}]},
        }))
        .unwrap()
    };
    pods.create(&pp, &vol_pod("vol-ok", &data_dir)).await.unwrap();
    let ok =
        wait_for("pod vol-ok Succeeded", minute, || async { pods.get("vol-ok").await.ok().filter(|p| phase(p) == "Succeeded") })
            .await;
    let node = ok.spec.as_ref().unwrap().node_name.clone().unwrap();
    assert_eq!(std::fs::read_to_string(data_dir.join("out")).unwrap(), format!("yes {node}\n"));
    std::fs::remove_file(data_dir.join("out")).unwrap();
    let elsewhere = Path::new("/mnt/isoflop-harness-data");
    pods.create(&pp, &vol_pod("vol-elsewhere", elsewhere)).await.unwrap();
    wait_for("pod vol-elsewhere Succeeded", minute, || async {
        pods.get("vol-elsewhere").await.ok().filter(|p| phase(p) == "Succeeded")
    })
    .await;
    assert!(std::fs::read_to_string(data_dir.join("out")).unwrap().starts_with("yes "), "written through the mount");
    assert!(!elsewhere.exists(), "the mount point exists only in the pod's namespace");

    // (5) A machine dies with a running Job pod.
    agent.add_node(&NodeSpec::gpu("doomed", 1)).await.unwrap();
    jobs.create(&pp, &job("orphan", "sleep 1000", 1, Some("doomed"))).await.unwrap();
    let running = wait_for("Job orphan's pod Running", minute, || async {
        job_pod(&pods, "orphan").await.filter(|p| phase(p) == "Running")
    })
    .await;
    let orphan = running.metadata.name.clone().unwrap();
    let t = Instant::now();
    agent.delete_node("doomed").await.unwrap();
    assert!(!agent.running().iter().any(|(_, n, _)| n == &orphan));
    let mut last = String::new();
    let mut failed_at = None;
    let gone_at = loop {
        let elapsed = t.elapsed().as_secs_f64();
        assert!(elapsed < 150.0, "pod {orphan} neither Failed nor deleted {elapsed:.0} s after its node was deleted");
        match pods.get_opt(&orphan).await.unwrap() {
            None => break elapsed,
            Some(p) => {
                let now =
                    serde_json::to_string(&(phase(&p), &p.status.as_ref().unwrap().conditions, &p.metadata.deletion_timestamp))
                        .unwrap();
                if now != last {
                    print_status(&format!("(5) {elapsed:.1} s after delete_node"), &p);
                    println!("    deletionTimestamp {:?} finalizers {:?}", p.metadata.deletion_timestamp, p.metadata.finalizers);
                    last = now;
                }
                if phase(&p) == "Failed" && failed_at.is_none() {
                    failed_at = Some(elapsed);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("TIMING delete_node to the pod Failed in {failed_at:?} s, to the pod gone in {gone_at:.1} s");
    assert!(gone_at < 120.0, "pod GC took {gone_at:.1} s");
    let job_status = wait_for("Job orphan Failed", minute, || async {
        let j = jobs.get("orphan").await.ok()?;
        j.status.as_ref()?.conditions.as_ref()?.iter().any(|c| c.type_ == "Failed" && c.status == "True").then_some(j)
    })
    .await;
    println!("--- (5) Job orphan status:\n{}", serde_json::to_string_pretty(&job_status.status).unwrap());
    // The surviving nodes stayed Ready throughout (their Leases are renewed), without taints.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for name in ["gpu-1a", "gpu-2a"] {
        let n = nodes.get(name).await.unwrap();
        let ready = n.status.as_ref().unwrap().conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Ready").unwrap().clone();
        assert_eq!(ready.status, "True", "node {name} after {:.0} s: {ready:?}", t0.elapsed().as_secs_f64());
        assert!(n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_none_or(|t| t.is_empty()), "node {name}: {:?}", n.spec);
    }
    assert!(nodes.get_opt("doomed").await.unwrap().is_none());
    drop(agent);
    drop(cp);
}
