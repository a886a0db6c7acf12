//! The node's HTTPS endpoint for the API server, as the kubelet's port 10250: what only the
//! node has (container logs now), on the kubelet's paths (`/containerLogs/NS/POD/CONTAINER`).
//!
//! Its certificate is the serving certificate the cluster CA signed at registration
//! ([`super::register`]), for the node's name and InternalIP. Only the API server gets in: a
//! client certificate signed by the same CA, for server-to-node use, with the subject
//! [`APISERVER_CLIENT_CN`]; anything else is turned away in the handshake or right after.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::node::daemon::Daemon;

/// The kubelet's port, the default here too.
pub const DEFAULT_PORT: u16 = 10250;

/// The API server's client certificate's subject (the server's pki module names it the
/// same; node code does not import server code).
pub const APISERVER_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("{path}: {message}")]
    File { path: std::path::PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// The TLS configuration: the node's serving certificate and key under `agent_dir`, client
/// certificates required and checked against the CA in `ca_file`.
pub fn tls_config(agent_dir: &Path, ca_file: &Path) -> Result<Arc<rustls::ServerConfig>, ServingError> {
    let file = |path: &Path, message: &str| ServingError::File { path: path.to_path_buf(), message: message.into() };
    let (crt, key) = (super::register::serving_cert_path(agent_dir), super::register::serving_key_path(agent_dir));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&crt)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| file(&crt, &format!("not a PEM certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| file(&key, &format!("not a PEM private key: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in
        CertificateDer::pem_file_iter(ca_file).map_err(|e| file(ca_file, &format!("not a PEM certificate: {e}")))?
    {
        roots.add(ca.map_err(|e| file(ca_file, &format!("not a PEM certificate: {e}")))?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ServingError::Tls(rustls::Error::General(e.to_string())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds the endpoint's address (an error here stops the daemon's start: the port is taken).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServingError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| ServingError::Listen { addr, source })
}

/// The subject's common name of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// Serves the API server for ever.
pub async fn serve(daemon: Arc<Daemon>, listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = crate::node::daemon::api::server_router(daemon);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(%err, "accepting a connection from the API server failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(err)) => return tracing::debug!(%peer, %err, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let cn = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| common_name(c));
            if cn.as_deref() != Some(APISERVER_CLIENT_CN) {
                return tracing::warn!(%peer, ?cn, "refused a client that is not the API server");
            }
            let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
            builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let service = TowerToHyperService::new(app);
            if let Err(err) = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, %err, "connection from the API server ended with an error");
            }
        });
    }
}
