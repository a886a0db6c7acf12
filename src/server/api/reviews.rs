//! authorization.k8s.io/v1's reviews, create-only, answered in their status and stored
//! nowhere: SelfSubjectAccessReview (`kubectl auth can-i VERB RESOURCE`), SubjectAccessReview
//! and LocalSubjectAccessReview (may this user or group…?), SelfSubjectRulesReview
//! (`kubectl auth can-i --list`).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::auth::User;
use super::authz::{self, Attributes};
use super::rbac;
use super::status::ApiError;
use crate::server::registry::objects::Store;
use crate::server::registry::resources::{self, Resource};

pub const GROUP: &str = "authorization.k8s.io";

macro_rules! review {
    ($name:ident, $kind:expr, $plural:expr, $namespaced:expr) => {
        static $name: Resource = Resource {
            group: GROUP,
            version: "v1",
            kind: $kind,
            plural: $plural,
            singular: "",
            namespaced: $namespaced,
            short_names: &[],
            custom: None,
        };
    };
}
review!(SELF_ACCESS, "SelfSubjectAccessReview", "selfsubjectaccessreviews", false);
review!(ACCESS, "SubjectAccessReview", "subjectaccessreviews", false);
review!(LOCAL_ACCESS, "LocalSubjectAccessReview", "localsubjectaccessreviews", true);
review!(SELF_RULES, "SelfSubjectRulesReview", "selfsubjectrulesreviews", false);

/// The review a path under `/apis/authorization.k8s.io/v1` names, and the namespace of a
/// LocalSubjectAccessReview.
pub fn target<'a>(rest: &[&'a str]) -> Option<(&'static Resource, Option<&'a str>)> {
    match rest {
        ["selfsubjectaccessreviews"] => Some((&SELF_ACCESS, None)),
        ["subjectaccessreviews"] => Some((&ACCESS, None)),
        ["selfsubjectrulesreviews"] => Some((&SELF_RULES, None)),
        ["namespaces", ns, "localsubjectaccessreviews"] => Some((&LOCAL_ACCESS, Some(*ns))),
        _ => None,
    }
}

fn text<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// `POST` of a review by `user`: 201 and the review with its status.
pub async fn create(
    store: &Store,
    user: &User,
    review: &'static Resource,
    namespace: Option<&str>,
    query: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let attributes = Attributes { verb: "create", resource: review, subresource: None, namespace, name: None };
    authz::authorize(store, user, &attributes, query).await?;
    let mut obj: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !obj.is_object() || !obj.get("spec").is_none_or(Value::is_object) {
        return Err(ApiError::bad_request(format!("the body of a {} must be an object with a spec", review.kind)));
    }
    obj["apiVersion"] = json!("authorization.k8s.io/v1");
    obj["kind"] = json!(review.kind);
    obj["metadata"] = json!({"creationTimestamp": null});
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = if review.kind == "SelfSubjectRulesReview" {
        rules_status(store, user, text(&spec, "/namespace")).await?
    } else {
        let subject = match review.kind {
            "SelfSubjectAccessReview" => user.clone(),
            _ => subject_of(review, &spec)?,
        };
        let req = request_of(review, &spec, namespace)?;
        let (allowed, reason) = decide(store, &subject, &req).await?;
        let mut status = json!({"allowed": allowed});
        if !reason.is_empty() {
            status["reason"] = json!(reason);
        }
        status
    };
    obj["status"] = status;
    Ok((StatusCode::CREATED, obj))
}

/// The user a SubjectAccessReview asks about: a node's user is a node, as the Node
/// authorizer recognises one (the name and the group system:nodes).
fn subject_of(review: &Resource, spec: &Value) -> Result<User, ApiError> {
    let name = text(spec, "/user").to_string();
    let groups: Vec<String> = rbac::strings(spec, "groups").into_iter().map(String::from).collect();
    if name.is_empty() && groups.is_empty() {
        return Err(ApiError::invalid(
            review.kind,
            "",
            vec![("spec.user".into(), "Invalid value: \"\": at least one of user or group must be specified".into())],
        ));
    }
    if let Some(node) = name.strip_prefix("system:node:")
        && groups.iter().any(|g| g == "system:nodes")
    {
        return Ok(User::Node(node.to_string()));
    }
    Ok(User::Named { name, groups })
}

/// What an access review asks, in RBAC's terms; 422 unless it names exactly one of
/// resource and non-resource attributes, as kube-apiserver's validation has it.
fn request_of(review: &Resource, spec: &Value, local_ns: Option<&str>) -> Result<rbac::Request, ApiError> {
    let invalid = |field: &str, why: &str| ApiError::invalid(review.kind, "", vec![(field.into(), why.into())]);
    match (
        spec.get("resourceAttributes").filter(|v| v.is_object()),
        spec.get("nonResourceAttributes").filter(|v| v.is_object()),
    ) {
        (Some(_), Some(_)) => Err(invalid(
            "spec.nonResourceAttributes",
            "Invalid value: \"null\": cannot be specified in combination with resourceAttributes",
        )),
        (None, None) => Err(invalid(
            "spec.resourceAttributes",
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
        (None, Some(n)) => Ok(rbac::Request {
            verb: text(n, "/verb").to_string(),
            path: Some(text(n, "/path").to_string()),
            ..Default::default()
        }),
        (Some(r), None) => {
            let namespace = text(r, "/namespace");
            if let Some(ns) = local_ns
                && namespace != ns
            {
                return Err(invalid(
                    "spec.resourceAttributes.namespace",
                    &format!("Invalid value: {namespace:?}: must match metadata.namespace"),
                ));
            }
            Ok(rbac::Request {
                verb: text(r, "/verb").to_string(),
                group: text(r, "/group").to_string(),
                resource: text(r, "/resource").to_string(),
                subresource: text(r, "/subresource").to_string(),
                namespace: namespace.to_string(),
                name: text(r, "/name").to_string(),
                path: None,
            })
        }
    }
}

/// Whether `subject` may do `req`, and why, as the authorizers in front of a request
/// decide it: system:masters, the Node authorizer for a node, RBAC.
async fn decide(store: &Store, subject: &User, req: &rbac::Request) -> Result<(bool, String), ApiError> {
    if subject.is_master() {
        return Ok((true, String::new()));
    }
    if let (User::Node(_), None) = (subject, &req.path)
        && let Some(resource) = resources::all().into_iter().find(|r| r.group == req.group && r.plural == req.resource)
    {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let (sub, ns, name) = (opt(&req.subresource), opt(&req.namespace), opt(&req.name));
        let verb: &'static str = match req.verb.as_str() {
            "get" => "get",
            "list" => "list",
            "watch" => "watch",
            "create" => "create",
            "update" => "update",
            "patch" => "patch",
            "delete" => "delete",
            "deletecollection" => "deletecollection",
            _ => "",
        };
        let a =
            Attributes { verb, resource, subresource: sub.as_deref(), namespace: ns.as_deref(), name: name.as_deref() };
        // A guard (on the object a write replaces) cannot be checked here: yes, if it passes.
        return Ok((authz::authorize(store, subject, &a, &BTreeMap::new()).await.is_ok(), String::new()));
    }
    Ok(match authz::rbac_allows(store, subject, req).await? {
        Some(reason) => (true, reason),
        None => (false, String::new()),
    })
}

/// A SelfSubjectRulesReview's status: what the caller may do in `namespace`.
async fn rules_status(store: &Store, user: &User, namespace: &str) -> Result<Value, ApiError> {
    let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
    if user.is_master() {
        resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        non_resource_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    let (name, groups) = (user.name(), user.groups());
    for rule in rbac::rules_for(store, rbac::Caller { name: &name, groups: &groups }, namespace).await? {
        let list = |k: &str| rule.get(k).cloned().unwrap_or_else(|| json!([]));
        if rule.get("nonResourceURLs").and_then(Value::as_array).is_some_and(|u| !u.is_empty()) {
            non_resource_rules.push(json!({"verbs": list("verbs"), "nonResourceURLs": list("nonResourceURLs")}));
        } else {
            let mut r = json!({"verbs": list("verbs"), "apiGroups": list("apiGroups"), "resources": list("resources")});
            if rule.get("resourceNames").is_some() {
                r["resourceNames"] = list("resourceNames");
            }
            resource_rules.push(r);
        }
    }
    let mut status =
        json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false});
    if matches!(user, User::Node(_)) {
        // The Node authorizer cannot list its rules; kube-apiserver says so the same way.
        status["incomplete"] = json!(true);
        status["evaluationError"] = json!("node authorizer does not support user rule resolution");
    }
    Ok(status)
}
