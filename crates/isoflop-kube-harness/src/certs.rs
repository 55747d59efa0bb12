//! The PKI of the test control plane: one CA, the apiserver's serving certificate, an admin client certificate
//! (group `system:masters`), the apiserver's client certificate for kubelets (`kube-apiserver-kubelet-client`, group
//! `system:masters`), one serving certificate for the node agent's kubelet endpoint (IP SAN 127.0.0.1) and the
//! service-account signing key, all ECDSA P-256.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::{HarnessError, KubeletTls, io_err};

pub(crate) struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    /// The apiserver's client certificate towards kubelets (`--kubelet-client-certificate`).
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
    /// The node agent's serving certificate and the CA that signed everything.
    pub kubelet: KubeletTls,
}

fn write(path: &Path, text: &str) -> Result<(), HarnessError> {
    std::fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))
}

pub(crate) fn generate(dir: &Path) -> Result<Pki, HarnessError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let mut pki = Pki {
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("apiserver.crt"),
        server_key: dir.join("apiserver.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
        kubelet_client_cert: dir.join("apiserver-kubelet-client.crt"),
        kubelet_client_key: dir.join("apiserver-kubelet-client.key"),
        kubelet: KubeletTls { cert_pem: String::new(), key_pem: String::new(), ca_pem: String::new() },
    };

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "isoflop-test-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    write(&pki.ca_key, &ca_key.serialize_pem())?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    write(&pki.ca_cert, &ca.pem())?;

    let server = issue(
        &ca,
        "kube-apiserver",
        None,
        &["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"],
        &[Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 0, 0, 1)],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    write(&pki.server_cert, &server.0)?;
    write(&pki.server_key, &server.1)?;
    let admin = issue(&ca, "isoflop-admin", Some("system:masters"), &[], &[], ExtendedKeyUsagePurpose::ClientAuth)?;
    write(&pki.admin_cert, &admin.0)?;
    write(&pki.admin_key, &admin.1)?;
    let client =
        issue(&ca, "kube-apiserver-kubelet-client", Some("system:masters"), &[], &[], ExtendedKeyUsagePurpose::ClientAuth)?;
    write(&pki.kubelet_client_cert, &client.0)?;
    write(&pki.kubelet_client_key, &client.1)?;
    let (cert_pem, key_pem) =
        issue(&ca, "isoflop-node-agent", None, &["localhost"], &[Ipv4Addr::LOCALHOST], ExtendedKeyUsagePurpose::ServerAuth)?;
    pki.kubelet = KubeletTls { cert_pem, key_pem, ca_pem: ca.pem() };

    let sa = KeyPair::generate()?;
    write(&pki.sa_key, &sa.serialize_pem())?;
    write(&pki.sa_pub, &sa.public_key_pem())?;
    Ok(pki)
}

/// A leaf certificate signed by `ca` with a fresh key: common name, optional organisation
/// (the group a client certificate puts its user in), DNS and IP subject alternative names, and
/// whether it serves or authenticates a client. Returns (certificate PEM, key PEM).
fn issue(
    ca: &CertifiedIssuer<'_, KeyPair>,
    cn: &str,
    org: Option<&str>,
    dns: &[&str],
    ips: &[Ipv4Addr],
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), HarnessError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())?;
    params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(IpAddr::V4(*ip))));
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(o) = org {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}
