//! The Helm chart (`charts/isoflop`), without a cluster (issue 14, point 6): `helm lint
//! --strict` and `helm template` of every `ci/*.yaml` variant, then assertions on what they
//! render: the Role is exactly the executor's calls (`isoflop_k8s::rbac::RULES`) and nothing is
//! cluster-wide, the Deployment is one replica with the Recreate strategy, the security
//! contexts, workers without an API token, the serve config the coordinator itself accepts
//! (`ServeConfig::parse`), and the schema refusing wrong values by key.
//!
//! helm v4 is built from its Go module by `scripts/helm.sh` (cached by version). Every check
//! is counted; the test prints `chart: N passed, N failed` and fails when any failed.
//! `scripts/test.sh` runs it in a phase of its own, so that the line shows in CI.

mod common;

use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    common::repo_root()
}

fn chart() -> PathBuf {
    root().join("charts/isoflop")
}

fn variants() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 4, "expected the ci/ variants (defaults, existing claim and secret, Kueue, PostgreSQL): {v:?}");
    // The values files docs/deploy.md installs with.
    for cloud in ["gke", "eks"] {
        v.push(root().join(format!("deploy/examples/values-{cloud}.yaml")));
    }
    v
}

/// `helm template` of the chart with `args`; the documents, or helm's error.
fn template(helm: &Path, args: &[&str]) -> Result<Vec<Value>, String> {
    let out = Command::new(helm)
        .args(["template", "rel", chart().to_str().unwrap(), "--namespace", "isoflop"])
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let mut docs = Vec::new();
    for d in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(d).map_err(|e| format!("rendered YAML does not parse: {e}\n{text}"))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn kind_of(d: &Value) -> &str {
    d["kind"].as_str().unwrap_or_default()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| kind_of(d) == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_sequence().map(|s| s.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// Counts checks and remembers what failed.
#[derive(Default)]
struct Checks {
    passed: usize,
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, what: impl Into<String>, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed.push(what.into());
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        let ok = got == want;
        self.check(format!("{what}: got {got:?}, want {want:?}"), ok);
    }
}

/// The Role the executor needs, as rendered for a release whose ConfigMap is `owner`.
fn expected_rules(owner: &str) -> BTreeSet<(String, String, BTreeSet<String>, BTreeSet<String>)> {
    isoflop_k8s::rbac::RULES
        .iter()
        .map(|r| {
            let names = if r.owner_only { BTreeSet::from([owner.to_string()]) } else { BTreeSet::new() };
            (r.api_group.to_string(), r.resource.to_string(), r.verbs.iter().map(|v| v.to_string()).collect(), names)
        })
        .collect()
}

fn rendered_rules(role: &Value) -> BTreeSet<(String, String, BTreeSet<String>, BTreeSet<String>)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_sequence().unwrap() {
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                out.insert((g.clone(), r, strings(&rule["verbs"]), strings(&rule["resourceNames"])));
            }
        }
    }
    out
}

/// The rendered serve config, checked by the coordinator's own parser (its admin token file
/// pointed at a real file).
fn serve_config_accepted(docs: &[Value]) -> Result<isoflop_server::LoadedConfig, String> {
    let cm = one(docs, "ConfigMap");
    let text = cm["data"]["serve.yaml"].as_str().ok_or("no serve.yaml in the ConfigMap")?;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
    let mut v: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    v["admin_token_file"] = Value::String(dir.path().join("token").display().to_string());
    // The database URL comes from the environment the Deployment gives the pod (checked there).
    if let Some(var) = v["store"]["postgres"]["url_env"].as_str() {
        if var != "ISOFLOP_DATABASE_URL" {
            return Err(format!("store.postgres.url_env is {var}, not the pod's ISOFLOP_DATABASE_URL"));
        }
        v["store"]["postgres"] = serde_yaml::from_str("{url: 'postgres://isoflop@db.example/isoflop'}").unwrap();
    }
    let file = dir.path().join("serve.yaml");
    isoflop_server::ServeConfig::parse(&file, &serde_yaml::to_string(&v).unwrap()).map_err(|e| e.to_string())
}

#[test]
fn chart_lints_renders_and_refuses_bad_values() {
    let helm = common::helm_bin();
    let mut c = Checks::default();

    for v in variants() {
        let name = v.file_name().unwrap().to_string_lossy().into_owned();
        let f = v.to_str().unwrap();
        let lint = Command::new(&helm).args(["lint", "--strict", chart().to_str().unwrap(), "-f", f]).output().unwrap();
        c.check(format!("{name}: helm lint --strict: {}", String::from_utf8_lossy(&lint.stdout)), lint.status.success());
        let docs = match template(&helm, &["-f", f]) {
            Ok(d) => d,
            Err(e) => {
                c.check(format!("{name}: helm template: {e}"), false);
                continue;
            }
        };
        c.check(format!("{name}: renders"), !docs.is_empty());
        let values: Value = serde_yaml::from_str(&std::fs::read_to_string(&v).unwrap()).unwrap();

        // Nothing cluster-wide; everything in the release's namespace.
        for d in &docs {
            let k = kind_of(d);
            c.check(format!("{name}: {k} is namespaced"), !k.starts_with("Cluster"));
            c.eq(&format!("{name}: {k} namespace"), d["metadata"]["namespace"].as_str(), Some("isoflop"));
        }

        // RBAC: exactly the executor's rules, bound to the coordinator's ServiceAccount.
        let role = one(&docs, "Role");
        c.eq(&format!("{name}: Role rules"), rendered_rules(role), expected_rules("rel-isoflop"));
        let binding = one(&docs, "RoleBinding");
        c.eq(&format!("{name}: RoleBinding roleRef kind"), binding["roleRef"]["kind"].as_str(), Some("Role"));
        let sa_name = values["serviceAccount"]["name"].as_str().unwrap_or("rel-isoflop");
        c.eq(&format!("{name}: RoleBinding subject"), binding["subjects"][0]["name"].as_str(), Some(sa_name));

        // The Deployment: one replica, Recreate, locked down.
        let dep = one(&docs, "Deployment");
        c.eq(&format!("{name}: replicas"), dep["spec"]["replicas"].as_i64(), Some(1));
        c.eq(&format!("{name}: strategy"), dep["spec"]["strategy"]["type"].as_str(), Some("Recreate"));
        let pod = &dep["spec"]["template"]["spec"];
        c.eq(&format!("{name}: pod serviceAccountName"), pod["serviceAccountName"].as_str(), Some(sa_name));
        c.eq(&format!("{name}: runAsNonRoot"), pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        let ctr = &pod["containers"][0];
        let sc = &ctr["securityContext"];
        c.eq(&format!("{name}: readOnlyRootFilesystem"), sc["readOnlyRootFilesystem"].as_bool(), Some(true));
        c.eq(&format!("{name}: allowPrivilegeEscalation"), sc["allowPrivilegeEscalation"].as_bool(), Some(false));
        c.eq(&format!("{name}: privileged"), sc["privileged"].as_bool(), Some(false));
        c.check(format!("{name}: capabilities drop ALL"), strings(&sc["capabilities"]["drop"]).contains("ALL"));
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")] {
            c.eq(&format!("{name}: {probe}"), ctr[probe]["httpGet"]["path"].as_str(), Some(path));
            c.eq(&format!("{name}: {probe} port"), ctr[probe]["httpGet"]["port"].as_str(), Some("http"));
        }
        let service = one(&docs, "Service");
        let ports: BTreeSet<String> =
            service["spec"]["ports"].as_sequence().unwrap().iter().filter_map(|p| p["name"].as_str().map(String::from)).collect();
        c.eq(&format!("{name}: Service ports"), ports, BTreeSet::from(["grpc".to_string(), "http".to_string()]));
        c.check(format!("{name}: no ServiceMonitor unless asked"), !docs.iter().any(|d| kind_of(d) == "ServiceMonitor"));
        c.check(format!("{name}: resources"), ctr["resources"]["requests"].is_mapping());
        let claim = values["persistence"]["existingClaim"].as_str().unwrap_or("rel-isoflop-store").to_string();
        let claims: BTreeSet<String> = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str().map(String::from))
            .collect();
        c.check(format!("{name}: the store's claim {claim} is mounted ({claims:?})"), claims.contains(&claim));
        let pvcs = docs.iter().filter(|d| kind_of(d) == "PersistentVolumeClaim").count();
        c.eq(&format!("{name}: claims created"), pvcs, usize::from(values["persistence"]["existingClaim"].is_null()));
        let secrets = docs.iter().filter(|d| kind_of(d) == "Secret").count();
        c.eq(&format!("{name}: admin Secrets created"), secrets, usize::from(values["adminToken"]["existingSecret"].is_null()));

        // Workers: their own ServiceAccount, no API token.
        let worker_sa =
            docs.iter().find(|d| kind_of(d) == "ServiceAccount" && d["metadata"]["name"].as_str() == Some("rel-isoflop-worker"));
        c.check(
            format!("{name}: the workers' ServiceAccount mounts no token"),
            worker_sa.is_some_and(|s| s["automountServiceAccountToken"].as_bool() == Some(false)),
        );

        // The serve config: accepted by the coordinator, and what the values asked for.
        match serve_config_accepted(&docs) {
            Err(e) => c.check(format!("{name}: the coordinator refuses the rendered serve config: {e}"), false),
            Ok(cfg) => {
                let isoflop_core::spec::ExecutorSpec::Kubernetes(k) = &cfg.config.executor else {
                    c.check(format!("{name}: executor kind"), false);
                    continue;
                };
                c.eq(&format!("{name}: executor namespace"), k.namespace.as_str(), "isoflop");
                c.eq(&format!("{name}: http_listen"), cfg.config.http_listen.as_deref(), Some("0.0.0.0:7701"));
                c.eq(&format!("{name}: owner"), k.owner_config_map.as_deref(), Some("rel-isoflop"));
                c.eq(&format!("{name}: worker service account"), k.service_account.as_deref(), Some("rel-isoflop-worker"));
                c.eq(&format!("{name}: coordinator_url"), k.coordinator_url.as_str(), "http://rel-isoflop.isoflop.svc:7700");
                c.eq(&format!("{name}: kueue"), k.kueue_queue.as_deref(), values["workers"]["kueueQueue"].as_str());
                let pg = values["store"]["kind"].as_str() == Some("postgres");
                c.eq(&format!("{name}: store backend"), matches!(cfg.store, isoflop_core::spec::StoreLocation::Postgres(_)), pg);
                let env =
                    strings(&Value::Sequence(ctr["env"].as_sequence().unwrap().iter().map(|e| e["name"].clone()).collect()));
                c.eq(&format!("{name}: database URL from a Secret"), env.contains("ISOFLOP_DATABASE_URL"), pg);
            }
        }
    }

    // A ServiceMonitor when asked, scraping the Service's http port.
    let docs = template(&helm, &["--set", "metrics.serviceMonitor.enabled=true"]).unwrap();
    let sm = one(&docs, "ServiceMonitor");
    c.eq("ServiceMonitor port", sm["spec"]["endpoints"][0]["port"].as_str(), Some("http"));
    c.eq("ServiceMonitor path", sm["spec"]["endpoints"][0]["path"].as_str(), Some("/metrics"));

    // The claim outlives `helm uninstall` unless asked.
    for (args, keep) in [(vec![], true), (vec!["--set", "persistence.keepOnUninstall=false"], false)] {
        let docs = template(&helm, &args).unwrap();
        let pvc = one(&docs, "PersistentVolumeClaim");
        let policy = pvc["metadata"]["annotations"]["helm.sh/resource-policy"].as_str();
        c.eq(&format!("claim kept ({args:?})"), policy, keep.then_some("keep"));
    }

    // The schema refuses wrong values at install, naming the key.
    for (set, key) in [
        ("workers.gpusPerRun=-1", "/workers/gpusPerRun"),
        ("workers.gpus=1", "/workers"),
        ("coordinator.port=70000", "/coordinator/port"),
        ("coordinator.securityContext.readOnlyRootFilesystem=false", "/coordinator/securityContext/readOnlyRootFilesystem"),
        ("coordinator.podSecurityContext.runAsNonRoot=false", "/coordinator/podSecurityContext/runAsNonRoot"),
        ("store.kind=mysql", "/store/kind"),
        ("store.kind=postgres", "/store/postgres/existingSecret"),
        ("workers.memory=lots", "/workers/memory"),
        ("workers.kueueQueue=Not_A_Label", "/workers/kueueQueue"),
        ("persistence.mountPath=ckpt", "/persistence/mountPath"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ] {
        match template(&helm, &["--set", set]) {
            Ok(_) => c.check(format!("--set {set} is refused"), false),
            Err(e) => c.check(format!("--set {set}: the error names {key}: {e}"), e.contains(&format!("'{key}'"))),
        }
    }

    eprintln!("chart: {} passed, {} failed", c.passed, c.failed.len());
    assert!(c.failed.is_empty(), "chart checks failed:\n{}", c.failed.join("\n"));
}
