//! The daemon's local API: HTTP over a unix socket (mode 0600) under the state root, paths
//! and objects as the Kubernetes API has them (a Pod is a real `v1.Pod` with its status),
//! errors as `v1.Status`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::{AdmitError, Daemon, DaemonError, Entry, logs, streaming};
use crate::node::pod_state;

type Shared = State<Arc<Daemon>>;

/// What an apply did: created, configured (replaced) or unchanged, as kubectl says it.
pub const APPLIED: &str = "x-nodectl-applied";

/// A `v1.Status` failure, as kube-apiserver answers.
fn status(code: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code.as_u16(),
    });
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn not_found(ns: &str, name: &str) -> Response {
    let _ = ns;
    status(StatusCode::NOT_FOUND, "NotFound", format!("pods \"{name}\" not found"))
}

fn json<T: serde::Serialize>(code: StatusCode, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(s) => (code, [(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()),
    }
}

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/api/v1/pods", get(list).post(create))
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(read).delete(delete))
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(log))
        .route("/api/v1/namespaces/{ns}/pods/{name}/events", get(events))
        .route("/api/v1/top", get(top))
        .route("/metrics", get(metrics))
        .with_state(daemon)
}

/// What the node serves the API server (over HTTPS with client certificates: see
/// `crate::node::agent::serving`), on the kubelet's paths.
pub fn server_router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/containerLogs/{ns}/{name}/{container}", get(container_log))
        .route("/exec/{ns}/{name}/{container}", get(container_exec).post(container_exec))
        .route("/attach/{ns}/{name}/{container}", get(container_attach).post(container_attach))
        .route("/portForward/{ns}/{name}", get(port_forward).post(port_forward))
        .with_state(daemon)
}

/// `/portForward/NS/POD`: SPDY/3.1 inside a WebSocket (`SPDY/3.1+portforward.k8s.io`), or
/// a plain `Upgrade: SPDY/3.1` (`X-Stream-Protocol-Version: portforward.k8s.io`).
async fn port_forward(
    State(d): Shared,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    use streaming::portforward;
    let (mut parts, _body) = req.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let target = match tokio::task::spawn_blocking(move || portforward::target_of(&d, &ns, &name)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return status(StatusCode::NOT_FOUND, "NotFound", e.to_string()),
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()),
    };
    if upgrade == "websocket" {
        return match <axum::extract::ws::WebSocketUpgrade as axum::extract::FromRequestParts<()>>::from_request_parts(
            &mut parts,
            &(),
        )
        .await
        {
            Ok(ws) => portforward::websocket(ws, target),
            Err(rejection) => rejection.into_response(),
        };
    }
    if !upgrade.split(',').any(|u| u.trim() == "spdy/3.1") {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "Upgrade request required");
    }
    let offered: Vec<&str> = parts
        .headers
        .get_all(portforward::PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.contains(&portforward::PROTOCOL) {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [{:?}]",
                portforward::PROTOCOL
            ),
        );
    }
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "this connection cannot be upgraded");
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => portforward::serve(hyper_util::rt::TokioIo::new(upgraded), target).await,
            Err(err) => tracing::debug!(%err, "port-forward: the upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header(portforward::PROTOCOL_HEADER, portforward::PROTOCOL)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|e| status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()))
}

type Upgrade = Result<axum::extract::ws::WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

/// `/exec/NS/POD/CONTAINER?command=…`: a command in a running container, over WebSocket.
async fn container_exec(
    State(d): Shared,
    UrlPath(target): UrlPath<(String, String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    ws: Upgrade,
) -> Response {
    stream(d, streaming::Verb::Exec, target, query, ws).await
}

/// `/attach/NS/POD/CONTAINER`: a running container's own stdio, over WebSocket.
async fn container_attach(
    State(d): Shared,
    UrlPath(target): UrlPath<(String, String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    ws: Upgrade,
) -> Response {
    stream(d, streaming::Verb::Attach, target, query, ws).await
}

async fn stream(
    d: Arc<Daemon>,
    verb: streaming::Verb,
    (ns, name, container): (String, String, String),
    query: Option<String>,
    ws: Upgrade,
) -> Response {
    use streaming::StreamError;
    let options = match streaming::Options::parse(verb, query.as_deref().unwrap_or("")) {
        Ok(o) => o,
        Err(m) => return status(StatusCode::BAD_REQUEST, "BadRequest", m),
    };
    let Ok(ws) = ws else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "only WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) is served here, not SPDY",
        );
    };
    let mon = match tokio::task::spawn_blocking({
        let container = container.clone();
        move || streaming::monitor_of(&d, &ns, &name, &container)
    })
    .await
    {
        Ok(Ok(m)) => m,
        Ok(Err(e @ StreamError::NoPod(_))) => return status(StatusCode::NOT_FOUND, "NotFound", e.to_string()),
        Ok(Err(e @ (StreamError::NoContainer { .. } | StreamError::NotRunning(_)))) => {
            return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string());
        }
        Ok(Err(e)) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()),
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()),
    };
    streaming::upgrade(ws, verb, mon, container, options)
}

/// `/metrics` alone, for the TCP address Prometheus scrapes (nothing else is reachable
/// there: the pods are root's, through the unix socket).
pub fn metrics_router(daemon: Arc<Daemon>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(daemon)
}

async fn metrics(State(d): Shared) -> Response {
    let text = tokio::task::spawn_blocking(move || {
        let usage = super::metrics::usage(&d);
        super::metrics::render(&d, &usage)
    })
    .await;
    match text {
        Ok(t) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], t).into_response(),
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()),
    }
}

/// The cpu rate and memory of every running container, over a short window.
async fn top(State(d): Shared) -> Response {
    const WINDOW: Duration = Duration::from_millis(500);
    let first = d.clone();
    let before = tokio::task::spawn_blocking(move || super::metrics::usage(&first)).await.unwrap_or_default();
    let start = std::time::Instant::now();
    tokio::time::sleep(WINDOW).await;
    let after = tokio::task::spawn_blocking(move || super::metrics::usage(&d)).await.unwrap_or_default();
    json(StatusCode::OK, &super::metrics::top(&before, &after, start.elapsed()))
}

/// Serves until `shutdown` completes.
pub async fn serve(
    daemon: Arc<Daemon>,
    socket: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(super::io(format!("create {}", dir.display())))?;
    }
    // A socket left by a daemon that was killed: we hold the daemon lock, so it is stale.
    let _ = std::fs::remove_file(socket);
    let listener =
        tokio::net::UnixListener::bind(socket).map_err(super::io(format!("listen on {}", socket.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(super::io(format!("chmod {}", socket.display())))?;
    axum::serve(listener, router(daemon))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(super::io(format!("serve on {}", socket.display())))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CreateQuery {
    /// Create or replace (`nodectl apply`): a changed spec replaces the pod.
    #[serde(default)]
    apply: bool,
}

fn pod_list(entries: &[Arc<Entry>]) -> serde_json::Value {
    let items: Vec<_> = entries.iter().map(|e| e.pod_with_status()).collect();
    serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
}

async fn list(State(d): Shared) -> Response {
    json(StatusCode::OK, &pod_list(&d.list()))
}

async fn read(State(d): Shared, UrlPath((ns, name)): UrlPath<(String, String)>) -> Response {
    match d.get(&ns, &name) {
        Some(e) => json(StatusCode::OK, &e.pod_with_status()),
        None => not_found(&ns, &name),
    }
}

async fn create(State(d): Shared, Query(q): Query<CreateQuery>, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "the manifest is not UTF-8");
    };
    let manifest = match crate::model::manifest::parse("the manifest", text) {
        Ok(m) => m,
        Err(e) => return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string()),
    };
    let ns = manifest.pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = manifest.pod.metadata.name.clone().unwrap_or_default();
    let mut code = StatusCode::CREATED;
    if q.apply
        && let Some(old) = d.get(&ns, &name)
    {
        if old.pod.spec == manifest.pod.spec && !old.deleting() {
            let mut r = json(StatusCode::OK, &old.pod_with_status());
            r.headers_mut().insert(APPLIED, header::HeaderValue::from_static("unchanged"));
            return r;
        }
        // A pod's spec cannot change in place: the old one goes, then the new one comes.
        old.delete(None);
        let grace = old.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
        let until = tokio::time::Instant::now() + Duration::from_secs(grace.max(0) as u64 + 30);
        while d.get(&ns, &name).is_some_and(|e| e.uid == old.uid) {
            if tokio::time::Instant::now() > until {
                return status(StatusCode::CONFLICT, "Conflict", format!("pods \"{name}\" is still being deleted"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        code = StatusCode::OK;
    }
    match d.admit(manifest) {
        Ok(e) => {
            let mut r = json(code, &e.pod_with_status());
            let how = if code == StatusCode::CREATED { "created" } else { "configured" };
            r.headers_mut().insert(APPLIED, header::HeaderValue::from_static(how));
            r
        }
        Err(e @ AdmitError::Exists(_)) => status(StatusCode::CONFLICT, "AlreadyExists", e.to_string()),
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeleteQuery {
    grace_period_seconds: Option<i64>,
}

async fn delete(
    State(d): Shared,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Response {
    let Some(e) = d.get(&ns, &name) else { return not_found(&ns, &name) };
    e.delete(q.grace_period_seconds.map(|s| Duration::from_secs(s.max(0) as u64)));
    json(StatusCode::OK, &e.pod_with_status())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    container: Option<String>,
    #[serde(default)]
    previous: bool,
    tail_lines: Option<usize>,
    #[serde(default)]
    timestamps: bool,
    #[serde(default)]
    follow: bool,
    since_seconds: Option<i64>,
    since_time: Option<String>,
    limit_bytes: Option<i64>,
}

impl LogQuery {
    /// The query's time bound and byte limit, checked as the API server checks
    /// PodLogOptions; the error is the Invalid status's message.
    fn bounds(&self) -> Result<(Option<chrono::DateTime<chrono::Utc>>, Option<usize>), String> {
        if self.since_seconds.is_some() && self.since_time.is_some() {
            return Err("PodLogOptions is invalid: at most one of sinceTime or sinceSeconds may be specified".into());
        }
        let since = match (self.since_seconds, self.since_time.as_deref()) {
            (Some(s), _) if s < 1 => {
                return Err(format!("sinceSeconds: Invalid value: {s}: must be greater than 0"));
            }
            // Further back than time goes: every line.
            (Some(s), _) => {
                chrono::TimeDelta::try_seconds(s).and_then(|d| crate::model::time::now().checked_sub_signed(d))
            }
            (None, Some(t)) => match chrono::DateTime::parse_from_rfc3339(t) {
                Ok(t) => Some(t.with_timezone(&chrono::Utc)),
                Err(e) => return Err(format!("sinceTime: Invalid value: {t:?}: {e}")),
            },
            (None, None) => None,
        };
        let limit = match self.limit_bytes {
            Some(n) if n < 1 => return Err(format!("limitBytes: Invalid value: {n}: must be greater than 0")),
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => None,
        };
        Ok((since, limit))
    }
}

async fn log(State(d): Shared, UrlPath((ns, name)): UrlPath<(String, String)>, Query(q): Query<LogQuery>) -> Response {
    pod_log(d, ns, name, q).await
}

/// `/containerLogs/NS/POD/CONTAINER`, the kubelet's path, which the API server proxies to.
async fn container_log(
    State(d): Shared,
    UrlPath((ns, name, container)): UrlPath<(String, String, String)>,
    Query(mut q): Query<LogQuery>,
) -> Response {
    q.container = Some(container);
    pod_log(d, ns, name, q).await
}

/// A container's log, as `kubectl logs` asks for it.
async fn pod_log(d: Arc<Daemon>, ns: String, name: String, q: LogQuery) -> Response {
    let (since, limit_bytes) = match q.bounds() {
        Ok(b) => b,
        Err(m) => return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", m),
    };
    let Some(e) = d.get(&ns, &name) else { return not_found(&ns, &name) };
    let view = e.view().clone();
    let names: Vec<&str> = view.statuses.iter().filter(|c| !c.init).map(|c| c.name.as_str()).collect();
    let container = match q.container.as_deref() {
        Some(c) => c.to_string(),
        None if names.len() == 1 => names[0].to_string(),
        None => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("a container name must be specified for pod {name}, choose one of: [{}]", names.join(" ")),
            );
        }
    };
    let Some(c) = view.statuses.iter().find(|c| c.name == container) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("container {container} is not valid for pod {name}"),
        );
    };
    // The latest run: the one running or ended, or, while waiting to restart, the one before.
    let latest = match c.state {
        crate::node::reconcile::State::BackOff { .. }
        | crate::node::reconcile::State::Waiting
        | crate::node::reconcile::State::ConfigError { .. } => c.restart_count.saturating_sub(1),
        _ => c.restart_count,
    };
    let restart = if q.previous {
        match latest.checked_sub(1) {
            Some(r) => r,
            None => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("previous terminated container \"{container}\" in pod \"{name}\" not found"),
                );
            }
        }
    } else {
        latest
    };
    let dir = pod_state::log_dir(&pod_state::pod_dir(&d.opts.root, &e.uid), &container);
    let query = logs::Query { tail: q.tail_lines, timestamps: q.timestamps, since, limit_bytes };
    if q.follow && !q.previous {
        return follow(e.clone(), container, restart, dir, query);
    }
    match tokio::task::spawn_blocking(move || logs::read(&dir, restart, &query)).await {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, "text/plain")], bytes).into_response(),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("container \"{container}\" in pod \"{name}\" is waiting to start: no log yet"),
        ),
        Ok(Err(err)) => status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", err.to_string()),
        Err(err) => status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", err.to_string()),
    }
}

/// `logs -f`: the log streamed as it is written, until that run of the container ends (or
/// the pod goes, or the client hangs up).
fn follow(e: Arc<Entry>, container: String, restart: u32, dir: std::path::PathBuf, query: logs::Query) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    tokio::task::spawn_blocking(move || {
        let running = || {
            !e.deleting()
                && e.view().statuses.iter().any(|c| {
                    c.name == container
                        && c.restart_count == restart
                        && matches!(c.state, crate::node::reconcile::State::Running { .. })
                })
        };
        let mut send = |b: Vec<u8>| tx.blocking_send(b).is_ok();
        if let Err(err) = logs::follow(&dir, restart, &query, &running, &mut send) {
            let _ = tx.blocking_send(format!("nodectl: reading the log: {err}\n").into_bytes());
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(axum::body::Bytes::from(b)), rx))
    });
    ([(header::CONTENT_TYPE, "text/plain")], axum::body::Body::from_stream(stream)).into_response()
}

async fn events(State(d): Shared, UrlPath((ns, name)): UrlPath<(String, String)>) -> Response {
    let Some(e) = d.get(&ns, &name) else { return not_found(&ns, &name) };
    let time = |t: std::time::SystemTime| {
        chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let items: Vec<serde_json::Value> = e
        .view()
        .events
        .iter()
        .map(|ev| {
            serde_json::json!({
                "type": ev.kind, "reason": ev.reason, "message": ev.message, "count": ev.count,
                "firstTimestamp": time(ev.first), "lastTimestamp": time(ev.last),
                "involvedObject": {"kind": "Pod", "namespace": ns, "name": name, "uid": e.uid},
            })
        })
        .collect();
    json(StatusCode::OK, &serde_json::json!({"apiVersion": "v1", "kind": "EventList", "items": items}))
}
