//! The node agent's kubelet endpoint: one HTTPS server on a loopback port for all of the agent's nodes, serving
//! `GET /containerLogs/{namespace}/{pod}/{container}` (what the apiserver proxies `pods/log` to) from the log files.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::{HarnessError, io_err};

/// TLS material of a kubelet: its serving certificate and key and the CA whose client certificates it accepts (the
/// same CA signed the serving certificate; the apiserver verifies it with `--kubelet-certificate-authority`). All PEM.
#[derive(Clone)]
pub struct KubeletTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for KubeletTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletTls").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// Whether the agent knows pod (namespace, name): the kubelet serves logs of its pods until they are deleted.
pub(crate) type KnownPod = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

fn tls_err(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Agent(format!("kubelet TLS: {e}"))
}

fn server_config(tls: &KubeletTls) -> Result<rustls::ServerConfig, HarnessError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        roots.add(ca.map_err(tls_err)?).map_err(tls_err)?;
    }
    // Like a kubelet with anonymous auth off: only client certificates signed by the CA get through (others fail the
    // handshake).
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(tls_err)?;
    let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(tls_err)?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).map_err(tls_err)?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(tls_err)
}

/// Binds a free loopback port and serves there until the returned task is aborted.
pub(crate) async fn start(tls: &KubeletTls, log_dir: PathBuf, known: KnownPod) -> Result<(u16, JoinHandle<()>), HarnessError> {
    let acceptor = TlsAcceptor::from(Arc::new(server_config(tls)?));
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io_err("binding the kubelet port"))?;
    let port = listener.local_addr().map_err(io_err("reading the kubelet port"))?.port();
    let log_dir = Arc::new(log_dir);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("kubelet endpoint: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, log_dir, known) = (acceptor.clone(), log_dir.clone(), known.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::info!("kubelet endpoint: TLS handshake with {peer} refused: {e}"),
                    Err(_) => return,
                };
                if let Err(e) = serve_connection(tls, &log_dir, &known).await {
                    tracing::info!("kubelet endpoint: connection from {peer}: {e}");
                }
            });
        }
    });
    Ok((port, task))
}

/// One request per connection (`Connection: close`), HTTP/1.1.
async fn serve_connection<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    log_dir: &std::path::Path,
    known: &KnownPod,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return respond(&mut s, 431, "request header too large\n".as_bytes()).await;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await.map_err(std::io::Error::other)??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (code, body) = if method != "GET" {
        (405, format!("method {method} not allowed\n").into_bytes())
    } else {
        handle(target, log_dir, known.as_ref()).await
    };
    respond(&mut s, code, &body).await
}

async fn respond<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, code: u16, body: &[u8]) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    s.flush().await?;
    s.shutdown().await
}

/// The status code and body for a GET of `target`.
async fn handle(target: &str, log_dir: &std::path::Path, known: &(dyn Fn(&str, &str) -> bool + Send + Sync)) -> (u16, Vec<u8>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [_, ns, pod, container] = segs[..] else {
        return (404, b"404 page not found\n".to_vec());
    };
    if segs[0] != "containerLogs" || [ns, pod, container].iter().any(|s| s.is_empty() || s.contains("..")) {
        return (404, b"404 page not found\n".to_vec());
    }
    if !known(ns, pod) {
        return (404, format!("pod \"{pod}\" in namespace \"{ns}\" not found\n").into_bytes());
    }
    let q: HashMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    let num = |k: &str| -> Result<Option<u64>, String> {
        q.get(k).map(|v| v.parse::<u64>().map_err(|e| format!("{k}={v}: {e}\n"))).transpose()
    };
    let (tail, limit) = match (num("tailLines"), num("limitBytes")) {
        (Ok(t), Ok(l)) => (t, l),
        (Err(e), _) | (_, Err(e)) => return (400, e.into_bytes()),
    };
    if q.get("previous").is_some_and(|v| *v == "true") {
        return (400, format!("previous terminated container \"{container}\" in pod \"{pod}\" not found\n").into_bytes());
    }
    let file = log_dir.join(format!("{ns}_{pod}_{container}.log"));
    match tokio::fs::read(&file).await {
        Ok(text) => (200, select(&text, tail, limit).to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (400, format!("container \"{container}\" in pod \"{pod}\" is waiting to start\n").into_bytes())
        }
        Err(e) => (500, format!("reading {}: {e}\n", file.display()).into_bytes()),
    }
}

/// The last `tail` lines of `text` (all without), then at most `limit` bytes of those, like the kubelet.
fn select(text: &[u8], tail: Option<u64>, limit: Option<u64>) -> &[u8] {
    let mut start = 0;
    if let Some(n) = tail {
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        start = if n == 0 { text.len() } else { 0 };
        let mut seen = 0;
        for (i, b) in body.iter().enumerate().rev().filter(|_| n > 0) {
            if *b == b'\n' {
                seen += 1;
                if seen == n {
                    start = i + 1;
                    break;
                }
            }
        }
    }
    let out = &text[start..];
    match limit {
        Some(l) if (l as usize) < out.len() => &out[..l as usize],
        _ => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_and_limit_bytes() {
        let t = b"a\nbb\nccc\n";
        assert_eq!(select(t, None, None), t);
        assert_eq!(select(t, Some(1), None), b"ccc\n");
        assert_eq!(select(t, Some(2), None), b"bb\nccc\n");
        assert_eq!(select(t, Some(3), None), t);
        assert_eq!(select(t, Some(10), None), t);
        assert_eq!(select(t, Some(0), None), b"");
        assert_eq!(select(b"a\nno newline", Some(1), None), b"no newline");
        assert_eq!(select(t, Some(2), Some(4)), b"bb\nc");
        assert_eq!(select(t, None, Some(100)), t);
    }

    #[tokio::test]
    async fn requests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ns_p_main.log"), "one\ntwo\n").unwrap();
        let known = |ns: &str, pod: &str| ns == "ns" && (pod == "p" || pod == "pending");
        let get = |t: &'static str| handle(t, dir.path(), &known);
        assert_eq!(get("/containerLogs/ns/p/main").await, (200, b"one\ntwo\n".to_vec()));
        assert_eq!(get("/containerLogs/ns/p/main?follow=true&tailLines=1").await, (200, b"two\n".to_vec()));
        assert_eq!(get("/containerLogs/ns/p/main?limitBytes=2").await, (200, b"on".to_vec()));
        assert_eq!(get("/containerLogs/ns/other/main").await.0, 404);
        assert_eq!(get("/containerLogs/ns/p").await.0, 404);
        assert_eq!(get("/pods").await.0, 404);
        assert_eq!(get("/containerLogs/ns/pending/main").await.0, 400);
        assert_eq!(get("/containerLogs/ns/p/main?tailLines=x").await.0, 400);
        assert_eq!(get("/containerLogs/ns/p/main?previous=true").await.0, 400);
    }

    /// GETs `/containerLogs/ns/p/main` over TLS with `client` as the client certificate (cert, key PEM files), or none;
    /// the response, or the error.
    async fn get_over_tls(port: u16, ca_pem: &str, client: Option<(PathBuf, PathBuf)>) -> Result<String, std::io::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(cert).unwrap()],
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
        s.write_all(b"GET /containerLogs/ns/p/main HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn only_client_certificates_of_the_ca_get_through() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::certs::generate(&dir.path().join("pki")).unwrap();
        let other = crate::certs::generate(&dir.path().join("other")).unwrap();
        std::fs::write(dir.path().join("ns_p_main.log"), "hello\n").unwrap();
        let (port, task) =
            start(&pki.kubelet, dir.path().to_path_buf(), Arc::new(|ns, pod| ns == "ns" && pod == "p")).await.unwrap();
        let ok = get_over_tls(port, &pki.kubelet.ca_pem, Some((pki.kubelet_client_cert.clone(), pki.kubelet_client_key.clone())))
            .await
            .unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nhello\n"), "{ok:?}");
        for (what, client) in
            [("no client certificate", None), ("another CA's", Some((other.kubelet_client_cert, other.kubelet_client_key)))]
        {
            let r = get_over_tls(port, &pki.kubelet.ca_pem, client).await;
            assert!(r.is_err(), "{what}: {r:?}");
        }
        task.abort();
    }
}
