//! A pod's volumes on this machine, as a kubelet would give them: ConfigMap, Secret, projected
//! (service-account token, `kube-root-ca.crt`, downward API), downward API, emptyDir and
//! hostPath volumes written to (or found at) local directories, and PersistentVolumeClaims
//! mapped by [`crate::AgentOptions::volume_dirs`]; then a start script that mounts each at its
//! mount path in a mount namespace of the pod's own, over a root of its own, and runs the
//! container's command there.
//!
//! The pod's root is a tmpfs holding a recursive bind mount of every top-level directory of
//! the machine; a mount path that does not exist gets an overlay on its nearest existing
//! directory (so creating it writes nothing on the machine), or a directory in the tmpfs when
//! it is top-level. Nothing mounted is visible outside the pod's namespace, and the namespace
//! goes when its process does. Needs root (as the agent's other tests do).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, ServiceAccount, Volume};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::agent::Prep;

/// One volume mount that needs the pod's own mount namespace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

fn fatal(msg: impl Into<String>) -> Prep {
    Prep::Fatal(msg.into())
}

fn write_file(dir: &Path, rel: &str, data: &[u8]) -> Result<(), Prep> {
    let rel = Path::new(rel);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(fatal(format!("volume item path {} must be relative, without ..", rel.display())));
    }
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fatal(format!("creating {}: {e}", parent.display())))?;
    }
    std::fs::write(&path, data).map_err(|e| fatal(format!("writing {}: {e}", path.display())))
}

/// Writes `data` (key -> bytes) into `dir`: every key, or only `items` (key -> path).
fn write_keys(dir: &Path, data: &BTreeMap<String, Vec<u8>>, items: Option<&Vec<KeyToPath>>, what: &str) -> Result<(), Prep> {
    match items {
        None => data.iter().try_for_each(|(k, v)| write_file(dir, k, v)),
        Some(items) => items.iter().try_for_each(|i| match data.get(&i.key) {
            Some(v) => write_file(dir, &i.path, v),
            None => Err(Prep::Retry(format!("couldn't find key {} in {what}", i.key))),
        }),
    }
}

pub(crate) async fn config_map_data(
    client: &Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, Prep> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Prep::Retry(format!("reading configmap {name:?}: {e}")))?;
    match cm {
        None if optional => Ok(BTreeMap::new()),
        None => Err(Prep::Retry(format!("configmap {name:?} not found"))),
        Some(cm) => {
            let mut out: BTreeMap<String, Vec<u8>> =
                cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            out.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
            Ok(out)
        }
    }
}

pub(crate) async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, Prep> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Prep::Retry(format!("reading secret {name:?}: {e}")))?;
    match s {
        None if optional => Ok(BTreeMap::new()),
        None => Err(Prep::Retry(format!("secret {name:?} not found"))),
        Some(s) => Ok(s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()),
    }
}

fn field(pod: &Pod, path: &str) -> Result<String, Prep> {
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
        other => return Err(fatal(format!("downward API field {other} is not supported by the node agent"))),
    })
}

/// A token of the pod's service account bound to the pod, as the kubelet requests it.
async fn service_account_token(
    client: &Client,
    pod: &Pod,
    audience: Option<&str>,
    expiration: Option<i64>,
) -> Result<String, Prep> {
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_string()]),
            expiration_seconds: Some(expiration.unwrap_or(3607)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let got = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_token_request(&sa, &PostParams::default(), &req)
        .await
        .map_err(|e| Prep::Retry(format!("requesting a token of service account {ns}/{sa}: {e}")))?;
    got.status.and_then(|s| s.token).ok_or_else(|| Prep::Retry(format!("no token for service account {ns}/{sa}")))
}

/// Writes the files of a volume the kubelet would make (ConfigMap, Secret, projected,
/// downward API, emptyDir) into `dir`; `Ok(false)` for a kind it does not make.
async fn make(client: &Client, pod: &Pod, v: &Volume, dir: &Path) -> Result<bool, Prep> {
    let ns = pod.namespace().unwrap_or_default();
    std::fs::create_dir_all(dir).map_err(|e| fatal(format!("creating {}: {e}", dir.display())))?;
    if let Some(c) = &v.config_map {
        let data = config_map_data(client, &ns, &c.name, c.optional.unwrap_or(false)).await?;
        write_keys(dir, &data, c.items.as_ref(), &format!("ConfigMap {ns}/{}", c.name))?;
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = secret_data(client, &ns, &name, s.optional.unwrap_or(false)).await?;
        write_keys(dir, &data, s.items.as_ref(), &format!("Secret {ns}/{name}"))?;
    } else if let Some(d) = &v.downward_api {
        for i in d.items.iter().flatten() {
            let f = i.field_ref.as_ref().ok_or_else(|| fatal("downward API volume: only fieldRef items are supported"))?;
            write_file(dir, &i.path, field(pod, &f.field_path)?.as_bytes())?;
        }
    } else if let Some(p) = &v.projected {
        for src in p.sources.iter().flatten() {
            if let Some(t) = &src.service_account_token {
                let token = service_account_token(client, pod, t.audience.as_deref(), t.expiration_seconds).await?;
                write_file(dir, &t.path, token.as_bytes())?;
            } else if let Some(c) = &src.config_map {
                let data = config_map_data(client, &ns, &c.name, c.optional.unwrap_or(false)).await?;
                write_keys(dir, &data, c.items.as_ref(), &format!("ConfigMap {ns}/{}", c.name))?;
            } else if let Some(s) = &src.secret {
                let data = secret_data(client, &ns, &s.name, s.optional.unwrap_or(false)).await?;
                write_keys(dir, &data, s.items.as_ref(), &format!("Secret {ns}/{}", s.name))?;
            } else if let Some(d) = &src.downward_api {
                for i in d.items.iter().flatten() {
                    let f = i.field_ref.as_ref().ok_or_else(|| fatal("downward API projection: only fieldRef items"))?;
                    write_file(dir, &i.path, field(pod, &f.field_path)?.as_bytes())?;
                }
            } else {
                return Err(fatal(format!("projected volume {}: a source the node agent does not support", v.name)));
            }
        }
    } else if v.empty_dir.is_none() {
        return Ok(false);
    }
    Ok(true)
}

/// The mounts a container needs: none when its only volumes are claims mounted at their local
/// directories (it runs as a plain process); else every volume, those the agent writes itself
/// in `pod_dir/volumes/<name>`.
pub(crate) async fn mounts(
    client: &Client,
    pod: &Pod,
    c: &Container,
    pod_dir: &Path,
    volume_dirs: &std::collections::HashMap<String, PathBuf>,
) -> Result<Vec<Mount>, Prep> {
    let spec = pod.spec.as_ref().ok_or_else(|| fatal("pod has no spec"))?;
    let mut out = Vec::new();
    // Claims at their own paths: mounted too once the pod has a root of its own (an emptyDir over
    // /tmp would hide a claim directory under it).
    let mut in_place = Vec::new();
    let mut made = std::collections::HashSet::new();
    for m in c.volume_mounts.iter().flatten() {
        let Some(v) = spec.volumes.iter().flatten().find(|v| v.name == m.name) else {
            return Err(fatal(format!("volume mount {} names no volume of the pod", m.name)));
        };
        let sub = m.sub_path.as_deref().filter(|s| !s.is_empty());
        let read_only = m.read_only.unwrap_or(false);
        let source = if let Some(pvc) = &v.persistent_volume_claim {
            let Some(dir) = volume_dirs.get(&pvc.claim_name) else {
                return Err(fatal(format!(
                    "PersistentVolumeClaim {:?} (volume {}) has no local directory in the node agent's volume_dirs",
                    pvc.claim_name, v.name
                )));
            };
            let local = sub.map_or_else(|| dir.clone(), |s| dir.join(s));
            if Path::new(&m.mount_path) == local {
                in_place.push(Mount { source: local, target: m.mount_path.clone(), read_only });
                continue;
            }
            local
        } else if let Some(h) = &v.host_path {
            PathBuf::from(&h.path)
        } else {
            let dir = pod_dir.join("volumes").join(&v.name);
            if made.insert(v.name.clone()) && !make(client, pod, v, &dir).await? {
                return Err(fatal(format!("volume {}: a kind the node agent does not support", v.name)));
            }
            sub.map_or(dir.clone(), |s| dir.join(s))
        };
        if !Path::new(&m.mount_path).is_absolute() {
            return Err(fatal(format!("volume mount {}: {} is not an absolute path", m.name, m.mount_path)));
        }
        out.push(Mount { source, target: m.mount_path.clone(), read_only });
    }
    if !out.is_empty() {
        out.extend(in_place);
    }
    Ok(out)
}

/// `path` with the machine's symlinks followed: the nearest existing directory and the
/// components below it that do not exist yet.
fn resolve(path: &str) -> (PathBuf, Vec<String>) {
    let mut cur = PathBuf::from("/");
    let comps: Vec<String> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    for (i, comp) in comps.iter().enumerate() {
        let next = cur.join(comp);
        match std::fs::canonicalize(&next) {
            Ok(real) if real.is_dir() => cur = real,
            _ => return (cur, comps[i..].to_vec()),
        }
    }
    (cur, Vec::new())
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// The script that builds the pod's root and mounts, then `exec chroot ROOT "$@"`. Run it as
/// `unshare --mount --propagation private /bin/sh SCRIPT PROGRAM ARGS...`.
pub(crate) fn start_script(pod_dir: &Path, mounts: &[Mount]) -> Result<String, Prep> {
    let root = pod_dir.join("root");
    std::fs::create_dir_all(&root).map_err(|e| fatal(format!("creating {}: {e}", root.display())))?;
    let mut s = String::from("set -eu\n");
    let r = q(&root);
    let _ = writeln!(s, "R={r}\nmount -t tmpfs -o mode=0755 isoflop-pod \"$R\"");
    let entries = std::fs::read_dir("/").map_err(|e| fatal(format!("reading /: {e}")))?;
    let mut names: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let host = e.path();
        let ty = e.file_type().map_err(|e| fatal(format!("reading /: {e}")))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if ty.is_symlink() {
            let to = std::fs::read_link(&host).map_err(|e| fatal(format!("reading {}: {e}", host.display())))?;
            let _ = writeln!(s, "ln -s {} \"$R\"/{}", q(&to), q(Path::new(&name)));
        } else if ty.is_dir() {
            let _ = writeln!(s, "mkdir \"$R\"/{n} && mount --rbind {h} \"$R\"/{n}", n = q(Path::new(&name)), h = q(&host));
        }
    }
    let mut sorted = mounts.to_vec();
    sorted.sort_by_key(|m| (Path::new(&m.target).components().count(), m.target.clone()));
    let mut overlaid: Vec<PathBuf> = Vec::new();
    let mut mounted: Vec<PathBuf> = Vec::new();
    for (i, m) in sorted.iter().enumerate() {
        let (existing, missing) = resolve(&m.target);
        let target = missing.iter().fold(existing.clone(), |p, c| p.join(c));
        let inside = |set: &[PathBuf]| set.iter().any(|d| existing.starts_with(d));
        // Under a volume mounted already, the machine's directories say nothing: create it.
        let under_volume = mounted.iter().any(|d| target.starts_with(d) && target != *d);
        if !missing.is_empty() && existing != Path::new("/") && !inside(&overlaid) && !under_volume {
            let ov = pod_dir.join("overlay").join(i.to_string());
            for d in ["upper", "work"] {
                std::fs::create_dir_all(ov.join(d)).map_err(|e| fatal(format!("creating {}: {e}", ov.display())))?;
            }
            let _ = writeln!(
                s,
                "mount -t overlay isoflop-overlay -o lowerdir=\"$R\"{e},upperdir={u},workdir={w} \"$R\"{e}",
                e = q(&existing),
                u = q(&ov.join("upper")),
                w = q(&ov.join("work"))
            );
            overlaid.push(existing.clone());
        }
        if (!missing.is_empty() || under_volume) && m.source.is_file() {
            // A single file (a key by subPath): its mount point is a file.
            let parent = target.parent().unwrap_or(Path::new("/"));
            let _ = writeln!(s, "mkdir -p \"$R\"{} && touch \"$R\"{}", q(parent), q(&target));
        } else if !missing.is_empty() || under_volume {
            let _ = writeln!(s, "mkdir -p \"$R\"{}", q(&target));
        }
        let _ = writeln!(s, "mount --bind {} \"$R\"{}", q(&m.source), q(&target));
        if m.read_only {
            let _ = writeln!(s, "mount -o remount,bind,ro \"$R\"{}", q(&target));
        }
        mounted.push(target);
    }
    s.push_str("exec chroot \"$R\" \"$@\"\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_through_the_machines_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("run")).unwrap();
        std::os::unix::fs::symlink(real.join("run"), real.join("varrun")).unwrap();
        let (existing, missing) = resolve(&format!("{}/varrun/secrets/sa", real.display()));
        assert_eq!(existing, real.join("run"));
        assert_eq!(missing, vec!["secrets".to_string(), "sa".to_string()]);
        assert_eq!(resolve("/"), (PathBuf::from("/"), vec![]));
    }

    #[test]
    fn the_script_overlays_once_and_mounts_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("etc")).unwrap();
        let mounts = vec![
            Mount { source: real.join("a"), target: format!("{}/etc/isoflop", real.display()), read_only: true },
            Mount { source: real.join("b"), target: format!("{}/etc/other/x", real.display()), read_only: false },
        ];
        let s = start_script(&real.join("pod"), &mounts).unwrap();
        assert_eq!(s.matches("mount -t overlay").count(), 1, "{s}");
        assert_eq!(s.matches("mkdir -p").count(), 2, "{s}");
        assert!(s.contains("mount -o remount,bind,ro"), "{s}");
        assert!(s.trim_end().ends_with("exec chroot \"$R\" \"$@\""), "{s}");
        // A volume over an existing directory, and one inside it: no overlay, the inner one created in the volume.
        let mounts = vec![
            Mount { source: real.join("c"), target: format!("{}/etc", real.display()), read_only: false },
            Mount { source: real.join("d"), target: format!("{}/etc/inner", real.display()), read_only: false },
        ];
        let s = start_script(&real.join("pod2"), &mounts).unwrap();
        assert_eq!(s.matches("mount -t overlay").count(), 0, "{s}");
        let etc = s.lines().position(|l| l.starts_with("mount --bind") && l.ends_with("/etc'")).unwrap();
        let inner = s.lines().position(|l| l.starts_with("mkdir -p") && l.ends_with("/etc/inner'")).unwrap();
        assert!(etc < inner, "{s}");
    }
}
