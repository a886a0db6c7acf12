//! The controllers' way into the API: a kube-rs client whose requests go to this server's
//! own router, as `system:kube-controller-manager`, so that every write they make passes
//! the same authentication, RBAC, admission and validation as anyone's (kube-controller-
//! manager is a client of kube-apiserver in the same way). The token lives only in this
//! process's memory and changes at every start; RBAC gives the user the
//! `system:controller:*` roles.
//!
//! The requests do not cross a socket: they used to reach the server over loopback HTTPS,
//! and every watch event the controllers read (the pod informer sees every pod write) was
//! encrypted, framed, sent and decrypted for nothing. Only the transport is skipped; what
//! a request is and how it is answered are the same.

use axum::http::{HeaderValue, Request, header};
use tower::ServiceExt;

/// The user the controllers act as.
pub const USER: &str = "system:kube-controller-manager";

#[derive(Debug, thiserror::Error)]
#[error("the controllers' client: {0}")]
pub struct ClientError(String);

/// A client of `router` (the API as [`crate::server::api::router`] serves it) that
/// authenticates with `token`. Must be called inside the Tokio runtime: the client's
/// request buffer runs as a task of its own.
pub fn client(router: axum::Router, token: &str) -> Result<kube::Client, ClientError> {
    let mut bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| ClientError(format!("the token is not a header value: {e}")))?;
    bearer.set_sensitive(true);
    let service = router.map_request(move |mut req: Request<kube::client::Body>| {
        req.headers_mut().insert(header::AUTHORIZATION, bearer.clone());
        req
    });
    Ok(kube::Client::new(service, "default"))
}
