//! The HTTP API: discovery, then objects under `/api/v1/…` and `/apis/GROUP/VERSION/…`,
//! behind bearer-token authentication ([`auth`]) and authorization ([`authz`]); node
//! registration at [`auth::REGISTER_PATH`].

// Requests come from clients: a bad one is an error answer, never a panic.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod auth;
pub mod authz;
#[cfg(test)]
mod fuzz;
pub mod gnostic;
pub mod health;
pub mod metrics;
pub mod node_proxy;
pub mod openapi;
pub mod pods;
pub mod policy;
mod printer_columns;
pub mod protobuf;
pub mod rbac;
pub mod reviews;
pub mod status;
pub mod table;
pub mod tokens;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::server::registry::RegistryError;
use crate::server::registry::objects::{self, ListOptions, Store};
use crate::server::registry::resources::{self, Resource};
use status::ApiError;

pub struct Api {
    pub store: Store,
    pub auth: auth::Auth,
    pub nodes: node_proxy::NodeDialer,
    /// Request counts and latencies for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// The authority the client asked for (HTTP/2's :authority, HTTP/1's Host), if it is a
/// plain host[:port]: registration writes it into the node's kubeconfig.
fn requested_host(parts: &axum::http::request::Parts) -> Option<String> {
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(String::from))?;
    host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)).then_some(host)
}

/// The largest request body, as kube-apiserver's (3 MiB): a body is held whole in memory.
pub const MAX_BODY: usize = 3 << 20;

/// How much of a body over [`MAX_BODY`] is read and dropped before the 413, so that a
/// client still writing gets the answer rather than a broken pipe (Go's net/http drains a
/// little the same way); past it the connection is closed on the client.
const DRAIN_BEYOND: usize = 16 << 20;

/// The request body, whole, if it is at most [`MAX_BODY`]; a 413 if it is larger.
async fn read_body(body: axum::body::Body) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut kept: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", format!("reading the request body: {e}"))
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen <= MAX_BODY {
            kept.extend_from_slice(&chunk);
        } else if seen > MAX_BODY.saturating_add(DRAIN_BEYOND) {
            break;
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {MAX_BODY}"),
        ));
    }
    Ok(Bytes::from(kept))
}

/// Every request, counted and timed for `/metrics`.
pub async fn dispatch(State(api): State<Arc<Api>>, req: axum::extract::Request) -> Response {
    let start = std::time::Instant::now();
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let labels = metrics::Labels::of(req.method(), req.uri().path(), req.uri().query().unwrap_or(""), content_type);
    let metrics = api.metrics.clone();
    let response = serve(api, req).await;
    metrics.record(labels, start, response)
}

/// A request: authenticate, then route by path.
async fn serve(api: Arc<Api>, req: axum::extract::Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    // Health is open to anyone kube-apiserver's system:public-info-viewer lets in: every
    // user, and with --anonymous-auth (the default) anyone at all. Answered before the
    // token is checked, so a probe costs no store read.
    let health = parts.method == Method::GET && health::is_health_path(parts.uri.path());
    let verbose =
        parts.uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "verbose" || kv.starts_with("verbose=")));
    if health && api.auth.allows_anonymous() {
        return health::answer(&api.store, parts.uri.path(), verbose).await;
    }
    let certificate = parts.extensions.get::<auth::ClientCertificate>().and_then(|c| c.0.as_ref());
    let user = match api.auth.authenticate(&parts.headers, certificate).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    if health {
        return health::answer(&api.store, parts.uri.path(), verbose).await;
    }
    // An anonymous request does not count as authenticated for the connection limits.
    if user.name() != auth::ANONYMOUS
        && let Some(connection) = parts.extensions.get::<Arc<crate::server::conn::Connection>>()
    {
        connection.authenticated();
    }
    // `kubectl --as=jane`: from here on the request is jane's, if the caller may
    // impersonate her.
    let user = match authz::impersonate(&api.store, &user, &parts.headers).await {
        Ok(Some(impersonated)) => impersonated,
        Ok(None) => user,
        Err(e) => return e.into_response(),
    };
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if parts.uri.path() == auth::REGISTER_PATH {
        return match (&parts.method, &user) {
            (&Method::POST, auth::User::Admin | auth::User::Joining) => {
                match api.auth.register(&body, requested_host(&parts).as_deref()).await {
                    Ok((code, answer)) => json_response(code, &answer),
                    Err(e) => e.into_response(),
                }
            }
            (&Method::POST, _) => authz::forbidden_path(&user, "create", auth::REGISTER_PATH).into_response(),
            (m, _) => ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{m} is not supported on {}", auth::REGISTER_PATH),
            )
            .into_response(),
        };
    }
    if let Some(node) = parts.uri.path().strip_prefix(auth::REGISTER_PATH).and_then(|rest| rest.strip_prefix('/')) {
        return match (&parts.method, &user) {
            (&Method::DELETE, auth::User::Admin) => match api.auth.revoke(node).await {
                Ok(status) => json_response(StatusCode::OK, &status),
                Err(e) => e.into_response(),
            },
            (&Method::DELETE, _) => authz::forbidden_path(&user, "delete", parts.uri.path()).into_response(),
            (m, _) => ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{m} is not supported on {}", parts.uri.path()),
            )
            .into_response(),
        };
    }
    if user == auth::User::Joining {
        let verb = parts.method.as_str().to_ascii_lowercase();
        return authz::forbidden_path(&user, &verb, parts.uri.path()).into_response();
    }
    // `kubectl auth whoami`: who the token is. Answered before the body is decoded: the
    // request's body (an empty SelfSubjectReview, in protobuf) says nothing.
    if parts.method == Method::POST && parts.uri.path() == "/apis/authentication.k8s.io/v1/selfsubjectreviews" {
        return json_response(StatusCode::CREATED, &auth::self_subject_review(&user));
    }
    let mut content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let body = if content_type == "application/vnd.kubernetes.protobuf" {
        match protobuf::decode(&body) {
            Ok(obj) => {
                content_type = "application/json".into();
                Bytes::from(obj.to_string())
            }
            Err(e) => {
                return ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!("protobuf body: {e}"),
                )
                .into_response();
            }
        }
    } else if !content_type.is_empty() && !content_type.ends_with("json") && content_type != objects::APPLY_PATCH {
        // YAML bodies other than server-side apply's are not served.
        return ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml, application/vnd.kubernetes.protobuf (got {content_type})"))
            .into_response();
    } else {
        body
    };
    let query: BTreeMap<String, String> =
        match serde_urlencoded::from_str::<Vec<(String, String)>>(parts.uri.query().unwrap_or("")) {
            Ok(pairs) => pairs.into_iter().collect(),
            Err(e) => return ApiError::bad_request(format!("malformed query string: {e}")).into_response(),
        };
    let accept = parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let as_table = table::wanted(accept);
    let request = Request {
        method: &parts.method,
        path: parts.uri.path(),
        query: &query,
        content_type: &content_type,
        accept,
        as_table,
        raw_query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        upgrade: std::sync::Mutex::new(upgrade),
    };
    let answer = match route(&api, &user, &request, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    // Protobuf for the clients that prefer it, on the object routes only: discovery and
    // /openapi answer in their own types, and a Table is JSON (kubectl asks for it so).
    let accepts = protobuf::respond::negotiate(accept);
    let segments: Vec<&str> = parts.uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return answer,
    };
    if !accepts.protobuf || as_table || rest.is_empty() {
        return answer;
    }
    let watching = parts.method == Method::GET && flag(&query, "watch").unwrap_or(false);
    match parse_target(group, version, rest, parts.uri.path()) {
        Ok(t) if watching && t.name.is_none() => {
            protobuf::respond::watch(answer, accepts, &t.resource.api_version(), t.resource.kind)
        }
        _ => protobuf::respond::unary(answer, accepts).await,
    }
}

/// What routing needs of a request.
struct Request<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a BTreeMap<String, String>,
    content_type: &'a str,
    /// The Accept header, or "".
    accept: &'a str,
    /// kubectl get asked for a Table.
    as_table: bool,
    /// The query as sent (a repeated key kept), the headers, and the connection's upgrade
    /// if the client asked for one (`exec` over WebSocket); taken by the one route that
    /// upgrades.
    raw_query: &'a str,
    headers: &'a axum::http::HeaderMap,
    upgrade: std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>,
}

/// A parsed object path.
struct Target {
    resource: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn not_found_path(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
}

fn parse_target(group: &str, version: &str, rest: &[&str], path: &str) -> Result<Target, ApiError> {
    let find = |plural: &str| resources::find(group, version, plural).ok_or_else(|| not_found_path(path));
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        if let Some(r) = resources::find(group, version, rest[2])
            && r.namespaced
        {
            return Ok(Target {
                resource: r,
                namespace: Some(rest[1].to_string()),
                name: owned(rest.get(3)),
                subresource: owned(rest.get(4)),
            });
        }
        if group.is_empty() && rest.len() == 3 {
            // /api/v1/namespaces/NAME/status and the like.
            return Ok(Target {
                resource: find("namespaces")?,
                namespace: None,
                name: Some(rest[1].to_string()),
                subresource: Some(rest[2].to_string()),
            });
        }
        return Err(not_found_path(path));
    }
    let r = find(rest[0])?;
    Ok(Target { resource: r, namespace: None, name: owned(rest.get(1)), subresource: owned(rest.get(2)) })
}

async fn route(api: &Api, user: &auth::User, req: &Request<'_>, body: Bytes) -> Result<Response, ApiError> {
    let (method, path, query, content_type) = (req.method, req.path, req.query, req.content_type);
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    // Discovery, /version, /openapi: RBAC's nonResourceURLs rules decide, with the verb
    // the HTTP method's name, as kube-apiserver has it.
    if !matches!(segments.as_slice(), ["api", _, _, ..] | ["apis", _, _, _, ..]) {
        authz::authorize_path(&api.store, user, &method.as_str().to_ascii_lowercase(), path).await?;
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segments.as_slice() {
        ["version"] => return Ok(json_response(StatusCode::OK, &version_info())),
        ["metrics"] if *method == Method::GET => return Ok(metrics::answer(&api.metrics, &api.store).await),
        ["api"] => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
            ));
        }
        ["apis"] => return Ok(json_response(StatusCode::OK, &resources::group_list())),
        ["apis", g] => {
            return resources::group(g).map(|d| json_response(StatusCode::OK, &d)).ok_or_else(|| not_found_path(path));
        }
        ["openapi", "v3"] => return Ok(json_response(StatusCode::OK, &openapi::root())),
        ["openapi", "v3", gv @ ..] => {
            return openapi::document(&gv.join("/"))
                .map(|d| ([(header::CONTENT_TYPE, "application/json")], d).into_response())
                .ok_or_else(|| not_found_path(path));
        }
        ["openapi", "v2"] if openapi::v2_accepts_json(req.accept) => {
            return Ok(([(header::CONTENT_TYPE, "application/json")], openapi::v2()).into_response());
        }
        ["openapi", "v2"] if openapi::v2_accepts_protobuf(req.accept) => {
            return Ok(([(header::CONTENT_TYPE, openapi::V2_PROTOBUF_ANSWER)], openapi::v2_protobuf()).into_response());
        }
        ["openapi", "v2"] => {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "NotAcceptable",
                format!(
                    "only application/json and {} are served here (asked for {})",
                    openapi::V2_PROTOBUF,
                    req.accept
                ),
            ));
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found_path(path)),
    };
    if rest.is_empty() {
        return resources::resource_list(group, version)
            .map(|l| json_response(StatusCode::OK, &l))
            .ok_or_else(|| not_found_path(path));
    }
    if group == reviews::GROUP
        && version == "v1"
        && let Some((review, namespace)) = reviews::target(rest)
    {
        if *method != Method::POST {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} is not supported on {path}: a review is only created"),
            ));
        }
        let (code, answer) = reviews::create(&api.store, user, review, namespace, query, &body).await?;
        return Ok(json_response(code, &answer));
    }
    let t = parse_target(group, version, rest, path)?;
    let store = api.store.clone();
    let r = t.resource;
    let watching = flag(query, "watch")?;
    let streaming = r.kind == "Pod" && matches!(t.subresource.as_deref(), Some("exec" | "attach" | "portforward"));
    let verb = match (method, t.name.is_some()) {
        // A WebSocket upgrade is a GET, but it runs commands or reaches ports as a POST does:
        // kube-apiserver 1.31+ asks for create (AuthorizePodWebsocketUpgradeCreatePermission).
        (&Method::GET, true) if streaming => "create",
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watching => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} is not supported on {path}"),
            ));
        }
    };
    // A create names its object in the body.
    let body_name = (verb == "create" && t.name.is_none())
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten()
        .and_then(|b| b.pointer("/metadata/name").and_then(Value::as_str).map(String::from));
    let attributes = authz::Attributes {
        verb,
        resource: r,
        subresource: t.subresource.as_deref(),
        namespace: t.namespace.as_deref(),
        name: t.name.as_deref().or(body_name.as_deref()),
    };
    let guard = authz::authorize(&api.store, user, &attributes, query).await?;
    if let (true, Some(sub), Some(ns), Some(name)) =
        (r.kind == "Pod", t.subresource.as_deref(), t.namespace.clone(), t.name.clone())
    {
        match (sub, method) {
            ("binding", &Method::POST) => {
                let (code, status) = pods::bind(store, r, ns, name, &body).await?;
                return Ok(json_response(code, &status));
            }
            ("eviction", &Method::POST) => {
                let (code, status) = pods::evict(store, r, ns, name, &body, query, guard).await?;
                return Ok(json_response(code, &status));
            }
            ("binding" | "eviction", _) => {
                return Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!("{method} is not supported on {path}"),
                ));
            }
            ("log" | "exec" | "attach" | "portforward", &Method::GET | &Method::POST) => {
                let forwarded = pods::Forwarded {
                    query,
                    raw_query: req.raw_query,
                    headers: req.headers,
                    upgrade: req.upgrade.lock().unwrap_or_else(|p| p.into_inner()).take(),
                };
                return pods::on_node(&api.nodes, store, r, ns, name, sub, forwarded).await;
            }
            _ => {}
        }
    }
    // TokenRequest (`kubectl create token NAME`): a token for the ServiceAccount, stored nowhere.
    if let (true, Some("token"), Some(ns), Some(name)) =
        (r.kind == "ServiceAccount", t.subresource.as_deref(), t.namespace.as_deref(), t.name.as_deref())
    {
        if *method != Method::POST {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} is not supported on {path}: a token is only requested"),
            ));
        }
        let node = match user {
            auth::User::Node(n) => Some(n.as_str()),
            _ => None,
        };
        return Ok(json_response(StatusCode::CREATED, &tokens::request(&api.store, ns, name, &body, node).await?));
    }
    let part = match t.subresource.as_deref() {
        None => objects::Part::Main,
        Some("status") if r.has_status() => objects::Part::Status,
        Some("scale") if r.has_scale() => objects::Part::Scale,
        Some("finalize") if r.kind == "Namespace" && *method == Method::PUT => objects::Part::Finalize,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} has no subresource {other:?} here", r.plural),
            ));
        }
    };
    if part != objects::Part::Main && !matches!(*method, Method::GET | Method::PUT | Method::PATCH) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        ));
    }
    // dryRun=All runs a write through everything (defaulting, validation, admission,
    // conflicts) and stores nothing; kubectl apply/delete --dry-run=server and kubectl diff
    // rely on it leaving the live object as it is.
    let dry_run = match query.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            )));
        }
    };
    let validation = match query.get("fieldValidation").map(String::as_str) {
        Some("Strict") => objects::FieldValidation::Strict,
        _ => objects::FieldValidation::Lenient,
    };
    let manager = field_manager(query, req.headers)?;
    let checks =
        |guard: Option<objects::Guard>| objects::Checks { validation, guard, dry_run, manager: manager.clone() };
    // fieldValidation=Warn: the object is stored as with Ignore, and each unknown field
    // comes back as a Warning header, which kubectl prints.
    let warnings: Vec<String> = match (query.get("fieldValidation").map(String::as_str), method, part) {
        (Some("Warn"), &Method::POST | &Method::PUT, objects::Part::Main) => serde_json::from_slice::<Value>(&body)
            .map(|obj| r.unknown_fields(&obj))
            .unwrap_or_default()
            .into_iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect(),
        _ => Vec::new(),
    };
    let with_warnings = |mut resp: Response| {
        for w in &warnings {
            // RFC 7234 warn-code 299, agent "-", the text quoted, as the API server sends it.
            let quoted = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
            if let Ok(v) = header::HeaderValue::from_str(&quoted) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
        resp
    };
    // A ClusterRole written: the aggregated ones are brought up to date before the answer,
    // so that the next request sees them (kube's controller does it within moments).
    let aggregates = r.kind == "ClusterRole" && !dry_run && !matches!(verb, "get" | "list" | "watch");
    let answer = match (method, t.name) {
        (&Method::GET, Some(name)) if part == objects::Part::Scale => {
            Ok(json_response(StatusCode::OK, &objects::scale_of(r, &objects::get(store, r, t.namespace, name).await?)))
        }
        (&Method::GET, Some(name)) => {
            let obj = objects::get(store, r, t.namespace, name).await?;
            if req.as_table {
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(r, std::slice::from_ref(&obj), None, None, true),
                ));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        (&Method::GET, None) if watching => {
            let timeout = number(query, "timeoutSeconds")?;
            let selectors = selectors(query, r)?;
            let allow_bookmarks = flag(query, "allowWatchBookmarks")?;
            let opts = watch::WatchOptions {
                resource_version: query.get("resourceVersion").cloned(),
                timeout,
                selectors,
                as_table: req.as_table,
                allow_bookmarks,
            };
            watch::watch(store, r, t.namespace, opts).await
        }
        (&Method::GET, None) => {
            // A page no larger than MAX_PAGE, whatever the client asks: the server may cut a
            // page short, and the continue token leads on.
            let limit = number(query, "limit")?.map_or(0, |l| l.min(MAX_PAGE)) as usize;
            let (mut resource_version, continue_after) = match query.get("continue").filter(|c| !c.is_empty()) {
                Some(c) => {
                    let (rev, after) =
                        c.split_once(':').ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                    (
                        Some(rev.parse::<i64>().map_err(|_| ApiError::bad_request("invalid continue token"))?),
                        Some(after.to_string()),
                    )
                }
                None => (None, None),
            };
            let continued = resource_version.is_some();
            // resourceVersion alone means "not older than" (the present will do); only
            // resourceVersionMatch=Exact asks for the past, which compaction may have removed.
            let not_older_than = match (
                query.get("resourceVersion").map(String::as_str),
                query.get("resourceVersionMatch").map(String::as_str),
            ) {
                (None | Some("") | Some("0"), _) => None,
                (Some(v), m) => {
                    let rv = v
                        .parse::<i64>()
                        .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?;
                    match m {
                        Some("Exact") if !continued => resource_version = Some(rv),
                        None | Some("") | Some("NotOlderThan") | Some("Exact") => {}
                        Some(other) => {
                            return Err(ApiError::bad_request(format!("unsupported resourceVersionMatch {other:?}")));
                        }
                    }
                    (resource_version.is_none()).then_some(rv)
                }
            };
            let selectors = selectors(query, r)?;
            if limit == 0 && !continued && !req.as_table {
                let body =
                    objects::list_streamed(store, r, t.namespace, resource_version, not_older_than, selectors).await?;
                let body = axum::body::Body::from_stream(body);
                return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response());
            }
            let opts = ListOptions { limit, continue_after, resource_version, selectors };
            let too_old = |at: i64| match not_older_than {
                Some(rv) if at < rv => Err(ApiError::from_store(
                    crate::server::store::StoreError::FutureRevision { requested: rv, current: at },
                    r.plural,
                    "",
                )),
                _ => Ok(()),
            };
            if !req.as_table {
                let (at, body) = match objects::list_json(store, r, t.namespace, opts).await {
                    Err(RegistryError::Expired(_)) if continued => return Err(ApiError::continue_expired()),
                    other => other?,
                };
                too_old(at)?;
                return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response());
            }
            let list = match objects::list(store, r, t.namespace, opts).await {
                Err(RegistryError::Expired(_)) if continued => return Err(ApiError::continue_expired()),
                other => other?,
            };
            too_old(list["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0))?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let t = table::table(
                r,
                &items,
                list["metadata"]["resourceVersion"].as_str(),
                list["metadata"]["continue"].as_str(),
                true,
            );
            Ok(json_response(StatusCode::OK, &t))
        }
        (&Method::POST, None) => {
            let obj = objects::create(store, r, t.namespace, &body, checks(guard)).await?;
            Ok(with_warnings(json_response(StatusCode::CREATED, &obj)))
        }
        (&Method::PUT, Some(name)) => Ok(with_warnings(json_response(StatusCode::OK, &{
            let obj = objects::update(store, r, t.namespace, name, part, &body, checks(guard)).await?;
            if part == objects::Part::Scale { objects::scale_of(r, &obj) } else { obj }
        }))),
        (&Method::PATCH, Some(name)) => {
            // PatchOptions' validation, in its words.
            let options_invalid = |field: &str, message: &str| {
                ApiError::from(RegistryError::invalid(
                    "PatchOptions.meta.k8s.io",
                    "",
                    vec![(field.into(), message.into())],
                ))
            };
            let kind = match objects::PatchKind::from_content_type(content_type) {
                Some(objects::PatchKind::Apply { .. }) if query.get("fieldManager").is_none_or(String::is_empty) => {
                    return Err(options_invalid("fieldManager", "Required value: is required for apply patch"));
                }
                Some(objects::PatchKind::Apply { .. }) => objects::PatchKind::Apply { force: flag(query, "force")? },
                Some(_) if query.contains_key("force") => {
                    return Err(options_invalid("force", "Forbidden: may not be specified for non-apply patch"));
                }
                // As apiextensions-apiserver: a custom kind has no patch strategies.
                Some(objects::PatchKind::Strategic) if r.custom.is_some() => {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    ));
                }
                Some(kind) => kind,
                None => {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        format!(
                            "the patch type {content_type:?} is not supported; use application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json or application/apply-patch+yaml"
                        ),
                    ));
                }
            };
            if let objects::PatchKind::Apply { force } = kind {
                let (obj, created) =
                    objects::apply(store, r, t.namespace, name.clone(), part, (force, &body), checks(guard)).await?;
                let code = if created { StatusCode::CREATED } else { StatusCode::OK };
                return Ok(json_response(code, &obj));
            }
            let obj = objects::patch(store, r, t.namespace, name, part, (kind, &body), checks(guard)).await?;
            Ok(json_response(
                StatusCode::OK,
                &if part == objects::Part::Scale { objects::scale_of(r, &obj) } else { obj },
            ))
        }
        (&Method::DELETE, None) if dry_run => {
            Err(ApiError::bad_request("dryRun is not supported for deletecollection here yet"))
        }
        (&Method::DELETE, None) => {
            let selectors = selectors(query, r)?;
            Ok(json_response(StatusCode::OK, &objects::delete_collection(store, r, t.namespace, selectors).await?))
        }
        (&Method::DELETE, Some(name)) => {
            let mut opts = objects::DeleteOptions::parse(&body, query.get("gracePeriodSeconds"))?;
            opts.dry_run |= dry_run;
            Ok(json_response(StatusCode::OK, &objects::delete(store, r, t.namespace, name, opts, guard).await?))
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )),
    };
    if aggregates
        && answer.is_ok()
        && let Err(e) = rbac::aggregate(&api.store).await
    {
        tracing::warn!(error = %e.message, "aggregating ClusterRoles failed");
    }
    answer
}

/// Who a write's fields go to: the `fieldManager` option, else the client's product name
/// from its User-Agent (`kubectl` of `kubectl/v1.32.0 (linux/amd64) kubernetes/…`), as
/// the API server's default; at most 128 printable characters.
fn field_manager(
    query: &BTreeMap<String, String>,
    headers: &axum::http::HeaderMap,
) -> Result<Option<String>, ApiError> {
    if let Some(m) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        if m.len() > 128 {
            return Err(ApiError::bad_request(format!(
                "fieldManager: Too long: may not be longer than 128 (got {})",
                m.len()
            )));
        }
        if m.chars().any(|c| c.is_control()) {
            return Err(ApiError::bad_request(format!("fieldManager: Invalid value: {m:?}: must be printable")));
        }
        return Ok(Some(m.clone()));
    }
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let product: String = agent.split('/').next().unwrap_or("").chars().filter(|c| !c.is_control()).take(128).collect();
    Ok((!product.is_empty()).then_some(product))
}

/// The most objects one list page holds.
const MAX_PAGE: u64 = 10_000;

/// A non-negative integer query parameter (`limit`, `timeoutSeconds`); the API server
/// answers 400 to one that is not a number.
fn number(query: &BTreeMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        // The API server takes int64s; a negative one asks for nothing (no limit, no timeout).
        Some(v) if v.starts_with('-') && v[1..].bytes().all(|b| b.is_ascii_digit()) && v.len() > 1 => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!("invalid value {v:?} for the query parameter {name}: want an integer"))
        }),
    }
}

/// A boolean query parameter, read as the API server reads it (Go's strconv.ParseBool):
/// the Python client sends `watch=True`.
fn flag(query: &BTreeMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid value {other:?} for the query parameter {name}: want true or false"
        ))),
    }
}

fn selectors(
    query: &BTreeMap<String, String>,
    r: &Resource,
) -> Result<crate::server::registry::selectors::Selectors, ApiError> {
    crate::server::registry::selectors::Selectors::parse(
        query.get("labelSelector").map(String::as_str),
        query.get("fieldSelector").map(String::as_str),
        r.kind,
    )
    .map_err(ApiError::bad_request)
}

fn version_info() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": concat!("v1.32.0+nodectl-", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "rustc", "platform": "linux/amd64",
    })
}

/// The namespaces every cluster has, and the default RBAC policy ([`policy`]).
pub async fn bootstrap(store: &Store) -> Result<(), ApiError> {
    let r = resources::find("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces are not served"))?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let body = json!({"metadata": {"name": ns}});
        let checks = (objects::FieldValidation::Strict, None, false);
        match objects::create_value(store.clone(), r, None, body, checks).await {
            Ok(_) => {}
            Err(RegistryError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    policy::bootstrap(store).await
}

pub fn router(api: Arc<Api>) -> axum::Router {
    axum::Router::new().fallback(guarded).with_state(api)
}

/// [`dispatch`], with a panic in it ending this request with a 500 Status and not the
/// server: see `crate::sys::unwind`.
async fn guarded(state: State<Arc<Api>>, req: axum::extract::Request) -> Response {
    catch_panic(dispatch(state, req)).await
}

/// A request's answer, or a 500 Status if computing it panicked, as kube-apiserver's panic
/// recovery answers.
async fn catch_panic(handler: impl std::future::Future<Output = Response>) -> Response {
    use futures_util::FutureExt as _;
    // AssertUnwindSafe: what requests share (the store, the token cache) is behind locks
    // that a panic poisons and transactions that it rolls back; the token cache tolerates
    // poisoning.
    match crate::sys::unwind::Unwinding(std::panic::AssertUnwindSafe(handler)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "a request handler panicked");
            ApiError::internal("an error on the server (\"unknown\") has prevented the request from succeeding")
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a forked child with the process's panic hook installed, as `nodectl server` has it.
    fn in_child(body: fn() -> i32) -> nix::sys::wait::WaitStatus {
        // SAFETY: the child runs `body` and _exits; the test's other threads are not touched.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                std::panic::set_hook(Box::new(|_| {}));
                crate::sys::unwind::install();
                let code = body();
                // SAFETY: _exit skips the test harness's destructors, which are the parent's.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => nix::sys::wait::waitpid(child, None).expect("waitpid"),
        }
    }

    #[test]
    fn a_panicking_handler_ends_its_request_with_a_500_and_the_server_answers_the_next() {
        let status = in_child(|| {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(async {
                let async_panic = catch_panic(async { panic!("in the handler") }).await;
                // The same in a store call, run on a blocking thread.
                let blocking_panic = catch_panic(async {
                    objects::blocking(|| -> Result<(), ApiError> { panic!("in the store call") })
                        .await
                        .unwrap_err()
                        .into_response()
                })
                .await;
                let next = catch_panic(async { json_response(StatusCode::OK, &json!({})) }).await;
                if async_panic.status() == 500 && blocking_panic.status() == 500 && next.status() == 200 {
                    9
                } else {
                    1
                }
            })
        });
        assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 9)), "{status:?}");
    }
}
