//! Pod subresources beyond status: `binding`, which the scheduler uses to put a pod on a
//! node, and `log`, `exec`, `attach` and `portforward`, which the pod's node serves.
//!
//! The node daemon does not yet serve the latter to the control plane (the cluster issue
//! adds it), so they are answered 503 ServiceUnavailable naming the node, after the checks
//! the API server makes first (the pod exists, is bound, the container is one of its own):
//! clients get a clear reason instead of a 404 that says the path does not exist.

use axum::http::StatusCode;
use serde_json::{Value, json};

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

/// `log`, `exec`, `attach`, `portforward`: the checks the API server makes before it
/// reaches the node, then 503 naming the node: always an error, for now.
pub async fn on_node(
    store: Store,
    r: &'static Resource,
    ns: String,
    name: String,
    sub: &str,
    container: Option<&str>,
) -> ApiError {
    let pod = match crate::server::registry::objects::get(store, r, Some(ns), name.clone()).await {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return ApiError::bad_request(format!("pod {name} does not have a host assigned"));
    };
    if sub != "portforward" {
        let names: Vec<&str> = ["containers", "initContainers", "ephemeralContainers"]
            .iter()
            .flat_map(|l| pod["spec"][*l].as_array().into_iter().flatten())
            .filter_map(|c| c["name"].as_str())
            .collect();
        match container.filter(|c| !c.is_empty()) {
            Some(c) if !names.contains(&c) => {
                return ApiError::bad_request(format!("container {c} is not valid for pod {name}"));
            }
            None if pod["spec"]["containers"].as_array().is_some_and(|c| c.len() > 1) => {
                let main: Vec<&str> = pod["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str())
                    .collect();
                return ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    main.join(" ")
                ));
            }
            _ => {}
        }
    }
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!(
            "pods/{sub} of pod {name} is served by its node \"{node}\", which this server cannot reach: nodes do not serve pods/{sub} to the control plane yet"
        ),
    );
    e.details = Some(json!({"name": name, "kind": "pods"}));
    e
}
