//! The controllers' way into the API: a kube-rs client to this server over loopback HTTPS,
//! as `system:kube-controller-manager`, so that every write they make passes the same
//! authentication, RBAC, admission and validation as anyone's (kube-controller-manager is a
//! client of kube-apiserver in the same way). The token lives only in this process's memory
//! and changes at every start; RBAC gives the user the `system:controller:*` roles.

use std::net::SocketAddr;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The user the controllers act as.
pub const USER: &str = "system:kube-controller-manager";

#[derive(Debug, thiserror::Error)]
#[error("the controllers' client for {url}: {message}")]
pub struct ClientError {
    pub url: String,
    pub message: String,
}

/// The address a client on this machine reaches a server listening on `bound` at.
pub fn loopback(bound: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        let ip: std::net::IpAddr =
            if bound.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
        SocketAddr::new(ip, bound.port())
    } else {
        bound
    }
}

/// A client for the server at `addr` that trusts only the cluster CA.
pub fn client(addr: SocketAddr, ca_pem: &str, token: &str) -> Result<kube::Client, ClientError> {
    let url = format!("https://{addr}");
    let fail = |message: String| ClientError { url: url.clone(), message };
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| fail(format!("the CA: {e}")))?;
    let mut config = kube::Config::new(url.parse().map_err(|e| fail(format!("{e}")))?);
    config.root_cert = Some(vec![ca.to_vec()]);
    config.auth_info.token = Some(token.to_string().into());
    // Watches are long; the default read timeout would cut them.
    config.read_timeout = None;
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}
