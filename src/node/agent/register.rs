//! Joining: the node registers with the server's join token (`POST /v1-nodectl/register`)
//! and is given a token of its own, `node:NAME:SECRET`, which is all it uses afterwards.
//!
//! The password it registers with is random, made once and kept in `ROOT/agent/password`:
//! the server gives a registered name a new token only for the same password, so a restart
//! (which registers again, rotating the token) works, and the join token alone cannot take
//! the node's name over. Both files are root's only (0600).

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The server's registration path (see the server's auth module; not imported: the node
/// layer speaks to the server only over HTTP).
const REGISTER_PATH: &str = "/v1-nodectl/register";

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{what} {path}: {source}")]
    File { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0} is empty: it should hold the server's join token (DATA_DIR/node-token)")]
    EmptyToken(PathBuf),
    #[error("the CA file {path} holds no usable certificate: {message}")]
    Ca { path: PathBuf, message: String },
    #[error("cannot reach the server at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error(
        "the server at {url} refused to register node {node:?} ({code}): {message}{hint}",
        hint = if *.code == 401 { " (is --token-file the server's node-token?)" } else { "" }
    )]
    Refused { url: String, node: String, code: u16, message: String },
    #[error("the server at {url} answered the registration without a token: {body}")]
    NoToken { url: String, body: String },
    #[error("the serving certificate's request: {0}")]
    Request(#[from] rcgen::Error),
    #[error("the server at {url} answered the registration without the serving certificate asked for")]
    NoServingCert { url: String },
}

/// Where a joined node keeps its credentials, under the state root.
pub fn dir(root: &Path) -> PathBuf {
    root.join("agent")
}

/// The node token's file (what the API client reads).
pub fn token_path(root: &Path) -> PathBuf {
    dir(root).join("node-token")
}

/// The node's serving certificate and key, under [`dir`].
pub fn serving_cert_path(agent_dir: &Path) -> PathBuf {
    agent_dir.join("serving.crt")
}

pub fn serving_key_path(agent_dir: &Path) -> PathBuf {
    agent_dir.join("serving.key")
}

/// A certificate request for `node` and `ips`, with the node's serving key (made on first
/// use).
fn serving_request(root: &Path, node: &str, ips: &[IpAddr]) -> Result<String, JoinError> {
    let path = serving_key_path(&dir(root));
    let key = match std::fs::read_to_string(&path) {
        Ok(pem) => match rcgen::KeyPair::from_pem(&pem) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(path = %path.display(), %e, "the serving key is unusable; making a new one");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(JoinError::File { what: "read", path, source }),
    };
    let key = match key {
        Some(k) => k,
        None => {
            let k = rcgen::KeyPair::generate()?;
            write_private(&path, k.serialize_pem().as_bytes())?;
            k
        }
    };
    let mut names = vec![node.to_string()];
    names.extend(ips.iter().map(IpAddr::to_string));
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    Ok(params.serialize_request(&key)?.pem()?)
}

/// Writes `data` to `path` with mode 0600, replacing it atomically.
fn write_private(path: &Path, data: &[u8]) -> Result<(), JoinError> {
    let err = |what| move |source| JoinError::File { what, path: path.to_path_buf(), source };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(err("create"))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(err("write"))?;
    std::fs::rename(&tmp, path).map_err(err("rename into"))
}

/// The node's password, made on first use.
fn password(root: &Path) -> Result<String, JoinError> {
    let path = dir(root).join("password");
    match std::fs::read_to_string(&path) {
        Ok(p) if !p.trim().is_empty() => return Ok(p.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(JoinError::File { what: "read", path, source }),
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let p = hex::encode(bytes);
    write_private(&path, p.as_bytes())?;
    Ok(p)
}

/// Registers `node` with the server at `url` (trusting only `ca_file`'s CA) using the join
/// token in `token_file`; keeps the node's token in [`token_path`] and returns it, and its
/// serving certificate for `node` and `ips` in [`serving_cert_path`].
pub async fn register(
    root: &Path,
    url: &str,
    token_file: &Path,
    ca_file: &Path,
    node: &str,
    ips: &[IpAddr],
) -> Result<String, JoinError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| JoinError::File { what: "read", path: path.to_path_buf(), source })
    };
    let join = String::from_utf8_lossy(&read(token_file)?).trim().to_string();
    if join.is_empty() {
        return Err(JoinError::EmptyToken(token_file.to_path_buf()));
    }
    let ca_pem = read(ca_file)?;
    let ca = reqwest::Certificate::from_pem(&ca_pem)
        .map_err(|e| JoinError::Ca { path: ca_file.to_path_buf(), message: e.to_string() })?;
    let d = dir(root);
    std::fs::create_dir_all(&d).map_err(|source| JoinError::File { what: "create", path: d.clone(), source })?;
    let password = password(root)?;
    let csr = serving_request(root, node, ips)?;
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| JoinError::Unreachable { url: url.to_string(), message: e.to_string() })?;
    let endpoint = format!("{}{REGISTER_PATH}", url.trim_end_matches('/'));
    let unreachable = |e: reqwest::Error| JoinError::Unreachable { url: url.to_string(), message: error_chain(&e) };
    let resp = client
        .post(&endpoint)
        .bearer_auth(&join)
        .json(&json!({"nodeName": node, "password": password, "servingCSR": csr}))
        .send()
        .await
        .map_err(unreachable)?;
    let code = resp.status().as_u16();
    let body = resp.text().await.map_err(unreachable)?;
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if !(200..300).contains(&code) {
        let message = answer.get("message").and_then(Value::as_str).map(String::from).unwrap_or(body);
        return Err(JoinError::Refused { url: url.to_string(), node: node.to_string(), code, message });
    }
    let Some(token) = answer.get("token").and_then(Value::as_str) else {
        return Err(JoinError::NoToken { url: url.to_string(), body });
    };
    let Some(cert) = answer.get("servingCert").and_then(Value::as_str) else {
        return Err(JoinError::NoServingCert { url: url.to_string() });
    };
    write_private(&serving_cert_path(&d), cert.as_bytes())?;
    write_private(&token_path(root), token.as_bytes())?;
    Ok(token.to_string())
}

/// reqwest's error with its causes (the TLS or connect error that says what went wrong).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
