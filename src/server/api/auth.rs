//! Who is calling: bearer tokens, and node registration.
//!
//! Three kinds of token, as k3s has them:
//! - the admin token (`DATA_DIR/admin-token`, in `admin.kubeconfig`): may do anything;
//! - the join token (`DATA_DIR/node-token`): may only register a node
//!   (`POST /v1-nodectl/register`), which answers a token of the node's own;
//! - a node's token, `node:NAME:SECRET`: the user `system:node:NAME`, whose rights
//!   [`super::authz`] decides.
//!
//! A node's credentials live in the store (so every server sharing an etcd knows them)
//! under `/registry/nodectl.io/nodecredentials/NAME`, which no API path reaches: the
//! SHA-256 of its token's secret, and a salted SHA-256 of the password it registered with.
//! Registering a name again rotates its token only with the same password, so the join
//! token alone cannot take over a registered node (k3s keeps a node password for this).
//! The admin revokes a node's credentials (a lost machine; a name to be given to another)
//! with `DELETE /v1-nodectl/register/NAME`; the name may then register with any password.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::status::ApiError;
use crate::server::registry::objects::{Store, blocking};
use crate::server::store::StoreError;

/// The registration endpoint (not a Kubernetes resource: no get, list or watch).
/// `DELETE REGISTER_PATH/NAME` (admin only) revokes a node's credentials.
pub const REGISTER_PATH: &str = "/v1-nodectl/register";
const CREDENTIALS_PREFIX: &str = "/registry/nodectl.io/nodecredentials/";
/// How long a verified node token is trusted without reading the store again. A token
/// rotated through another server keeps working here for at most this long.
const VERIFIED_FOR: Duration = Duration::from_secs(10);
const TOKEN_PREFIX: &str = "node:";
/// kube-apiserver's privileged group.
pub const MASTERS: &str = "system:masters";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum User {
    Admin,
    /// Holds the join token.
    Joining,
    /// `system:node:NAME`.
    Node(String),
    /// Anyone else (an impersonated user, a service account): whatever RBAC grants
    /// `name` and `groups` (see [`super::rbac`]).
    Named {
        name: String,
        groups: Vec<String>,
    },
}

/// The user a client certificate names, as kube-apiserver's x509 authenticator reads it:
/// the subject's common name is the user, each organization a group. The TLS layer has
/// checked already that the cluster CA signed it for client use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateUser {
    pub name: String,
    pub groups: Vec<String>,
}

/// A connection's verified client certificate, if it presented one (a request extension).
#[derive(Clone, Debug, Default)]
pub struct ClientCertificate(pub Option<CertificateUser>);

impl CertificateUser {
    /// From a DER certificate; None without a common name.
    pub fn from_der(der: &[u8]) -> Option<CertificateUser> {
        use x509_parser::prelude::FromDer as _;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
        let subject = cert.subject();
        let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
        if name.is_empty() {
            return None;
        }
        let groups = subject.iter_organization().filter_map(|o| o.as_str().ok()).map(str::to_string).collect();
        Some(CertificateUser { name, groups })
    }

    /// A node's certificate (`system:node:NAME` in `system:nodes`) is that node, as the Node
    /// authorizer knows it; any other is a user RBAC decides for.
    fn user(&self) -> User {
        if let Some(node) = self.name.strip_prefix("system:node:")
            && self.groups.iter().any(|g| g == "system:nodes")
            && !node.is_empty()
        {
            return User::Node(node.to_string());
        }
        let mut groups = self.groups.clone();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        User::Named { name: self.name.clone(), groups }
    }
}

impl User {
    /// The user name Kubernetes would report.
    pub fn name(&self) -> String {
        match self {
            User::Admin => "system:admin".into(),
            User::Joining => "system:bootstrap:nodectl-join".into(),
            User::Node(n) => format!("system:node:{n}"),
            User::Named { name, .. } => name.clone(),
        }
    }
}

impl User {
    /// The groups Kubernetes puts such a user in.
    pub fn groups(&self) -> Vec<String> {
        let fixed: &[&str] = match self {
            User::Admin => &["system:masters", "system:authenticated"],
            User::Joining => &["system:bootstrappers", "system:authenticated"],
            User::Node(_) => &["system:nodes", "system:authenticated"],
            User::Named { groups, .. } => return groups.clone(),
        };
        fixed.iter().map(|g| g.to_string()).collect()
    }

    /// In `system:masters`, which kube-apiserver lets do anything before any authorizer
    /// is asked (the admin token; anyone impersonating that group, if allowed to).
    pub fn is_master(&self) -> bool {
        self.groups().iter().any(|g| g == MASTERS)
    }
}

/// The answer to a SelfSubjectReview (`kubectl auth whoami`).
pub fn self_subject_review(user: &User) -> Value {
    json!({
        "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": crate::model::time::now_rfc3339()},
        "status": {"userInfo": {"username": user.name(), "groups": user.groups()}},
    })
}

pub struct Auth {
    admin_token: String,
    /// The in-process controllers' token (see `crate::server::controllers::client`).
    controller_token: Option<String>,
    join_token: String,
    ca_pem: String,
    store: Store,
    /// SHA-256 of a node token checked lately, its node, and when it was checked.
    verified: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    signer: Option<std::sync::Arc<crate::server::pki::Signer>>,
    /// Requests without credentials are [`anonymous`] (`--anonymous-auth`, on by default as
    /// in kube-apiserver); off, they are 401.
    anonymous: bool,
}

/// The user of a request without credentials, as kube-apiserver's anonymous authenticator
/// names it: RBAC decides what it may do (kube's defaults bind only
/// system:public-info-viewer to its group: the health checks and /version).
pub fn anonymous() -> User {
    User::Named { name: ANONYMOUS.into(), groups: vec!["system:unauthenticated".into()] }
}

/// The name of [`anonymous`].
pub const ANONYMOUS: &str = "system:anonymous";

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn credentials_key(node: &str) -> String {
    format!("{CREDENTIALS_PREFIX}{node}")
}

/// A node's stored credentials.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Credentials {
    /// hex SHA-256 of the token's secret part.
    token_hash: String,
    password_salt: String,
    /// hex SHA-256 of salt and password.
    password_hash: String,
    registered: String,
}

impl Auth {
    pub fn new(admin_token: String, join_token: String, ca_pem: String, store: Store) -> Auth {
        Auth {
            admin_token,
            controller_token: None,
            join_token,
            ca_pem,
            store,
            verified: Mutex::new(HashMap::new()),
            signer: None,
            anonymous: true,
        }
    }

    /// Whether requests without credentials are [`anonymous`] (true) or 401 (false).
    pub fn with_anonymous(mut self, anonymous: bool) -> Auth {
        self.anonymous = anonymous;
        self
    }

    /// Whether a request without credentials is let in as [`anonymous`].
    pub fn allows_anonymous(&self) -> bool {
        self.anonymous
    }

    /// Signs the serving certificates that registering nodes ask for.
    pub fn with_signer(mut self, signer: std::sync::Arc<crate::server::pki::Signer>) -> Auth {
        self.signer = Some(signer);
        self
    }

    /// Accepts `token` as the controllers' user, `system:kube-controller-manager`.
    pub fn with_controller_token(mut self, token: String) -> Auth {
        self.controller_token = Some(token);
        self
    }

    /// The request's user: from the client certificate the connection presented, if any
    /// (kube-apiserver asks its x509 authenticator before tokens), else from its bearer
    /// token; without either, [`anonymous`] if allowed. A bearer token that is no one's is
    /// 401, never anonymous.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        certificate: Option<&CertificateUser>,
    ) -> Result<User, ApiError> {
        if let Some(c) = certificate {
            return Ok(c.user());
        }
        let token =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let token = match token.map(str::trim) {
            Some(t) => t,
            // As kube's union of authenticators: no bearer token (or another scheme, such
            // as Basic, that none of ours reads) falls through to the anonymous one.
            None if self.anonymous => return Ok(anonymous()),
            None => return Err(ApiError::unauthorized()),
        };
        if constant_time_eq(token.as_bytes(), self.admin_token.as_bytes()) {
            return Ok(User::Admin);
        }
        if constant_time_eq(token.as_bytes(), self.join_token.as_bytes()) {
            return Ok(User::Joining);
        }
        if let Some(c) = &self.controller_token
            && constant_time_eq(token.as_bytes(), c.as_bytes())
        {
            return Ok(User::Named {
                name: crate::server::controllers::client::USER.into(),
                groups: vec!["system:authenticated".into()],
            });
        }
        if super::tokens::is_jwt(token) {
            // A ServiceAccount's token (TokenRequest).
            return match super::tokens::authenticate(&self.store, token).await? {
                Some((ns, name)) => Ok(User::Named {
                    name: format!("system:serviceaccount:{ns}:{name}"),
                    groups: vec![
                        "system:serviceaccounts".into(),
                        format!("system:serviceaccounts:{ns}"),
                        "system:authenticated".into(),
                    ],
                }),
                None => Err(ApiError::unauthorized()),
            };
        }
        let (node, secret) = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.rsplit_once(':'))
            .filter(|(n, s)| !n.is_empty() && !s.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let fingerprint = sha256(&[token.as_bytes()]);
        if let Some((name, at)) =
            self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&fingerprint)
            && at.elapsed() < VERIFIED_FOR
        {
            return Ok(User::Node(name.clone()));
        }
        let (store, key) = (self.store.clone(), credentials_key(node));
        let stored =
            blocking(move || store.get(&key).map_err(|e| ApiError::from_store(e, "nodecredentials", ""))).await?;
        let Some(kv) = stored else { return Err(ApiError::unauthorized()) };
        let creds: Credentials = serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("the stored credentials of node {node} are corrupt: {e}")))?;
        if !constant_time_eq(hex::encode(sha256(&[secret.as_bytes()])).as_bytes(), creds.token_hash.as_bytes()) {
            return Err(ApiError::unauthorized());
        }
        let mut cache = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: stale entries go whenever the cache grows large.
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < VERIFIED_FOR);
        }
        cache.insert(fingerprint, (node.to_string(), Instant::now()));
        Ok(User::Node(node.to_string()))
    }

    /// `DELETE /v1-nodectl/register/NAME`: the node's token stops working (here at once, on
    /// other servers sharing the store within [`VERIFIED_FOR`]) and its name is free.
    pub async fn revoke(&self, node: &str) -> Result<Value, ApiError> {
        let (store, key, n) = (self.store.clone(), credentials_key(node), node.to_string());
        if crate::model::names::name_problem(node, false).is_some() {
            return Err(ApiError::not_found("noderegistrations", node));
        }
        blocking(move || match store.delete(&key, None) {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound { .. }) => Err(ApiError::not_found("noderegistrations", &n)),
            Err(e) => Err(ApiError::from_store(e, "noderegistrations", &n)),
        })
        .await?;
        self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|_, (name, _)| name != node);
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": node, "kind": "noderegistrations"}}),
        )
    }

    /// `POST /v1-nodectl/register` with `{"nodeName": N, "password": P}`: a new token for
    /// node N (201 the first time, 200 when a registered node rotates its token with its
    /// password), the CA, and a kubeconfig for `https://HOST` as the request named it.
    /// With `"servingCSR": PEM` the answer also holds `servingCert`, the node's serving
    /// certificate signed by the CA (as k3s hands its agents theirs).
    pub async fn register(&self, body: &[u8], host: Option<&str>) -> Result<(StatusCode, Value), ApiError> {
        let req: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
        let node = req.get("nodeName").and_then(Value::as_str).unwrap_or_default().to_string();
        let password = req.get("password").and_then(Value::as_str).unwrap_or_default().to_string();
        let mut causes = Vec::new();
        if node.is_empty() {
            causes.push(("nodeName".to_string(), "Required value".to_string()));
        } else if let Some(problem) = crate::model::names::name_problem(&node, false) {
            causes.push(("nodeName".to_string(), problem));
        }
        if password.is_empty() {
            causes.push((
                "password".to_string(),
                "Required value: a secret the node keeps, to register again later".to_string(),
            ));
        } else if password.len() > 1024 {
            causes.push(("password".to_string(), "Too long: may not be more than 1024 bytes".to_string()));
        }
        let csr = req.get("servingCSR").and_then(Value::as_str).filter(|c| !c.is_empty());
        if req.get("servingCSR").is_some_and(|c| !c.is_string()) {
            causes.push(("servingCSR".to_string(), "Invalid value: must be a PEM string".to_string()));
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid("NodeRegistration", &node, causes));
        }
        // Signed before the token changes: a bad request loses the node nothing.
        let serving_cert = match (csr, &self.signer) {
            (None, _) => None,
            (Some(csr), Some(signer)) => Some(signer.sign_serving(&node, csr).map_err(|e| {
                ApiError::invalid("NodeRegistration", &node, vec![("servingCSR".to_string(), e.to_string())])
            })?),
            (Some(_), None) => return Err(ApiError::internal("this server signs no serving certificates")),
        };
        let secret = crate::server::pki::random_token();
        let token = format!("{TOKEN_PREFIX}{node}:{secret}");
        let (store, key, n) = (self.store.clone(), credentials_key(&node), node.clone());
        let created = blocking(move || {
            for _ in 0..5 {
                let salt = crate::server::pki::random_token();
                let creds = Credentials {
                    token_hash: hex::encode(sha256(&[secret.as_bytes()])),
                    password_hash: hex::encode(sha256(&[salt.as_bytes(), password.as_bytes()])),
                    password_salt: salt,
                    registered: crate::model::time::now_rfc3339(),
                };
                let value = serde_json::to_vec(&creds)
                    .map_err(|e| ApiError::internal(format!("encoding node credentials: {e}")))?;
                let err = |e| ApiError::from_store(e, "nodecredentials", &n);
                let Some(current) = store.get(&key).map_err(err)? else {
                    match store.create(&key, &value) {
                        Ok(_) => return Ok(true),
                        Err(StoreError::AlreadyExists { .. }) => continue,
                        Err(e) => return Err(err(e)),
                    }
                };
                let old: Credentials = serde_json::from_slice(&current.value)
                    .map_err(|e| ApiError::internal(format!("the stored credentials of node {n} are corrupt: {e}")))?;
                let given = hex::encode(sha256(&[old.password_salt.as_bytes(), password.as_bytes()]));
                if !constant_time_eq(given.as_bytes(), old.password_hash.as_bytes()) {
                    let mut e = ApiError::new(
                        StatusCode::FORBIDDEN,
                        "Forbidden",
                        format!("node {n:?} is already registered with another password; its credentials are not given out again"),
                    );
                    e.details = Some(json!({"name": n, "kind": "noderegistrations"}));
                    return Err(e);
                }
                match store.update(&key, &value, Some(current.mod_revision)) {
                    Ok(_) => return Ok(false),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(err(e)),
                }
            }
            Err(ApiError::conflict("noderegistrations", &n))
        })
        .await?;
        // The old token stops working here at once (other servers: within VERIFIED_FOR).
        self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|_, (name, _)| *name != node);
        let server = format!("https://{}", host.unwrap_or("127.0.0.1:6443"));
        let kubeconfig =
            super::super::pki::kubeconfig(&server, &self.ca_pem, &format!("system:node:{node}"), &token, "default");
        let mut answer = json!({
            "kind": "NodeCredentials", "apiVersion": "nodectl.io/v1",
            "nodeName": node, "user": format!("system:node:{node}"),
            "token": token, "caCert": self.ca_pem, "kubeconfig": kubeconfig,
        });
        if let Some(cert) = serving_cert {
            answer["servingCert"] = Value::String(cert);
        }
        Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, answer))
    }
}
