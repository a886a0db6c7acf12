//! The control plane's credentials, made at first start under `--data-dir` and reused after:
//! a CA (`ca.crt`, `ca.key`), a serving certificate it signs (`server.crt`, `server.key`),
//! the admin token, the node join token (`node-token`, as k3s has one), and
//! `admin.kubeconfig` so that `kubectl --kubeconfig DATA_DIR/admin.kubeconfig` just works.
//!
//! Nodes serve `pods/log`, `exec` and the like to the server over HTTPS (as kubelets do on
//! port 10250): the CA signs each node's serving certificate when it registers
//! ([`Signer`]), and the server shows the nodes a client certificate of its own
//! (`kubelet-client.crt`, CN [`KUBELET_CLIENT_CN`]), the only one they accept.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("generating credentials: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: not a usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

type Result<T> = std::result::Result<T, PkiError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PkiError + 'a {
    move |source| PkiError::Io { op, path: path.to_path_buf(), source }
}

/// Writes a secret readable by root only, created with that mode (never world-readable
/// even for a moment), atomically.
pub fn write_secret(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_err("create", &tmp))?;
    io::Write::write_all(&mut f, data).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename", path))
}

/// A random token: 32 bytes from the OS, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// The subject the server shows nodes (kube-apiserver's `--kubelet-client-certificate`
/// has this name in kubeadm clusters). The node side has its own copy of the name.
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

pub struct Pki {
    pub ca_pem: String,
    pub admin_token: String,
    pub node_token: String,
    pub tls: Arc<rustls::ServerConfig>,
    /// Signs the nodes' serving certificates.
    pub signer: Arc<Signer>,
    /// How the server reaches nodes: trusting the CA alone, showing the kubelet client
    /// certificate.
    pub node_client: Arc<rustls::ClientConfig>,
}

/// A certificate and its key, made by `make` when either file is missing.
fn ensure_pair(
    crt: &Path,
    key: &Path,
    make: impl FnOnce() -> Result<(String, String)>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    if !crt.exists() || !key.exists() {
        let (cert_pem, key_pem) = make()?;
        write_secret(key, key_pem.as_bytes())?;
        fs::write(crt, cert_pem).map_err(io_err("write", crt))?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(crt)
        .map_err(|_| PkiError::Pem { path: crt.to_path_buf(), what: "certificate" })?
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| PkiError::Pem { path: crt.to_path_buf(), what: "certificate" })?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| PkiError::Pem { path: key.to_path_buf(), what: "private key" })?;
    Ok((certs, key))
}

/// Loads the credentials under `dir`, making whatever is missing. `hosts` are the serving
/// certificate's names (DNS names or IP addresses) when it is made.
pub fn ensure(dir: &Path, hosts: &[String]) -> Result<Pki> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod", dir))?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if !ca_crt.exists() || !ca_key.exists() {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "nodectl-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write_secret(&ca_key, key.serialize_pem().as_bytes())?;
        fs::write(&ca_crt, cert.pem()).map_err(io_err("write", &ca_crt))?;
    }
    let ca_pem = fs::read_to_string(&ca_crt).map_err(io_err("read", &ca_crt))?;
    let ca_key_pem = fs::read_to_string(&ca_key).map_err(io_err("read", &ca_key))?;
    let signer =
        KeyPair::from_pem(&ca_key_pem).map_err(|_| PkiError::Pem { path: ca_key.clone(), what: "private key" })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, signer)
        .map_err(|_| PkiError::Pem { path: ca_crt.clone(), what: "CA certificate" })?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|_| PkiError::Pem { path: ca_crt.clone(), what: "CA certificate" })?;
    let (srv_crt, srv_key) = (dir.join("server.crt"), dir.join("server.key"));
    let (certs, key) = ensure_pair(&srv_crt, &srv_key, || {
        let mut names: Vec<String> = vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
        ];
        names.extend(hosts.iter().filter(|h| !h.is_empty() && h.as_str() != "0.0.0.0" && h.as_str() != "::").cloned());
        names.dedup();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, "nodectl-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let key = KeyPair::generate()?;
        Ok((params.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
    })?;
    let (client_crt, client_key) = (dir.join("kubelet-client.crt"), dir.join("kubelet-client.key"));
    let (client_certs, client_key) = ensure_pair(&client_crt, &client_key, || {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, KUBELET_CLIENT_CN);
        params.distinguished_name.push(DnType::OrganizationName, "system:masters");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let key = KeyPair::generate()?;
        Ok((params.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
    })?;
    let admin_token = token_file(&dir.join("admin-token"))?;
    let node_token = token_file(&dir.join("node-token"))?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // Client certificates are asked for, not required (kube-apiserver's --client-ca-file):
    // one the cluster CA signed for client use names its user (see api::auth).
    let mut client_roots = rustls::RootCertStore::empty();
    client_roots.add(ca_der.clone())?;
    let client_certs_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| rustls::Error::General(format!("client certificate verifier: {e}")))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_certs_verifier)
        .with_single_cert([certs, vec![ca_der.clone()]].concat(), key)?;
    // kubectl speaks HTTP/2 when offered; both work.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der)?;
    let mut node_client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(client_certs, client_key)?;
    // Upgrades (exec, attach, port-forward) are HTTP/1.1's.
    node_client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Pki {
        ca_pem,
        admin_token,
        node_token,
        tls: Arc::new(tls),
        signer: Arc::new(Signer { issuer }),
        node_client: Arc::new(node_client),
    })
}

/// Why a node's serving certificate request was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("not a valid PEM certificate request: {0}")]
    Request(rcgen::Error),
    #[error("asks for {0}: only the node's own name and IP addresses are signed")]
    Name(String),
    #[error("asks for {0} names: at most {MAX_SERVING_NAMES}")]
    TooMany(usize),
    #[error("signing: {0}")]
    Sign(rcgen::Error),
}

/// Names in a node's serving certificate, at most.
const MAX_SERVING_NAMES: usize = 32;

/// The CA as it signs the nodes' serving certificates.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
}

impl Signer {
    /// Signs `csr_pem` as node `node`'s serving certificate for a year: CN
    /// `system:node:NODE`, O `system:nodes`, server authentication only, the DNS name NODE
    /// and the IP addresses the request asks for (what kube-controller-manager's
    /// kubelet-serving signer allows). The request's own subject and extensions are not used.
    pub fn sign_serving(&self, node: &str, csr_pem: &str) -> std::result::Result<String, SignError> {
        use chrono::Datelike as _;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(SignError::Request)?;
        let asked = &csr.params.subject_alt_names;
        if asked.len() > MAX_SERVING_NAMES {
            return Err(SignError::TooMany(asked.len()));
        }
        let node_dns = || rcgen::string::Ia5String::try_from(node.to_string()).map(SanType::DnsName);
        let mut names = vec![node_dns().map_err(SignError::Sign)?];
        for san in asked {
            match san {
                SanType::IpAddress(ip) if !ip.is_unspecified() && !ip.is_multicast() => names.push(san.clone()),
                SanType::DnsName(n) if n.as_str() == node => {}
                other => return Err(SignError::Name(format!("{other:?}"))),
            }
        }
        names.dedup();
        let mut params = CertificateParams::default();
        params.subject_alt_names = names;
        params.distinguished_name.push(DnType::CommonName, format!("system:node:{node}"));
        params.distinguished_name.push(DnType::OrganizationName, "system:nodes");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let ymd = |d: chrono::NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
        let today = crate::model::time::now().date_naive();
        params.not_before = ymd(today - chrono::Days::new(1));
        params.not_after = ymd(today + chrono::Days::new(365));
        let mut serial = [0u8; 16];
        rand::fill(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let request = CertificateSigningRequestParams { params, public_key: csr.public_key };
        Ok(request.signed_by(&self.issuer).map_err(SignError::Sign)?.pem())
    }
}

fn token_file(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            let t = random_token();
            write_secret(path, format!("{t}\n").as_bytes())?;
            Ok(t)
        }
    }
}

/// A kubeconfig for `server` (an https URL) with the CA inline, as `user` with `token`.
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, token: &str, namespace: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    // Quoted: node tokens hold colons, user names too.
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: nodectl\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n- name: \"{user}\"\n  user:\n    token: \"{token}\"\ncontexts:\n- name: nodectl\n  context:\n    cluster: nodectl\n    user: \"{user}\"\n    namespace: {namespace}\n\
         current-context: nodectl\n"
    )
}

/// Writes `admin.kubeconfig` for `server` (an https URL).
pub fn write_kubeconfig(dir: &Path, server: &str, pki: &Pki) -> Result<PathBuf> {
    let path = dir.join("admin.kubeconfig");
    write_secret(&path, kubeconfig(server, &pki.ca_pem, "admin", &pki.admin_token, "default").as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(names: &[&str]) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "system:node:n1");
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn a_node_gets_a_serving_certificate_for_its_name_and_addresses_only() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure(dir.path(), &[]).unwrap();
        let pem = pki.signer.sign_serving("n1", &request(&["n1", "10.0.0.5"])).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) =
            <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<_>>::from_der(&der).unwrap();
        assert_eq!(cert.subject().to_string(), "CN=system:node:n1, O=system:nodes");
        let san = cert.subject_alternative_name().unwrap().unwrap().value.general_names.clone();
        let shown: Vec<String> = san.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["DNSName(n1)", "IPAddress(0a:00:00:05)"]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth, "serving only");

        let err = pki.signer.sign_serving("n1", &request(&["n1", "n2"])).unwrap_err();
        assert!(err.to_string().contains("only the node's own name and IP addresses"), "{err}");
        let err = pki.signer.sign_serving("n1", "not a request").unwrap_err();
        assert!(err.to_string().contains("not a valid PEM certificate request"), "{err}");
        assert!(dir.path().join("kubelet-client.crt").exists() && dir.path().join("kubelet-client.key").exists());
    }
}
