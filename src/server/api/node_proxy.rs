//! Reaching a pod's node for what only the node has (`pods/log`, `exec`, `attach` and
//! `portforward`): HTTPS to the address and port the Node reports
//! (`status.addresses` InternalIP, `status.daemonEndpoints.kubeletEndpoint.Port`), the
//! node's certificate checked against the cluster CA *and* the node's name (another node's
//! certificate does not pass), the server showing its kubelet client certificate. The
//! node's answer, success or Status, goes back to the client as it streams.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::status::ApiError;

/// How long connecting, the TLS handshake and the node's answer's head may take, each.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The server's way to its nodes; `None` where the server has no client certificate (the
/// API's own fuzz tests).
#[derive(Clone, Default)]
pub struct NodeDialer {
    tls: Option<tokio_rustls::TlsConnector>,
}

impl NodeDialer {
    pub fn new(config: Arc<rustls::ClientConfig>) -> NodeDialer {
        NodeDialer { tls: Some(tokio_rustls::TlsConnector::from(config)) }
    }

    /// A TLS connection to node `name` at `addr`, its certificate checked for that name,
    /// with HTTP/1.1 on it (upgrades allowed).
    async fn connect(
        &self,
        name: &str,
        addr: SocketAddr,
    ) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<axum::body::Bytes>>, ApiError> {
        let unreachable = |why: String| unreachable(name, addr, why);
        let Some(tls) = &self.tls else { return Err(unreachable("this server has no client certificate".into())) };
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|_| unreachable(format!("{name:?} is not a name a certificate can hold")))?;
        let tcp = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable("connecting timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream = tokio::time::timeout(DIAL_TIMEOUT, tls.connect(server_name, tcp))
            .await
            .map_err(|_| unreachable("the TLS handshake timed out".into()))?
            .map_err(|e| unreachable(format!("TLS: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // Lives as long as the answer's body is read (or the upgraded stream); ends with it.
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(%err, "node connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// `GET path` on node `name` at `addr`, its answer streamed back.
    pub async fn get(&self, name: &str, addr: SocketAddr, path: &str) -> Result<Response, ApiError> {
        let mut sender = self.connect(name, addr).await?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, name)
            .body(http_body_util::Empty::<axum::body::Bytes>::new())
            .map_err(|e| ApiError::internal(format!("building the request to node {name:?}: {e}")))?;
        let answer = tokio::time::timeout(HEAD_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| unreachable(name, addr, "the node did not answer in time".into()))?
            .map_err(|e| unreachable(name, addr, e.to_string()))?;
        Ok(answer.map(axum::body::Body::new))
    }

    /// An upgrading request (`kubectl exec` over WebSocket, `kubectl port-forward` over
    /// WebSocket or SPDY/3.1) passed on to node `name`: the
    /// upgrade headers go with it; when the node switches protocols, so does the client's
    /// connection, and the two are joined byte for byte until either side closes. Any other
    /// answer goes back as it is.
    pub async fn upgrade(
        &self,
        name: &str,
        addr: SocketAddr,
        path: &str,
        headers: &header::HeaderMap,
        client: hyper::upgrade::OnUpgrade,
    ) -> Result<Response, ApiError> {
        let mut sender = self.connect(name, addr).await?;
        let mut request = Request::builder().method(Method::GET).uri(path).header(header::HOST, name);
        for h in UPGRADE_HEADERS {
            for v in headers.get_all(&h) {
                request = request.header(&h, v);
            }
        }
        let request = request
            .body(http_body_util::Empty::<axum::body::Bytes>::new())
            .map_err(|e| ApiError::internal(format!("building the request to node {name:?}: {e}")))?;
        let mut answer = tokio::time::timeout(HEAD_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| unreachable(name, addr, "the node did not answer in time".into()))?
            .map_err(|e| unreachable(name, addr, e.to_string()))?;
        if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(answer.map(axum::body::Body::new));
        }
        let mut switched = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in answer.headers() {
            switched = switched.header(k, v);
        }
        let node = hyper::upgrade::on(&mut answer);
        let node_name = name.to_string();
        tokio::spawn(async move {
            let (client, node) = match (client.await, node.await) {
                (Ok(c), Ok(n)) => (c, n),
                (c, n) => {
                    let (c, n) = (c.err().map(|e| e.to_string()), n.err().map(|e| e.to_string()));
                    return tracing::debug!(node = node_name, ?c, ?n, "an upgraded stream failed to start");
                }
            };
            let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
            if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut node).await {
                tracing::debug!(node = node_name, %err, "an upgraded stream ended with an error");
            }
        });
        switched
            .body(axum::body::Body::empty())
            .map_err(|e| ApiError::internal(format!("the node's switching answer: {e}")))
    }
}

/// The headers an upgrade needs on its way to the node (the last: SPDY's sub-protocol).
const UPGRADE_HEADERS: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::HeaderName::from_static("x-stream-protocol-version"),
];

fn unreachable(name: &str, addr: SocketAddr, why: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!("cannot reach node {name:?} at https://{addr}: {why}"),
    )
}

/// Where node `node` (its object) serves: its InternalIP (else ExternalIP) and the port it
/// reports. A node that reports none (a fake node) is 503 with the reason.
pub fn address(name: &str, node: &Value) -> Result<SocketAddr, ApiError> {
    let unavailable = |why: &str| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", format!("node {name:?} {why}"))
    };
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| unavailable("reports no daemon endpoint (status.daemonEndpoints): it serves no logs or exec"))?;
    let addresses = node.pointer("/status/addresses").and_then(Value::as_array).cloned().unwrap_or_default();
    let ip = ["InternalIP", "ExternalIP"]
        .iter()
        .find_map(|kind| {
            addresses
                .iter()
                .filter(|a| a["type"].as_str() == Some(kind))
                .find_map(|a| a["address"].as_str().and_then(|s| s.parse::<IpAddr>().ok()))
        })
        .ok_or_else(|| unavailable("reports no InternalIP or ExternalIP address"))?;
    Ok(SocketAddr::new(ip, port))
}

/// A path segment as it goes on the node's URL (names are DNS labels; still escaped).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_address_is_the_internal_ip_and_the_reported_port() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "h"}, {"type": "ExternalIP", "address": "192.0.2.9"},
                          {"type": "InternalIP", "address": "10.1.2.3"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        }});
        assert_eq!(address("n", &node).unwrap(), "10.1.2.3:10250".parse().unwrap());
        let fake = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.1.2.3"}]}});
        let e = address("n", &fake).unwrap_err();
        assert_eq!(e.code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("daemonEndpoints"), "{}", e.message);
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("web-1.x"), "web-1.x");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }
}
