//! What a caller may do: kube-apiserver's authorizers in its order (system:masters, Node,
//! RBAC), with the NodeRestriction admission plugin.
//!
//! The admin, and anyone in the group system:masters, may do anything. The join token may
//! only register (see [`super::auth`]). Anyone else gets what RBAC grants ([`super::rbac`]),
//! but for nodes, which the Node authorizer asks first: what it refuses outside its
//! admission rules (a node's own Node, Lease, and its pods) RBAC may still allow.
//! `system:node:NAME` may:
//! - read (get, list, watch) pods, services, endpoints, nodes and namespaces;
//! - get a Secret or ConfigMap only when a pod bound to it refers to it (volumes,
//!   projected volumes, env, envFrom, imagePullSecrets), and list or watch one only so
//!   named (`fieldSelector=metadata.name=X` in its namespace), as the kubelet does;
//! - create, update and patch its own Node (and its status), its own Lease in
//!   `kube-node-lease`, and events;
//! - update and patch the status of pods bound to it, and delete them (the kubelet ends a
//!   graceful deletion once the containers stopped);
//! - request tokens bound to pods bound to it, of their ServiceAccounts (checked on the
//!   TokenRequest's body in [`super::tokens`]);
//!
//! and nothing else: 403 Forbidden, worded as kube-apiserver words it. Checks that depend
//! on the stored object (is this pod bound here?) are [`Guard`]s, run on the very version
//! the write replaces, so a pod cannot change hands between the check and the write.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::auth::User;
use super::rbac;
use super::status::ApiError;
use crate::server::registry::RegistryError;
use crate::server::registry::objects::{Guard, Store, blocking, decode};
use crate::server::registry::resources::{self, Resource};

/// What a request does, in RBAC's terms.
pub struct Attributes<'a> {
    /// get, list, watch, create, update, patch, delete or deletecollection.
    pub verb: &'static str,
    pub resource: &'static Resource,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// From the path; for a create, from the body.
    pub name: Option<&'a str>,
}

/// 403 as the API server words it, e.g. `nodes "x" is forbidden: User "system:node:y"
/// cannot update resource "nodes" in API group "" at the cluster scope`, and `: why`.
pub fn forbidden(user: &User, a: &Attributes<'_>, why: Option<&str>) -> ApiError {
    forbidden_request(&user.name(), &rbac_request_of(a), why)
}

/// `a` as the request a 403 names (its namespace as given, unlike [`rbac_request`]).
fn rbac_request_of(a: &Attributes<'_>) -> rbac::Request {
    let r = a.resource;
    let namespace = a.namespace.filter(|_| r.namespaced);
    rbac::Request {
        verb: a.verb.to_string(),
        group: r.group.to_string(),
        resource: r.plural.to_string(),
        subresource: a.subresource.unwrap_or_default().to_string(),
        namespace: namespace.unwrap_or_default().to_string(),
        name: a.name.unwrap_or_default().to_string(),
        path: None,
    }
}

/// 403 for a request in RBAC's terms (a resource's; [`forbidden_path`] for a path's).
pub fn forbidden_request(user: &str, req: &rbac::Request, why: Option<&str>) -> ApiError {
    denial(user, req, why).into()
}

/// [`forbidden_request`] as the registry's error (what a [`Guard`] answers).
fn denial(user: &str, req: &rbac::Request, why: Option<&str>) -> RegistryError {
    let qualified = if req.group.is_empty() { req.resource.clone() } else { format!("{}.{}", req.resource, req.group) };
    let object = if req.name.is_empty() { qualified } else { format!("{qualified} \"{}\"", req.name) };
    let resource =
        if req.subresource.is_empty() { req.resource.clone() } else { format!("{}/{}", req.resource, req.subresource) };
    let scope = if req.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", req.namespace)
    };
    let mut message = format!(
        "{object} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        req.verb, req.group
    );
    if let Some(why) = why {
        message.push_str(": ");
        message.push_str(why);
    }
    RegistryError::Forbidden {
        resource: req.resource.clone(),
        name: req.name.clone(),
        group: req.group.clone(),
        message,
    }
}

/// `a` in RBAC's terms. A Namespace's own name is its namespace, as kube-apiserver's
/// request info has it (a RoleBinding in `dev` may grant `get namespace dev`).
pub fn rbac_request(a: &Attributes<'_>) -> rbac::Request {
    let namespace = match (a.resource.kind, a.name) {
        ("Namespace", Some(n)) => Some(n),
        _ => a.namespace.filter(|_| a.resource.namespaced),
    };
    rbac::Request {
        verb: a.verb.to_string(),
        group: a.resource.group.to_string(),
        resource: a.resource.plural.to_string(),
        subresource: a.subresource.unwrap_or_default().to_string(),
        namespace: namespace.unwrap_or_default().to_string(),
        name: a.name.unwrap_or_default().to_string(),
        path: None,
    }
}

/// Whether RBAC allows `req` to `user` (system:masters always): the reason if so.
pub async fn rbac_allows(store: &Store, user: &User, req: &rbac::Request) -> Result<Option<String>, ApiError> {
    if user.is_master() {
        return Ok(Some(String::new()));
    }
    if *user == User::Joining {
        return Ok(None);
    }
    let (name, groups) = (user.name(), user.groups());
    rbac::allows(store, rbac::Caller { name: &name, groups: &groups }, req).await
}

/// A request for a path that is not a resource (discovery, `/version`, `/openapi/v2`):
/// what RBAC's nonResourceURLs rules allow (system:discovery's, for everyone signed in).
pub async fn authorize_path(store: &Store, user: &User, verb: &str, path: &str) -> Result<(), ApiError> {
    let req = rbac::Request { verb: verb.to_string(), path: Some(path.to_string()), ..Default::default() };
    match rbac_allows(store, user, &req).await? {
        Some(_) => Ok(()),
        None => Err(forbidden_path(user, verb, path)),
    }
}

/// The `Impersonate-User`, `Impersonate-Group` and `Impersonate-Uid` headers: the user
/// the request then acts as, if the caller may `impersonate` each of them (users, groups,
/// uids; a service account's user as `serviceaccounts` in its namespace), as
/// kube-apiserver's impersonation filter checks it. None without such headers.
pub async fn impersonate(store: &Store, user: &User, headers: &HeaderMap) -> Result<Option<User>, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(|v| v.trim().to_string()).collect()
    };
    let (users, groups, uids) = (values("impersonate-user"), values("impersonate-group"), values("impersonate-uid"));
    let extra = headers.keys().any(|k| k.as_str().starts_with("impersonate-extra-"));
    let Some(name) = users.first().cloned() else {
        if groups.is_empty() && uids.is_empty() && !extra {
            return Ok(None);
        }
        return Err(ApiError::internal(
            "requested impersonation of groups, a uid or extras without impersonating a user",
        ));
    };
    let service_account = name.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':'));
    let mut asks = Vec::new();
    let ask = |resource: &str, namespace: &str, name: &str| rbac::Request {
        verb: "impersonate".into(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    };
    match service_account {
        Some((ns, sa)) => asks.push(ask("serviceaccounts", ns, sa)),
        None => asks.push(ask("users", "", &name)),
    }
    asks.extend(groups.iter().map(|g| ask("groups", "", g)));
    asks.extend(uids.iter().map(|u| rbac::Request { group: "authentication.k8s.io".into(), ..ask("uids", "", u) }));
    for req in &asks {
        if rbac_allows(store, user, req).await?.is_none() {
            return Err(forbidden_request(&user.name(), req, None));
        }
    }
    // The groups kube-apiserver adds: a service account's, and system:authenticated.
    let mut all = groups;
    if let Some((ns, _)) = service_account
        && all.is_empty()
    {
        all.extend(["system:serviceaccounts".to_string(), format!("system:serviceaccounts:{ns}")]);
    }
    // A node impersonated (`--as=system:node:NAME --as-group=system:nodes`) is that node,
    // confined by the node authorizer, as a node's own certificate is.
    if let Some(node) = name.strip_prefix("system:node:")
        && !node.is_empty()
        && all.iter().any(|g| g == "system:nodes")
    {
        return Ok(Some(User::Node(node.to_string())));
    }
    if name != super::auth::ANONYMOUS && !all.iter().any(|g| g == "system:authenticated") {
        all.push("system:authenticated".into());
    }
    Ok(Some(User::Named { name, groups: all }))
}

/// 403 for a path that is not a resource (discovery and the like).
pub fn forbidden_path(user: &User, verb: &str, path: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!("forbidden: User \"{}\" cannot {verb} path \"{path}\"", user.name()),
    )
}

/// Whether `user` may do `a`: Ok(None) yes, Ok(Some(guard)) yes if the guard passes on
/// the stored object, Err(403) no.
pub async fn authorize(
    store: &Store,
    user: &User,
    a: &Attributes<'_>,
    query: &BTreeMap<String, String>,
) -> Result<Option<Guard>, ApiError> {
    if user.is_master() {
        return Ok(None);
    }
    let node = match user {
        User::Admin => return Ok(None),
        User::Joining => return Err(forbidden(user, a, Some("the join token may only register a node"))),
        User::Named { .. } => {
            return match rbac_allows(store, user, &rbac_request(a)).await? {
                Some(_) => Ok(None),
                None => Err(forbidden(user, a, None)),
            };
        }
        User::Node(n) => n.as_str(),
    };
    match node_authorize(store, user, node, a, query).await {
        // NodeRestriction's rules about a node's own Node, Lease and pods stand whatever
        // RBAC says; anything else the Node authorizer does not allow, RBAC may.
        Err(_)
            if !matches!(a.resource.kind, "Node" | "Pod" | "Lease")
                && rbac_allows(store, user, &rbac_request(a)).await?.is_some() =>
        {
            Ok(None)
        }
        other => other,
    }
}

/// The Node authorizer with NodeRestriction: what `system:node:NAME` may do as a node.
async fn node_authorize(
    store: &Store,
    user: &User,
    node: &str,
    a: &Attributes<'_>,
    query: &BTreeMap<String, String>,
) -> Result<Option<Guard>, ApiError> {
    let read = matches!(a.verb, "get" | "list" | "watch");
    let own_name = a.name == Some(node);
    let deny = |why: Option<&str>| Err(forbidden(user, a, why));
    match (a.resource.kind, a.subresource) {
        // What kube-proxy and CoreDNS, run by the node daemon, read as well as the kubelet.
        ("Pod" | "Service" | "Endpoints" | "EndpointSlice" | "Node" | "Namespace", None | Some("status")) if read => {
            Ok(None)
        }
        ("Node", None | Some("status")) if matches!(a.verb, "create" | "update" | "patch") => {
            if own_name {
                Ok(Some(own_node(node)))
            } else {
                deny(Some(&format!("node \"{node}\" may only modify its own Node")))
            }
        }
        ("Lease", None) if matches!(a.verb, "get" | "create" | "update" | "patch") => {
            if own_name && a.namespace == Some("kube-node-lease") {
                Ok(None)
            } else {
                deny(Some(&format!(
                    "node \"{node}\" may only use its own Lease, {node:?} in the namespace \"kube-node-lease\""
                )))
            }
        }
        ("Event", None) if matches!(a.verb, "create" | "update" | "patch") => Ok(None),
        // A token for a pod of its own, of that pod's ServiceAccount: the request's body says
        // which pod, so the TokenRequest itself checks it (tokens::request).
        ("ServiceAccount", Some("token")) if a.verb == "create" => Ok(None),
        ("Pod", Some("status")) if matches!(a.verb, "update" | "patch") => Ok(Some(bound_to(user, a, node))),
        // The kubelet creates only mirror pods of its static pods.
        ("Pod", None) if a.verb == "create" => Ok(Some(mirror_pod(node))),
        ("Pod", None) if a.verb == "delete" => Ok(Some(bound_to(user, a, node))),
        // The kubelet evicts (under node pressure) only its own pods.
        ("Pod", Some("eviction")) if a.verb == "create" => Ok(Some(evicts_own(node))),
        ("Secret" | "ConfigMap", None) if read => {
            let name = match (a.verb, a.name) {
                ("get", Some(n)) => Some(n.to_string()),
                // The kubelet watches one object at a time, through a name field selector.
                ("list" | "watch", None) => query.get("fieldSelector").and_then(|f| single_name(f)),
                _ => None,
            };
            let (Some(name), Some(ns)) = (name, a.namespace) else {
                return deny(Some(&format!(
                    "node \"{node}\" may read {} only one at a time, by name",
                    a.resource.plural
                )));
            };
            if cluster_config(a.resource.kind, ns, &name) || referenced(store, node, a.resource.kind, ns, &name).await?
            {
                Ok(None)
            } else {
                let what = format!("no relationship found between node '{node}' and this object");
                Err(forbidden(user, &Attributes { name: Some(&name), ..*a }, Some(&what)))
            }
        }
        _ => deny(None),
    }
}

/// The ConfigMap in which the server publishes the cluster's network settings to every node.
fn cluster_config(kind: &str, namespace: &str, name: &str) -> bool {
    use crate::server::registry::cluster_config::{NAME, NAMESPACE};
    kind == "ConfigMap" && (namespace, name) == (NAMESPACE, NAME)
}

/// `metadata.name=X` (or `==`), and nothing else: X.
fn single_name(selector: &str) -> Option<String> {
    let (field, value) = selector.split_once("==").or_else(|| selector.split_once('='))?;
    (field.trim() == "metadata.name" && !value.is_empty() && !value.contains(',')).then(|| value.trim().to_string())
}

/// The guard of a write to a pod: it must be bound to `node`.
fn bound_to(user: &User, a: &Attributes<'_>, node: &str) -> Guard {
    let why = format!("the pod is not bound to node \"{node}\"");
    let (user, req, node) = (user.name(), rbac_request_of(a), node.to_string());
    Arc::new(move |stored: Option<&Value>, _: Option<&Value>| {
        if stored.and_then(|pod| pod.pointer("/spec/nodeName")).and_then(Value::as_str) == Some(node.as_str()) {
            Ok(())
        } else {
            Err(denial(&user, &req, Some(&why)))
        }
    })
}

/// The guard of a node's eviction: the pod must be bound to it, as NodeRestriction has it.
fn evicts_own(node: &str) -> Guard {
    let node = node.to_string();
    Arc::new(move |stored: Option<&Value>, _: Option<&Value>| {
        let pod = stored.cloned().unwrap_or_default();
        if pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node.as_str()) {
            return Ok(());
        }
        let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let message =
            format!("pods \"{name}\" is forbidden: node {node} can only evict pods with spec.nodeName set to itself");
        Err(RegistryError::forbidden("pods", &name, message))
    })
}

/// A 403 about `node`'s own Node, in NodeRestriction's words.
fn node_forbidden(node: &str, why: String) -> RegistryError {
    RegistryError::forbidden("nodes", node, format!("nodes \"{node}\" is forbidden: {why}"))
}

/// The guard of a node's writes to its own Node, as NodeRestriction has it: its taints and
/// ownerReferences stay as they are (a node that could lift its taints or hand itself an
/// owner would steer workloads to itself), and so do the labels of [`own_labels`].
fn own_node(node: &str) -> Guard {
    let labels = own_labels(node);
    let node = node.to_string();
    Arc::new(move |stored: Option<&Value>, new: Option<&Value>| {
        let at = |o: Option<&Value>, p: &str| o.and_then(|o| o.pointer(p)).filter(|v| !v.is_null()).cloned();
        if let Some(new) = new {
            // A create may register taints (the kubelet's --register-with-taints); an update
            // may not change them.
            if stored.is_some() && at(stored, "/spec/taints") != at(Some(new), "/spec/taints") {
                return Err(node_forbidden(&node, format!("node \"{node}\" is not allowed to modify taints")));
            }
            let empty = |v: Option<Value>| v.is_none_or(|v| v.as_array().is_some_and(Vec::is_empty));
            let (before, after) = (at(stored, "/metadata/ownerReferences"), at(Some(new), "/metadata/ownerReferences"));
            if before != after && !(empty(before.clone()) && empty(after.clone())) {
                return Err(node_forbidden(&node, format!("node \"{node}\" is not allowed to modify ownerReferences")));
            }
        }
        labels(stored, new)
    })
}

/// The guard of a pod a node creates: only a mirror pod of one of its static pods, bound
/// to itself, owned by nothing but its own Node, and referring to no Secret, ConfigMap,
/// PersistentVolumeClaim or ServiceAccount (which would let it read them), as
/// NodeRestriction has it.
fn mirror_pod(node: &str) -> Guard {
    let node = node.to_string();
    Arc::new(move |_: Option<&Value>, new: Option<&Value>| {
        let Some(pod) = new else { return Ok(()) };
        let deny = |why: String| {
            let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            Err(RegistryError::forbidden("pods", name, format!("pods \"{name}\" is forbidden: {why}")))
        };
        if pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_none() {
            return deny(format!(
                "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"{node}\" can only create mirror pods"
            ));
        }
        if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node.as_str()) {
            return deny(format!("node \"{node}\" can only create pods with spec.nodeName set to itself"));
        }
        let owners = pod.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
        let own = |o: &Value| {
            o.get("kind").and_then(Value::as_str) == Some("Node")
                && o.get("name").and_then(Value::as_str) == Some(node.as_str())
                && o.get("apiVersion").and_then(Value::as_str) == Some("v1")
        };
        if owners.len() > 1 || owners.first().is_some_and(|o| !own(o)) {
            return deny(format!("node \"{node}\" can only create pods with an owner reference set to itself"));
        }
        if pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
            return deny(format!("node \"{node}\" can not create pods that reference serviceaccounts"));
        }
        let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array).cloned().unwrap_or_default();
        if volumes.iter().any(|v| v.get("persistentVolumeClaim").is_some()) {
            return deny(format!("node \"{node}\" can not create pods that reference persistentvolumeclaims"));
        }
        for (kind, plural) in [("Secret", "secrets"), ("ConfigMap", "configmaps")] {
            if mentions_any(pod, kind) {
                return deny(format!("node \"{node}\" can not create pods that reference {plural}"));
            }
        }
        Ok(())
    })
}

/// Whether a pod refers to any object of `kind` (Secret or ConfigMap) anywhere a kubelet
/// would read one.
fn mentions_any(pod: &Value, kind: &str) -> bool {
    let (volume_key, env_key, from_key) = match kind {
        "Secret" => ("secret", "secretKeyRef", "secretRef"),
        _ => ("configMap", "configMapKeyRef", "configMapRef"),
    };
    let spec = pod.get("spec").cloned().unwrap_or_default();
    let list = |v: &Value, k: &str| v.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let volumes = list(&spec, "volumes");
    let in_volumes = volumes.iter().any(|v| {
        v.get(volume_key).is_some()
            || list(v.get("projected").unwrap_or(&Value::Null), "sources").iter().any(|s| s.get(volume_key).is_some())
    });
    let containers: Vec<Value> =
        ["containers", "initContainers", "ephemeralContainers"].iter().flat_map(|k| list(&spec, k)).collect();
    let in_env = containers.iter().any(|c| {
        list(c, "env").iter().any(|e| e.pointer(&format!("/valueFrom/{env_key}")).is_some())
            || list(c, "envFrom").iter().any(|e| e.get(from_key).is_some())
    });
    let pull = kind == "Secret" && !list(&spec, "imagePullSecrets").is_empty();
    in_volumes || in_env || pull
}

/// Labels in the kubernetes.io and k8s.io namespaces, which the cluster's placement
/// decisions trust (node-restriction.kubernetes.io/ above all), stay as they are, but for
/// the ones a kubelet sets about itself.
fn own_labels(node: &str) -> Guard {
    let node = node.to_string();
    Arc::new(move |stored: Option<&Value>, new: Option<&Value>| {
        let labels = |o: Option<&Value>| {
            o.and_then(|o| o.pointer("/metadata/labels")).and_then(Value::as_object).cloned().unwrap_or_default()
        };
        let (before, after) = (labels(stored), labels(new));
        let mut changed: Vec<&String> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k) && protected_label(k))
            .collect();
        changed.sort();
        changed.dedup();
        if changed.is_empty() {
            return Ok(());
        }
        let list: Vec<&str> = changed.iter().map(|k| k.as_str()).collect();
        Err(node_forbidden(&node, format!("is not allowed to modify labels: {}", list.join(", "))))
    })
}

/// A label a node may not set on itself (NodeRestriction's isProtectedLabel).
fn protected_label(key: &str) -> bool {
    const KUBELET_LABELS: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    ];
    let Some((prefix, _)) = key.split_once('/') else { return false };
    let within = |ns: &str| prefix == ns || prefix.ends_with(&format!(".{ns}"));
    if KUBELET_LABELS.contains(&key) || within("kubelet.kubernetes.io") || within("node.kubernetes.io") {
        return false;
    }
    within("kubernetes.io") || within("k8s.io")
}

/// Whether a pod bound to `node` in `ns` refers to the Secret or ConfigMap (`kind`) `name`.
async fn referenced(store: &Store, node: &str, kind: &'static str, ns: &str, name: &str) -> Result<bool, ApiError> {
    let pods = resources::find("", "v1", "pods").ok_or_else(|| ApiError::internal("pods are not served"))?;
    let (store, prefix) = (store.clone(), pods.key(Some(ns), None));
    let list =
        blocking(move || store.list(&prefix, None, 0, None).map_err(|e| ApiError::from_store(e, "pods", ""))).await?;
    for kv in &list.items {
        let pod = decode(kv)?;
        if pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node) && refers_to(&pod, kind, name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `pod` uses the Secret or ConfigMap (`kind`) `name`.
pub fn refers_to(pod: &Value, kind: &str, name: &str) -> bool {
    let spec = &pod["spec"];
    let is = |v: Option<&Value>| v.and_then(Value::as_str) == Some(name);
    let (volume_key, source_name, key_ref, env_from) = if kind == "Secret" {
        ("secret", "secretName", "secretKeyRef", "secretRef")
    } else {
        ("configMap", "name", "configMapKeyRef", "configMapRef")
    };
    let array = |v: &Value| v.as_array().cloned().unwrap_or_default();
    for volume in array(&spec["volumes"]) {
        if is(volume[volume_key].get(source_name)) {
            return true;
        }
        if array(&volume["projected"]["sources"]).iter().any(|s| is(s[volume_key].get("name"))) {
            return true;
        }
    }
    if kind == "Secret" && array(&spec["imagePullSecrets"]).iter().any(|s| is(s.get("name"))) {
        return true;
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in array(&spec[list]) {
            if array(&c["env"]).iter().any(|e| is(e["valueFrom"][key_ref].get("name"))) {
                return true;
            }
            if array(&c["envFrom"]).iter().any(|e| is(e[env_from].get("name"))) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_found_wherever_a_pod_names_them() {
        let pod = json!({"spec": {
            "volumes": [{"name": "a", "secret": {"secretName": "vol"}}, {"name": "b", "configMap": {"name": "cm-vol"}},
                        {"name": "p", "projected": {"sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "cm-proj"}}]}}],
            "imagePullSecrets": [{"name": "pull"}],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-from"}}]}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}},
                                                  {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}}],
                            "envFrom": [{"configMapRef": {"name": "cm-from"}}]}],
        }});
        for s in ["vol", "proj", "pull", "init-from", "env"] {
            assert!(refers_to(&pod, "Secret", s), "{s}");
            assert!(!refers_to(&pod, "ConfigMap", s), "{s}");
        }
        for c in ["cm-vol", "cm-proj", "cm-env", "cm-from"] {
            assert!(refers_to(&pod, "ConfigMap", c), "{c}");
            assert!(!refers_to(&pod, "Secret", c), "{c}");
        }
        assert!(!refers_to(&pod, "Secret", "other"));
        assert!(!refers_to(&json!({}), "Secret", "vol"));
    }

    #[test]
    fn a_node_may_set_only_the_labels_a_kubelet_sets_about_itself() {
        for free in [
            "disk",
            "example.com/rack",
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "kubelet.kubernetes.io/x",
        ] {
            assert!(!protected_label(free), "{free}");
        }
        for protected in [
            "node-restriction.kubernetes.io/secure",
            "node-role.kubernetes.io/control-plane",
            "kubernetes.io/other",
            "k8s.io/x",
            "x.k8s.io/y",
        ] {
            assert!(protected_label(protected), "{protected}");
        }
        let guard = own_labels("n1");
        let node = |labels: Value| json!({"metadata": {"name": "n1", "labels": labels}});
        let stored = node(json!({"node-role.kubernetes.io/worker": "", "disk": "hdd"}));
        assert!(
            guard(Some(&stored), Some(&node(json!({"node-role.kubernetes.io/worker": "", "disk": "ssd"})))).is_ok()
        );
        let e = guard(Some(&stored), Some(&node(json!({"disk": "hdd"})))).unwrap_err();
        assert!(e.to_string().contains("node-role.kubernetes.io/worker"), "{}", e.to_string());
        assert!(guard(None, Some(&node(json!({"node-restriction.kubernetes.io/secure": "true"})))).is_err());
    }

    #[test]
    fn only_a_single_name_selector_names_one_object() {
        assert_eq!(single_name("metadata.name=cfg").as_deref(), Some("cfg"));
        assert_eq!(single_name("metadata.name==cfg").as_deref(), Some("cfg"));
        assert_eq!(single_name("metadata.name!=cfg"), None);
        assert_eq!(single_name("metadata.name=a,metadata.namespace=b"), None);
        assert_eq!(single_name("metadata.namespace=cfg"), None);
        assert_eq!(single_name("metadata.name="), None);
    }
}
