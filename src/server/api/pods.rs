//! Pod subresources beyond status: `binding`, which the scheduler uses to put a pod on a
//! node, `eviction`, a delete that honours disruption budgets (`kubectl drain`), and `log`, `exec`, `attach` and `portforward`, which the pod's node serves.
//!
//! All four are proxied to the node ([`super::node_proxy`]) after the checks the API server
//! makes first (the pod exists, is bound, the container is one of its own; port-forward
//! names no container). `exec`, `attach` and `portforward` are upgraded connections: the
//! server passes the client's upgrade on to the node and joins the two connections byte
//! for byte, whichever protocol they speak (WebSocket, or SPDY/3.1 for port-forward).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::node_proxy::NodeDialer;
use super::status::ApiError;
use crate::server::registry::objects::{Store, blocking};
use crate::server::registry::resources::Resource;

/// `POST …/pods/NAME/binding` with a v1 Binding: sets spec.nodeName to the target node,
/// copies the Binding's annotations, and marks the pod PodScheduled, as the API server
/// does. A pod already bound is 409 Conflict. Answers a Success Status (201).
pub async fn bind(
    store: Store,
    r: &'static Resource,
    ns: String,
    name: String,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let binding: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    crate::model::schema::decode::<k8s_openapi::api::core::v1::Binding>(&binding)
        .map_err(|(field, message)| ApiError::invalid("Binding", &name, vec![(field, message)]))?;
    if binding.pointer("/metadata/name").and_then(Value::as_str).is_some_and(|n| n != name) {
        return Err(ApiError::bad_request("the name of the Binding does not match the name of the pod on the URL"));
    }
    let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let target_kind = binding.pointer("/target/kind").and_then(Value::as_str).unwrap_or_default();
    let mut causes = Vec::new();
    if !target_kind.is_empty() && target_kind != "Node" {
        causes.push((
            "target.kind".to_string(),
            format!("Unsupported value: {target_kind:?}: supported values: \"Node\""),
        ));
    }
    if node.is_empty() {
        causes.push(("target.name".to_string(), "Required value".to_string()));
    } else if let Some(problem) = crate::model::names::name_problem(&node, false) {
        causes.push(("target.name".to_string(), problem));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("Binding", &name, causes));
    }
    let b = crate::server::registry::binding::Binding {
        namespace: ns,
        name,
        uid: binding.pointer("/metadata/uid").and_then(Value::as_str).map(String::from),
        node,
        annotations: binding.pointer("/metadata/annotations").and_then(Value::as_object).cloned().unwrap_or_default(),
    };
    blocking(move || crate::server::registry::binding::bind(store.as_ref(), r, &b).map_err(ApiError::from)).await?;
    Ok((
        StatusCode::CREATED,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// `POST …/pods/NAME/eviction` with a policy/v1 (or v1beta1) Eviction: the pod is deleted
/// if its disruption budget allows it ([`crate::server::registry::eviction`]), with the
/// Eviction's deleteOptions. Answers a Success Status (201), or kube's Failure Status (500)
/// when several budgets select the pod; a budget that does not allow it is a 429.
pub async fn evict(
    store: Store,
    r: &'static Resource,
    ns: String,
    name: String,
    body: &[u8],
    query: &BTreeMap<String, String>,
    guard: Option<crate::server::registry::objects::Guard>,
) -> Result<(StatusCode, Value), ApiError> {
    use crate::server::registry::eviction::{self, Evicted};
    let eviction: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    match eviction.get("apiVersion").and_then(Value::as_str) {
        None | Some("policy/v1" | "policy/v1beta1") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({other}) does not match the expected API version (policy/v1)"
            )));
        }
    }
    if eviction.get("kind").and_then(Value::as_str).is_some_and(|k| k != "Eviction") {
        return Err(ApiError::bad_request(format!("not a Eviction object: {}", eviction["kind"])));
    }
    crate::model::schema::decode::<k8s_openapi::api::policy::v1::Eviction>(&eviction)
        .map_err(|(field, message)| ApiError::invalid("Eviction", &name, vec![(field, message)]))?;
    if eviction.pointer("/metadata/name").and_then(Value::as_str) != Some(name.as_str()) {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    let options = eviction.get("deleteOptions").filter(|o| !o.is_null()).map(|o| o.to_string()).unwrap_or_default();
    let mut opts = crate::server::registry::objects::DeleteOptions::parse(options.as_bytes(), None)?;
    match query.get("dryRun").map(String::as_str) {
        None | Some("") => {}
        Some("All") => opts.dry_run = true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            )));
        }
    }
    match eviction::evict(store, r, ns, name, opts, guard).await? {
        Evicted::Deleted => Ok((
            StatusCode::CREATED,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )),
        Evicted::MoreThanOneBudget => Ok((
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": eviction::MORE_THAN_ONE_BUDGET, "code": 500}),
        )),
    }
}

/// What a request for the node carries besides the pod's name.
pub struct Forwarded<'a> {
    pub query: &'a BTreeMap<String, String>,
    /// The query as sent (`command` repeats), for `exec`.
    pub raw_query: &'a str,
    pub headers: &'a axum::http::HeaderMap,
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// `log`, `exec`, `attach`, `portforward`: the checks the API server makes before it
/// reaches the node, then the node's answer.
pub async fn on_node(
    nodes: &NodeDialer,
    store: Store,
    r: &'static Resource,
    ns: String,
    name: String,
    sub: &str,
    forwarded: Forwarded<'_>,
) -> Result<Response, ApiError> {
    let query = forwarded.query;
    let container = query.get("container").map(String::as_str).filter(|c| !c.is_empty());
    let pod = crate::server::registry::objects::get(store.clone(), r, Some(ns.clone()), name.clone()).await?;
    let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
    };
    let main: Vec<&str> =
        pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    let mut chosen = None;
    if sub != "portforward" {
        let names: Vec<&str> = ["containers", "initContainers", "ephemeralContainers"]
            .iter()
            .flat_map(|l| pod["spec"][*l].as_array().into_iter().flatten())
            .filter_map(|c| c["name"].as_str())
            .collect();
        chosen = match container {
            Some(c) if !names.contains(&c) => {
                return Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}")));
            }
            Some(c) => Some(c),
            None if main.len() == 1 => Some(main[0]),
            None => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    main.join(" ")
                )));
            }
        };
    }
    let seg = super::node_proxy::segment;
    let path = match (sub, chosen) {
        ("log", Some(container)) => {
            let addr = node_address(store, node).await?;
            let passed: Vec<(&str, &str)> = query
                .iter()
                .filter(|(k, _)| LOG_OPTIONS.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut path = format!("/containerLogs/{}/{}/{}", seg(&ns), seg(&name), seg(container));
            if !passed.is_empty() {
                path.push('?');
                path.push_str(&serde_urlencoded::to_string(&passed).unwrap_or_default());
            }
            return nodes.get(node, addr, &path).await;
        }
        ("exec" | "attach", Some(container)) => format!("/{sub}/{}/{}/{}", seg(&ns), seg(&name), seg(container)),
        ("portforward", _) => format!("/portForward/{}/{}", seg(&ns), seg(&name)),
        _ => return Err(ApiError::internal(format!("pods/{sub} is not served by a node"))),
    };
    let Some(upgrade) = forwarded.upgrade else {
        let protocols = if sub == "portforward" {
            "WebSocket with SPDY/3.1+portforward.k8s.io, or SPDY/3.1"
        } else {
            "WebSocket, v5.channel.k8s.io"
        };
        return Err(ApiError::bad_request(format!(
            "pods/{sub} is a streaming request: upgrade the connection ({protocols})"
        )));
    };
    let addr = node_address(store, node).await?;
    let mut path = path;
    if !forwarded.raw_query.is_empty() {
        path.push('?');
        path.push_str(forwarded.raw_query);
    }
    nodes.upgrade(node, addr, &path, forwarded.headers, upgrade).await
}

/// Where node `node` serves, from its object.
async fn node_address(store: Store, node: &str) -> Result<std::net::SocketAddr, ApiError> {
    let nodes_r = crate::server::registry::resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("the Node kind is not served"))?;
    let node_obj = crate::server::registry::objects::get(store, nodes_r, None, node.to_string()).await?;
    super::node_proxy::address(node, &node_obj)
}

/// PodLogOptions passed on to the node (`container` is on the node's path).
const LOG_OPTIONS: [&str; 7] =
    ["follow", "previous", "tailLines", "timestamps", "sinceSeconds", "sinceTime", "limitBytes"];
