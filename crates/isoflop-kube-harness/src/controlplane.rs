//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local processes on loopback.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::{HarnessError, KubeletTls, certs, io_err};

/// How long [`ControlPlane::start`] waits for the components before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(90);

struct Component {
    name: &'static str,
    child: Child,
}

/// A running control plane. Dropping it kills every component's process group, in reverse start order.
pub struct ControlPlane {
    components: Vec<Component>,
    kubeconfig: PathBuf,
    log_dir: PathBuf,
    client: Client,
    kubelet_tls: KubeletTls,
    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub server: String,
}

/// `N` distinct free loopback ports below the kernel's ephemeral range: a port the kernel
/// handed out for `bind(0)` and that was released can be taken again, before the component
/// that is to listen on it starts, by an outgoing connection of another (a flaky "address
/// already in use" of kube-scheduler, the last to start); ports outside that range never are.
fn free_ports<const N: usize>() -> Result<[u16; N], HarnessError> {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (from, span) = (10_000u32, u32::from(low.max(10_100)) - 10_000);
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u32) | 1;
    let mut held = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    let mut tries = 0;
    while held.len() < N {
        tries += 1;
        if tries > 10_000 {
            return Err(HarnessError::ControlPlane(format!("no {N} free loopback ports below {low}")));
        }
        // xorshift: a different sequence per process start.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let port = (from + seed % span) as u16;
        if ports.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            ports[held.len()] = port;
            held.push(l);
        }
    }
    Ok(ports)
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler from `bin_dir` on free loopback ports,
    /// with certificates, etcd data and logs (`<component>.log`) under `work_dir`. Returns once `/readyz` is ok, the
    /// `default` ServiceAccount exists in namespace `default` and all four processes are running.
    pub async fn start(bin_dir: &Path, work_dir: &Path) -> Result<ControlPlane, HarnessError> {
        let started = Instant::now();
        let log_dir = work_dir.join("logs");
        for d in [&log_dir, &work_dir.join("etcd"), &work_dir.join("apiserver-certs")] {
            std::fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        for b in crate::CONTROLPLANE_BINARIES {
            if !bin_dir.join(b).is_file() {
                return Err(HarnessError::ControlPlane(format!("{} is missing", bin_dir.join(b).display())));
            }
        }
        let pki = certs::generate(&work_dir.join("pki"))?;
        let [etcd_port, peer_port, api_port, kcm_port, sched_port] = free_ports::<5>()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = work_dir.join("admin.kubeconfig");
        let kc_text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: isoflop-test\n  cluster:\n    server: {server}\n    \
             certificate-authority: {ca}\nusers:\n- name: isoflop-admin\n  user:\n    client-certificate: {cert}\n    \
             client-key: {key}\ncontexts:\n- name: isoflop-test\n  context:\n    cluster: isoflop-test\n    \
             user: isoflop-admin\n    namespace: default\ncurrent-context: isoflop-test\n",
            ca = p(&pki.ca_cert),
            cert = p(&pki.admin_cert),
            key = p(&pki.admin_key),
        );
        std::fs::write(&kubeconfig, kc_text).map_err(io_err(format!("writing {}", kubeconfig.display())))?;

        let mut cp = ControlPlane {
            components: Vec::new(),
            kubeconfig: kubeconfig.clone(),
            log_dir: log_dir.clone(),
            client: client_from(&kubeconfig).await?,
            server: server.clone(),
            kubelet_tls: pki.kubelet.clone(),
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        cp.spawn(
            bin_dir,
            "etcd",
            &[
                "--name=default".into(),
                format!("--data-dir={}", p(&work_dir.join("etcd"))),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        cp.spawn(
            bin_dir,
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                // Loopback may not be published as the `kubernetes` Service endpoint; nothing here needs it.
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", p(&work_dir.join("apiserver-certs"))),
                format!("--tls-cert-file={}", p(&pki.server_cert)),
                format!("--tls-private-key-file={}", p(&pki.server_key)),
                format!("--client-ca-file={}", p(&pki.ca_cert)),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", p(&pki.sa_pub)),
                format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=RBAC".into(),
                // pods/log, exec, ...: HTTPS to the node's InternalIP (the agent's Hostname address does not resolve).
                format!("--kubelet-client-certificate={}", p(&pki.kubelet_client_cert)),
                format!("--kubelet-client-key={}", p(&pki.kubelet_client_key)),
                format!("--kubelet-certificate-authority={}", p(&pki.ca_cert)),
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--enable-priority-and-fairness=false".into(),
                "--profiling=false".into(),
                "--v=0".into(),
            ],
        )?;
        cp.wait_ready(started).await?;
        cp.spawn(
            bin_dir,
            "kube-controller-manager",
            &[
                format!("--kubeconfig={}", p(&kubeconfig)),
                format!("--authentication-kubeconfig={}", p(&kubeconfig)),
                format!("--authorization-kubeconfig={}", p(&kubeconfig)),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                format!("--service-account-private-key-file={}", p(&pki.sa_key)),
                format!("--root-ca-file={}", p(&pki.ca_cert)),
                format!("--cluster-signing-cert-file={}", p(&pki.ca_cert)),
                format!("--cluster-signing-key-file={}", p(&pki.ca_key)),
                "--use-service-account-credentials=false".into(),
                "--profiling=false".into(),
                "--v=0".into(),
            ],
        )?;
        cp.spawn(
            bin_dir,
            "kube-scheduler",
            &[
                format!("--kubeconfig={}", p(&kubeconfig)),
                format!("--authentication-kubeconfig={}", p(&kubeconfig)),
                format!("--authorization-kubeconfig={}", p(&kubeconfig)),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={sched_port}"),
                "--profiling=false".into(),
                "--v=0".into(),
            ],
        )?;
        cp.wait_service_account("default", started).await?;
        // The controller manager and the scheduler are serving (they open their ports once their informers run).
        for (name, port) in [("kube-controller-manager", kcm_port), ("kube-scheduler", sched_port)] {
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                cp.check_alive()?;
                if started.elapsed() > START_TIMEOUT {
                    return Err(HarnessError::Timeout(format!("{name} not serving on port {port} after {START_TIMEOUT:?}")));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        cp.check_alive()?;
        tracing::info!("control plane ready at {server} in {:.1} s", started.elapsed().as_secs_f64());
        Ok(cp)
    }

    fn spawn(&mut self, bin_dir: &Path, name: &'static str, args: &[String]) -> Result<(), HarnessError> {
        let log = self.log_dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io_err("cloning a log file handle"))?;
        let child = Command::new(bin_dir.join(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(io_err(format!("starting {}", bin_dir.join(name).display())))?;
        self.components.push(Component { name, child });
        Ok(())
    }

    /// An error naming the first component that has exited, with the tail of its log.
    fn check_alive(&mut self) -> Result<(), HarnessError> {
        for c in &mut self.components {
            if let Ok(Some(status)) = c.child.try_wait() {
                let log = self.log_dir.join(format!("{}.log", c.name));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                // Errors (klog E/F lines, cobra's "Error:"), else the last lines.
                let lines: Vec<&str> = text.lines().collect();
                let errors: Vec<&str> = lines
                    .iter()
                    .copied()
                    .filter(|l| {
                        l.starts_with('E') || l.starts_with('F') || l.starts_with("Error") || l.contains("\"level\":\"fatal")
                    })
                    .collect();
                let chosen = if errors.is_empty() { &lines[..] } else { &errors[..] };
                let tail = chosen[chosen.len().saturating_sub(30)..].join("\n");
                return Err(HarnessError::ControlPlane(format!(
                    "{} exited with {status}; last lines of {}:\n{tail}",
                    c.name,
                    log.display()
                )));
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self, started: Instant) -> Result<(), HarnessError> {
        loop {
            self.check_alive()?;
            let req = http::Request::get("/readyz").body(Vec::new()).map_err(|e| HarnessError::ControlPlane(e.to_string()))?;
            let last = match self.client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            if started.elapsed() > START_TIMEOUT {
                return Err(HarnessError::Timeout(format!("kube-apiserver /readyz not ok after {START_TIMEOUT:?}: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_service_account(&mut self, namespace: &str, started: Instant) -> Result<(), HarnessError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        loop {
            self.check_alive()?;
            if let Ok(Some(_)) = api.get_opt("default").await {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(HarnessError::Timeout(format!(
                    "ServiceAccount {namespace}/default not created by kube-controller-manager after {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A kubeconfig file with the admin client certificate (group `system:masters`), for other processes (`KUBECONFIG`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client authenticated as the admin.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The node agent's kubelet serving certificate (IP SAN 127.0.0.1) and the cluster CA, which the apiserver
    /// trusts for kubelets and which signed the apiserver's kubelet client certificate: pass it as
    /// [`crate::AgentOptions::kubelet_tls`] so that `pods/log` works.
    pub fn kubelet_tls(&self) -> KubeletTls {
        self.kubelet_tls.clone()
    }

    /// Where `etcd.log`, `kube-apiserver.log`, `kube-controller-manager.log` and `kube-scheduler.log` are written.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Creates namespace `name` and waits until its `default` ServiceAccount exists (pods are rejected before that).
    pub async fn create_namespace(&self, name: &str) -> Result<(), HarnessError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .map_err(|e| HarnessError::ControlPlane(e.to_string()))?;
        api.create(&PostParams::default(), &ns).await?;
        let sa: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
        let deadline = Instant::now() + Duration::from_secs(30);
        while sa.get_opt("default").await?.is_none() {
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(format!("ServiceAccount {name}/default not created within 30 s")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

impl ControlPlane {
    /// Creates PersistentVolumeClaim `claim` in `namespace`, pre-bound to a new hostPath PersistentVolume on `dir`
    /// (ReadWriteMany, 1Gi, no storage class), and waits until the persistentvolume-binder controller has bound them.
    /// The scheduler only binds pods whose claims are Bound; give the node agent the same claim -> `dir` mapping in
    /// [`crate::AgentOptions::volume_dirs`] and mount it at `dir`.
    pub async fn create_local_pvc(&self, namespace: &str, claim: &str, dir: &Path) -> Result<(), HarnessError> {
        let pv_name = format!("{namespace}-{claim}");
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": pv_name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": p(dir)},
                "claimRef": {"namespace": namespace, "name": claim}},
        }))
        .map_err(|e| HarnessError::ControlPlane(e.to_string()))?;
        Api::<PersistentVolume>::all(self.client.clone()).create(&PostParams::default(), &pv).await?;
        let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": claim},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv_name,
                "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .map_err(|e| HarnessError::ControlPlane(e.to_string()))?;
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        pvcs.create(&PostParams::default(), &pvc).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let phase = pvcs.get(claim).await?.status.and_then(|s| s.phase);
            if phase.as_deref() == Some("Bound") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(format!("PVC {namespace}/{claim} not Bound within 60 s (phase {phase:?})")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn client_from(kubeconfig: &Path) -> Result<Client, HarnessError> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    config.connect_timeout = Some(Duration::from_secs(5));
    Ok(Client::try_from(config)?)
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for c in self.components.iter_mut().rev() {
            let _ = killpg(Pid::from_raw(c.child.id() as i32), Signal::SIGKILL);
            let _ = c.child.wait();
        }
    }
}
