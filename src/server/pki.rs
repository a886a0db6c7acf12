//! The control plane's credentials, made at first start under `--data-dir` and reused after:
//! a CA (`ca.crt`, `ca.key`), a serving certificate it signs (`server.crt`, `server.key`),
//! the admin token, the node join token (`node-token`, as k3s has one), and
//! `admin.kubeconfig` so that `kubectl --kubeconfig DATA_DIR/admin.kubeconfig` just works.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
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

pub struct Pki {
    pub ca_pem: String,
    pub admin_token: String,
    pub node_token: String,
    pub tls: Arc<rustls::ServerConfig>,
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
    let (srv_crt, srv_key) = (dir.join("server.crt"), dir.join("server.key"));
    if !srv_crt.exists() || !srv_key.exists() {
        let ca_key_pem = fs::read_to_string(&ca_key).map_err(io_err("read", &ca_key))?;
        let signer =
            KeyPair::from_pem(&ca_key_pem).map_err(|_| PkiError::Pem { path: ca_key.clone(), what: "private key" })?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, signer)
            .map_err(|_| PkiError::Pem { path: ca_crt.clone(), what: "CA certificate" })?;
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
        let cert = params.signed_by(&key, &issuer)?;
        write_secret(&srv_key, key.serialize_pem().as_bytes())?;
        fs::write(&srv_crt, cert.pem()).map_err(io_err("write", &srv_crt))?;
    }
    let admin_token = token_file(&dir.join("admin-token"))?;
    let node_token = token_file(&dir.join("node-token"))?;

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&srv_crt)
        .map_err(|_| PkiError::Pem { path: srv_crt.clone(), what: "certificate" })?
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| PkiError::Pem { path: srv_crt.clone(), what: "certificate" })?;
    let key = PrivateKeyDer::from_pem_file(&srv_key)
        .map_err(|_| PkiError::Pem { path: srv_key.clone(), what: "private key" })?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            [
                certs,
                vec![
                    CertificateDer::from_pem_slice(ca_pem.as_bytes())
                        .map_err(|_| PkiError::Pem { path: ca_crt.clone(), what: "CA certificate" })?,
                ],
            ]
            .concat(),
            key,
        )?;
    // kubectl speaks HTTP/2 when offered; both work.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Pki { ca_pem, admin_token, node_token, tls: Arc::new(tls) })
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
