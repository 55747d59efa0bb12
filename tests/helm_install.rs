//! The Helm chart installed on the test control plane (issue 14, point 7): the real
//! kube-apiserver with RBAC authorisation, helm v4 (`scripts/helm.sh`), and the harness's node
//! agent running the chart's coordinator pod as it runs worker pods, now with the pod's
//! ConfigMap, Secret and service-account token volumes mounted at their paths in a mount
//! namespace of its own and the in-cluster environment set, so that `isoflop serve` talks to
//! the API server as the chart's ServiceAccount, with nothing but the chart's Role.
//!
//! One test, in order: a server-side dry run of the rendered chart, then `helm install`; the
//! tiny sweep submitted through the installed coordinator finishes every run as Jobs owned by
//! the release's ConfigMap; the ServiceAccount's own token cannot read Secrets or touch
//! another namespace; `helm upgrade` keeps the admin token and the store; `helm uninstall`
//! leaves no Job, pod or Secret of the release (a sweep was running) and keeps the claim.

mod common;

use common::{TINY_SWEEP, bin, helm_bin, isoflop, repo_root, show, write_spec};
use isoflop_kube_harness::{AgentOptions, ControlPlane, NodeAgent, NodeSpec, controlplane_bin_dir};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const NS: &str = "isoflop";
const RELEASE: &str = "rel";
const FULLNAME: &str = "rel-isoflop";

struct Env {
    agent: NodeAgent,
    cp: ControlPlane,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    helm: PathBuf,
}

impl Env {
    fn helm(&self, args: &[&str]) -> Output {
        self.helm_in(NS, args)
    }

    /// helm, as the cluster's admin, in namespace `ns`, with its files in the test's directory.
    fn helm_in(&self, ns: &str, args: &[&str]) -> Output {
        Command::new(&self.helm)
            .args(args)
            .args(["--namespace", ns, "--kubeconfig", self.cp.kubeconfig_path().to_str().unwrap()])
            .env("HELM_CACHE_HOME", self.dir.path().join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.path().join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.path().join("helm/data"))
            .output()
            .unwrap()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.cp.client(), NS)
    }

    /// Waits up to `secs` for `f` to say yes, naming `what` if it never does.
    fn until<T>(&self, secs: u64, what: &str, mut f: impl FnMut(&Env) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: not within {secs} s\n{}", self.coordinator_log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The coordinator pod now running (its name), once the agent started its process.
    fn coordinator_pod(&self) -> Option<String> {
        let pods: Api<Pod> = self.api();
        let lp = ListParams::default().labels("app.kubernetes.io/component=coordinator");
        let list = self.rt.block_on(pods.list(&lp)).ok()?;
        let running: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .map(|p| p.name_any())
            .collect();
        (running.len() == 1).then(|| running[0].clone())
    }

    fn coordinator_log(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("pod-logs")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with("_coordinator.log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    out += &format!("--- {name}\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
                }
            }
        }
        for ns in [NS, "other"] {
            let pods: Api<Pod> = Api::namespaced(self.cp.client(), ns);
            for p in self.rt.block_on(pods.list(&ListParams::default())).map(|l| l.items).unwrap_or_default() {
                let st = p.status.as_ref();
                out += &format!(
                    "pod {ns}/{}: {:?} {:?}\n",
                    p.name_any(),
                    st.and_then(|s| s.phase.clone()),
                    st.and_then(|s| s.container_statuses.clone())
                        .unwrap_or_default()
                        .iter()
                        .map(|c| c.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| (t.exit_code, t.message.clone())))
                        .collect::<Vec<_>>()
                );
                if out.len() > 6000 {
                    break;
                }
            }
        }
        out
    }

    fn admin_token(&self) -> String {
        let secrets: Api<Secret> = self.api();
        let s = self.rt.block_on(secrets.get(&format!("{FULLNAME}-admin"))).unwrap();
        String::from_utf8(s.data.unwrap()["token"].0.clone()).unwrap()
    }

    /// A client that is the ServiceAccount `sa` of the namespace (a token from the TokenRequest API).
    fn client_as(&self, sa: &str) -> Client {
        let sas: Api<ServiceAccount> = self.api();
        let req = TokenRequest {
            spec: Some(TokenRequestSpec { expiration_seconds: Some(600), ..TokenRequestSpec::default() }),
            ..TokenRequest::default()
        };
        let token = self
            .rt
            .block_on(sas.create_token_request(sa, &PostParams::default(), &req))
            .unwrap()
            .status
            .and_then(|s| s.token)
            .unwrap();
        let mut kc = Kubeconfig::read_from(self.cp.kubeconfig_path()).unwrap();
        for u in &mut kc.auth_infos {
            if let Some(a) = u.auth_info.as_mut() {
                a.client_certificate = None;
                a.client_key = None;
                a.token = Some(token.clone().into());
            }
        }
        let config = self.rt.block_on(Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())).unwrap();
        let _runtime = self.rt.enter();
        Client::try_from(config).unwrap()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn is_forbidden<T: std::fmt::Debug>(r: &Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

#[test]
fn the_chart_installs_runs_a_sweep_as_its_service_account_upgrades_and_uninstalls() {
    let t0 = Instant::now();
    let repo = repo_root();
    let helm = helm_bin();
    let bins = controlplane_bin_dir(&repo).unwrap_or_else(|e| panic!("the test control plane is not available: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let store_dir = dir_path.join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let cp = rt.block_on(ControlPlane::start(&bins, &dir_path.join("cluster"))).unwrap();
    rt.block_on(cp.create_namespace(NS)).unwrap();
    rt.block_on(cp.create_namespace("other")).unwrap();
    let corpus = common::corpus().to_path_buf();
    // The data: an existing claim. The store: the chart's own claim, bound to a volume made for it
    // (as a provisioner would), so that uninstall has a claim of the release to keep.
    rt.block_on(cp.create_local_pvc(NS, "isoflop-data", &corpus)).unwrap();
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "isoflop-store"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": store_dir.display().to_string()},
            "claimRef": {"namespace": NS, "name": format!("{FULLNAME}-store")}},
    }))
    .unwrap();
    rt.block_on(Api::<PersistentVolume>::all(cp.client()).create(&PostParams::default(), &pv)).unwrap();
    let opts = AgentOptions {
        volume_dirs: HashMap::from([
            ("isoflop-data".to_string(), corpus.clone()),
            (format!("{FULLNAME}-store"), store_dir.clone()),
            ("store-other".to_string(), dir_path.join("store-other")),
        ]),
        commands: HashMap::from([("isoflop".to_string(), PathBuf::from(bin()))]),
        env: Vec::new(),
        log_dir: dir_path.join("pod-logs"),
        kubelet_tls: Some(cp.kubelet_tls()),
        api_server: Some(cp.server.clone()),
    };
    let nodes = [NodeSpec { gpus: 0, ..NodeSpec::gpu("cpu-1", 0) }, NodeSpec::gpu("gpu-1", 1), NodeSpec::gpu("gpu-2", 1)];
    let agent = rt.block_on(NodeAgent::start(cp.client(), &nodes, opts)).unwrap();
    let env = Env { agent, cp, rt, dir, helm };
    eprintln!("cluster ready in {:.1} s", t0.elapsed().as_secs_f64());

    // The values of a cluster whose pods share this machine's network and paths.
    let port = free_port();
    let http_port = free_port();
    let values = dir_path.join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "image: {{repository: isoflop/coordinator, tag: test}}
coordinator:
  port: {port}
  httpPort: {http_port}
  workerUrl: http://127.0.0.1:{port}
  resources: {{requests: {{cpu: 100m, memory: 256Mi}}}}
persistence:
  mountPath: {store}
  size: 1Gi
  storageClass: \"\"
data:
  existingClaim: isoflop-data
  mountPath: {corpus}
workers:
  image: {{repository: isoflop/worker, tag: test}}
  gpusPerRun: 1
  cpu: \"\"
  memory: \"\"
  shmSize: 64Mi
  threadsPerRun: 1
  tolerations: []
  leaseSeconds: 20
  startGraceSeconds: 60
",
            store = store_dir.display(),
            corpus = corpus.display()
        ),
    )
    .unwrap();
    let chart = repo.join("charts/isoflop");
    let (chart, values) = (chart.to_str().unwrap(), values.to_str().unwrap());

    // A server-side dry run of everything the chart renders, then the install.
    let t = Instant::now();
    let out = env.helm(&["install", RELEASE, chart, "-f", values, "--dry-run=server"]);
    assert!(out.status.success(), "helm install --dry-run=server: {}", show(&out));
    let out = env.helm(&["install", RELEASE, chart, "-f", values]);
    assert!(out.status.success(), "helm install: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("isoflop submit sweep.yaml"), "NOTES.txt: {}", show(&out));
    let pod = env.until(90, "the coordinator pod Running", Env::coordinator_pod);
    env.until(60, "the coordinator listening", |_| std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    eprintln!("helm install to the coordinator listening in {:.1} s (pod {pod})", t.elapsed().as_secs_f64());

    // The coordinator talks to the API server as the chart's ServiceAccount: the pod's token is
    // that account's, and no kubeconfig reaches the pod.
    let pods: Api<Pod> = env.api();
    let p = env.rt.block_on(pods.get(&pod)).unwrap();
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some(FULLNAME));
    assert!(
        spec.volumes.iter().flatten().any(|v| v.projected.as_ref().is_some_and(|p| p
            .sources
            .iter()
            .flatten()
            .any(|s| s.service_account_token.is_some()))),
        "the API server gave the pod a projected token"
    );

    // Without the chart's Role the same coordinator is refused by the API server (it does not
    // reach it as anyone else): a second release, in another namespace, with rbac.create=false.
    let other_store = dir_path.join("store-other");
    std::fs::create_dir_all(&other_store).unwrap();
    env.rt.block_on(env.cp.create_local_pvc("other", "store-other", &other_store)).unwrap();
    env.rt.block_on(env.cp.create_local_pvc("other", "isoflop-data", &corpus)).unwrap_or_else(|e| panic!("{e}"));
    let other_port = free_port().to_string();
    let mount = format!("persistence.mountPath={}", other_store.display());
    let port_value = format!("coordinator.port={other_port},coordinator.httpPort={}", free_port());
    let out = env.helm_in(
        "other",
        &[
            "install",
            "norbac",
            chart,
            "-f",
            values,
            "--set",
            "rbac.create=false",
            "--set",
            "persistence.existingClaim=store-other",
            "--set",
            &mount,
            "--set",
            &port_value,
        ],
    );
    assert!(out.status.success(), "helm install norbac: {}", show(&out));
    let refused = env.until(90, "the coordinator without a Role refused", |e| {
        let log = std::fs::read_dir(e.dir.path().join("pod-logs"))
            .ok()?
            .flatten()
            .find(|f| f.file_name().to_string_lossy().starts_with("other_norbac-isoflop-"))
            .and_then(|f| std::fs::read_to_string(f.path()).ok())?;
        log.contains("forbidden").then_some(log)
    });
    assert!(refused.contains("system:serviceaccount:other:norbac-isoflop"), "refused as its ServiceAccount:\n{refused}");
    let out = env.helm_in("other", &["uninstall", "norbac"]);
    assert!(out.status.success(), "helm uninstall norbac: {}", show(&out));

    // The tiny sweep through the installed coordinator: every run a Job, every Job owned by the
    // release's ConfigMap.
    let token_file = dir_path.join("admin-token");
    std::fs::write(&token_file, env.admin_token()).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let remote = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--coordinator", url.as_str(), "--token-file", token_file.to_str().unwrap()]);
        isoflop(&a)
    };
    let spec_dir = dir_path.join("spec");
    std::fs::create_dir_all(&spec_dir).unwrap();
    let spec = write_spec(&spec_dir, TINY_SWEEP);
    let t = Instant::now();
    let out = remote(&["submit", spec.to_str().unwrap()]);
    assert!(out.status.success(), "submit: {}\n{}", show(&out), env.coordinator_log());
    let out = remote(&["watch", "tiny"]);
    assert!(out.status.success(), "watch: {}\n{}", show(&out), env.coordinator_log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("8/8 done"), "{}", show(&out));
    eprintln!("tiny sweep (4 runs, 4 evaluations) through the chart's coordinator in {:.1} s", t.elapsed().as_secs_f64());
    // Health and metrics on the HTTP port (what the probes and a ServiceMonitor read).
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", http_port)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/readyz").starts_with("HTTP/1.1 200"), "{}", get("/readyz"));
    let scrape = get("/metrics");
    for series in [
        r#"isoflop_jobs{sweep="tiny",state="succeeded",kind="train"} 4"#,
        r#"isoflop_jobs{sweep="tiny",state="succeeded",kind="eval"} 4"#,
        r#"isoflop_kubernetes_api_requests_total{request="POST jobs"}"#,
    ] {
        assert!(scrape.contains(series), "{series} in the scrape:\n{scrape}");
    }
    let cms: Api<ConfigMap> = env.api();
    let owner_uid = env.rt.block_on(cms.get(FULLNAME)).unwrap().uid().unwrap();
    let jobs: Api<Job> = env.api();
    let all =
        env.rt.block_on(jobs.list(&ListParams::default().labels("app.kubernetes.io/managed-by=isoflop-coordinator"))).unwrap();
    assert!(all.items.len() >= 8, "a Job per attempt: {}", all.items.len());
    for j in &all.items {
        let owners = j.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owners.iter().any(|o| o.kind == "ConfigMap" && o.uid == owner_uid),
            "Job {} is owned by {owners:?}",
            j.name_any()
        );
    }

    // Each token Secret is the ConfigMap's until its Job exists, then the Job's alone (the
    // rate-limited patch may land after a fast attempt ended).
    let secrets: Api<Secret> = env.api();
    let selector = ListParams::default().labels("app.kubernetes.io/managed-by=isoflop-coordinator");
    env.until(30, "every worker token owned by its Job", |e| {
        let tokens = e.rt.block_on(secrets.list(&selector)).ok()?.items;
        let by_job = |t: &Secret| t.metadata.owner_references.as_ref().is_some_and(|o| o.len() == 1 && o[0].kind == "Job");
        (!tokens.is_empty() && tokens.iter().all(by_job)).then_some(())
    });

    // Least privilege: the ServiceAccount's own token reads no Secret and touches no other
    // namespace; what the coordinator does is allowed.
    let sa = env.client_as(FULLNAME);
    let own_secrets: Api<Secret> = Api::namespaced(sa.clone(), NS);
    assert!(is_forbidden(&env.rt.block_on(own_secrets.list(&ListParams::default()))), "list secrets is refused");
    assert!(is_forbidden(&env.rt.block_on(own_secrets.get(&format!("{FULLNAME}-admin")))), "get a secret is refused");
    let other_jobs: Api<Job> = Api::namespaced(sa.clone(), "other");
    assert!(is_forbidden(&env.rt.block_on(other_jobs.list(&ListParams::default()))), "another namespace is refused");
    let j = all.items[0].clone();
    let mut copy: Job = serde_json::from_value(serde_json::json!({"metadata": {"name": "stray"}, "spec": j.spec})).unwrap();
    copy.metadata.namespace = Some("other".into());
    assert!(is_forbidden(&env.rt.block_on(other_jobs.create(&PostParams::default(), &copy))), "creating in another namespace");
    let cluster_nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(sa.clone());
    assert!(is_forbidden(&env.rt.block_on(cluster_nodes.list(&ListParams::default()))), "nothing cluster-wide");
    let own_jobs: Api<Job> = Api::namespaced(sa.clone(), NS);
    assert!(env.rt.block_on(own_jobs.list(&ListParams::default())).is_ok(), "its own namespace's Jobs are listed");
    let workers = env.client_as(&format!("{FULLNAME}-worker"));
    let worker_pods: Api<Pod> = Api::namespaced(workers, NS);
    assert!(is_forbidden(&env.rt.block_on(worker_pods.list(&ListParams::default()))), "workers have no Role");

    // Upgrade: a new pod (the config changed), the same admin token and store.
    let token_before = env.admin_token();
    let out = env.helm(&["upgrade", RELEASE, chart, "-f", values, "--set", "workers.maxParallel=4"]);
    assert!(out.status.success(), "helm upgrade: {}", show(&out));
    let new_pod = env.until(90, "a new coordinator pod after the upgrade", |e| e.coordinator_pod().filter(|p| *p != pod));
    env.until(60, "the upgraded coordinator listening", |_| {
        let out = remote(&["status", "tiny"]);
        out.status.success().then_some(out)
    });
    assert_eq!(env.admin_token(), token_before, "the admin token is kept across upgrades");
    let out = remote(&["status", "tiny"]);
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(s.contains("[tiny] 8/8 done"), "the store is kept: {}", show(&out));
    let serve = env.rt.block_on(cms.get(FULLNAME)).unwrap().data.unwrap()["serve.yaml"].clone();
    assert!(serve.contains("max_parallel: 4"), "{serve}");
    eprintln!("upgraded: pod {pod} -> {new_pod}, token and store kept");

    // A sweep running while the release is uninstalled: its Jobs, pods and Secrets go with the
    // release (their owner, the ConfigMap, is deleted); the chart's claim stays.
    let body = TINY_SWEEP.replace("name: tiny", "name: tiny2").replace("budgets: [1.5e9, 3.0e9]", "budgets: [6.0e9, 1.2e10]");
    let spec2_dir = dir_path.join("spec2");
    std::fs::create_dir_all(&spec2_dir).unwrap();
    let spec2 = write_spec(&spec2_dir, &body);
    let out = remote(&["submit", spec2.to_str().unwrap()]);
    assert!(out.status.success(), "submit tiny2: {}", show(&out));
    env.until(60, "a worker pod of tiny2 running", |e| {
        e.agent.running().iter().any(|(_, name, _)| name.starts_with("isoflop-")).then_some(())
    });
    let t = Instant::now();
    let out = env.helm(&["uninstall", RELEASE, "--wait"]);
    assert!(out.status.success(), "helm uninstall: {}", show(&out));
    let deadline = Instant::now() + Duration::from_secs(120);
    let left = loop {
        let names = |l: Vec<String>| l.join(" ");
        let j = env.rt.block_on(jobs.list(&ListParams::default())).unwrap().items;
        let p = env.rt.block_on(pods.list(&ListParams::default())).unwrap().items;
        let s = env.rt.block_on(secrets.list(&ListParams::default())).unwrap().items;
        let running = env.agent.running();
        if j.len() + p.len() + s.len() == 0 && running.is_empty() {
            break (j.len(), p.len(), s.len());
        }
        let seen = format!(
            "Jobs: {}; pods: {}; Secrets: {}; processes: {running:?}",
            names(j.iter().map(|x| x.name_any()).collect()),
            names(p.iter().map(|x| x.name_any()).collect()),
            names(s.iter().map(|x| x.name_any()).collect())
        );
        assert!(Instant::now() < deadline, "left 120 s after helm uninstall: {seen}\n{}", env.coordinator_log());
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("uninstalled: {left:?} Jobs, pods, Secrets left after {:.1} s", t.elapsed().as_secs_f64());
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    assert!(env.rt.block_on(pvcs.get_opt(&format!("{FULLNAME}-store"))).unwrap().is_some(), "the store's claim is kept");
    assert!(store_dir.join("isoflop.db").is_file(), "the store is on the kept claim");
    eprintln!("helm install test in {:.1} s", t0.elapsed().as_secs_f64());
}
