//! The CustomResourceDefinition kind's own rules: its validation (names, versions, one
//! storage version, structural schemas), the cleanup finalizer it gets at creation, and
//! the status the server writes: accepted names, NamesAccepted and Established, the
//! stored versions. kube-apiserver sets that status from controllers a moment after the
//! write; here it is part of the write, so that the kind is served as soon as the CRD is.

use serde_json::{Value, json};

use super::schema;
use crate::model::names::name_problem;
use crate::model::podspec::Problem;

/// The finalizer that makes deleting a CRD delete its objects first.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Whether condition `kind` of `crd` is True.
pub fn condition(crd: &Value, kind: &str) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

pub fn on_create(obj: &mut Value) {
    let finalizers = &mut obj["metadata"]["finalizers"];
    if !finalizers.is_array() {
        *finalizers = json!([]);
    }
    if let Some(list) = finalizers.as_array_mut()
        && !list.iter().any(|f| f == CLEANUP_FINALIZER)
    {
        list.push(json!(CLEANUP_FINALIZER));
    }
}

/// SetDefaults_CustomResourceDefinition: conversion None, singular and listKind from the
/// kind.
pub fn defaults(obj: &mut Value, _version: &str) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return;
    }
    if spec.get("conversion").is_none_or(Value::is_null) {
        spec["conversion"] = json!({"strategy": "None"});
    }
    let names = &mut spec["names"];
    if let Some(kind) = names.get("kind").and_then(Value::as_str).map(str::to_string) {
        if names.get("singular").and_then(Value::as_str).is_none_or(str::is_empty) {
            names["singular"] = json!(kind.to_ascii_lowercase());
        }
        if names.get("listKind").and_then(Value::as_str).is_none_or(str::is_empty) {
            names["listKind"] = json!(format!("{kind}List"));
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    name_problem(s, true).is_none()
}

/// ValidateCustomResourceDefinition (and its update rules), as kube words them.
pub fn validate(obj: &Value, old: Option<&Value>) -> Vec<Problem> {
    let mut out: Vec<Problem> = Vec::new();
    let spec = &obj["spec"];
    let text = |p: &str| spec.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let (group, plural, kind) = (text("/group"), text("/names/plural"), text("/names/kind"));
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if name != format!("{plural}.{group}") {
        out.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if group.is_empty() {
        out.push(("spec.group".into(), "Required value".into()));
    } else if !group.contains('.') {
        out.push((
            "spec.group".into(),
            format!("Invalid value: \"{group}\": should be a domain with at least one dot"),
        ));
    } else if let Some(p) = name_problem(group, false) {
        out.push(("spec.group".into(), p));
    } else if group.ends_with(".k8s.io") || group.ends_with(".kubernetes.io") || group == "k8s.io" {
        let approved = obj.pointer("/metadata/annotations/api-approved.kubernetes.io").and_then(Value::as_str);
        if approved.is_none_or(str::is_empty) {
            out.push((
                "metadata.annotations[api-approved.kubernetes.io]".into(),
                "Required value: protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111".into(),
            ));
        }
    }
    match spec.pointer("/conversion/strategy").and_then(Value::as_str) {
        None | Some("None") => {}
        Some("Webhook") => out.push((
            "spec.conversion.strategy".into(),
            "Unsupported value: \"Webhook\": supported values: \"None\" (this server calls no conversion webhooks)"
                .into(),
        )),
        Some(other) => out.push((
            "spec.conversion.strategy".into(),
            format!("Unsupported value: \"{other}\": supported values: \"None\", \"Webhook\""),
        )),
    }
    match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced" | "Cluster") => {}
        None | Some("") => out.push(("spec.scope".into(), "Required value".into())),
        Some(other) => out.push((
            "spec.scope".into(),
            format!("Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""),
        )),
    }
    if plural.is_empty() {
        out.push(("spec.names.plural".into(), "Required value".into()));
    } else if !is_dns_label(plural) {
        out.push(("spec.names.plural".into(), format!("Invalid value: \"{plural}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")));
    }
    let singular = text("/names/singular");
    if !singular.is_empty() && !is_dns_label(singular) {
        out.push(("spec.names.singular".into(), format!("Invalid value: \"{singular}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")));
    }
    if kind.is_empty() {
        out.push(("spec.names.kind".into(), "Required value".into()));
    } else if !kind.chars().all(|c| c.is_ascii_alphanumeric()) || !kind.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.push((
            "spec.names.kind".into(),
            format!(
                "Invalid value: \"{kind}\": may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?"
            ),
        ));
    }
    for (i, short) in spec.pointer("/names/shortNames").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if !short.as_str().is_some_and(is_dns_label) {
            out.push((format!("spec.names.shortNames[{i}]"), format!("Invalid value: {short}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'")));
        }
    }
    versions(spec, &mut out);
    if let Some(old) = old {
        for field in ["group", "scope"] {
            if old["spec"][field] != spec[field] {
                out.push((format!("spec.{field}"), format!("Invalid value: {}: field is immutable", spec[field])));
            }
        }
        if old["spec"]["names"]["plural"] != spec["names"]["plural"] {
            out.push((
                "spec.names.plural".into(),
                format!("Invalid value: {}: field is immutable", spec["names"]["plural"]),
            ));
        }
    }
    out
}

fn versions(spec: &Value, out: &mut Vec<Problem>) {
    let Some(versions) = spec.get("versions").and_then(Value::as_array).filter(|v| !v.is_empty()) else {
        out.push((
            "spec.versions".into(),
            "Invalid value: null: must have exactly one version marked as storage version".into(),
        ));
        return;
    };
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if storage != 1 {
        out.push((
            "spec.versions".into(),
            format!(
                "Invalid value: {}: must have exactly one version marked as storage version",
                Value::Array(versions.clone())
            ),
        ));
    }
    if !versions.iter().any(|v| v["served"] == true) {
        out.push(("spec.versions".into(), "Invalid value: must have at least one served version".into()));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let at = format!("spec.versions[{i}]");
        let name = v["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            out.push((format!("{at}.name"), "Required value".into()));
        } else if !is_dns_label(name) {
            out.push((format!("{at}.name"), format!("Invalid value: \"{name}\": a DNS-1035 label must consist of lower case alphanumeric characters or '-'")));
        } else if seen.contains(&name) {
            out.push((format!("spec.versions[{i}].name"), format!("Invalid value: \"{name}\": must be unique")));
        }
        seen.push(name);
        match v.pointer("/schema/openAPIV3Schema") {
            None | Some(Value::Null) => {
                out.push((format!("{at}.schema.openAPIV3Schema"), "Required value: schemas are required".into()))
            }
            Some(s) => out.extend(schema::structural_problems(s, &format!("{at}.schema.openAPIV3Schema"))),
        }
        if let Some(scale) = v.pointer("/subresources/scale").filter(|s| s.is_object()) {
            for field in ["specReplicasPath", "statusReplicasPath"] {
                match scale[field].as_str() {
                    Some(p) if p.starts_with('.') && p.len() > 1 => {}
                    Some(p) => out.push((
                        format!("{at}.subresources.scale.{field}"),
                        format!("Invalid value: \"{p}\": should be a json path under .spec or .status"),
                    )),
                    None => out.push((format!("{at}.subresources.scale.{field}"), "Required value".into())),
                }
            }
        }
        for (j, c) in v["additionalPrinterColumns"].as_array().into_iter().flatten().enumerate() {
            let cat = format!("{at}.additionalPrinterColumns[{j}]");
            if c["name"].as_str().is_none_or(str::is_empty) {
                out.push((format!("{cat}.name"), "Required value".into()));
            }
            match c["type"].as_str() {
                Some("integer" | "number" | "string" | "boolean" | "date") => {}
                other => out.push((format!("{cat}.type"), format!("Unsupported value: \"{}\": supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\"", other.unwrap_or_default()))),
            }
            if c["jsonPath"].as_str().is_none_or(str::is_empty) {
                out.push((format!("{cat}.jsonPath"), "Required value".into()));
            }
        }
    }
}

/// The status of a CRD as written: accepted names and conditions, stored versions. Runs
/// on every write of a CRD, after validation.
pub fn normalize(obj: &mut Value) {
    let spec = obj["spec"].clone();
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let (group, plural, kind) = (
        spec["group"].as_str().unwrap_or_default(),
        spec.pointer("/names/plural").and_then(Value::as_str).unwrap_or_default(),
        spec.pointer("/names/kind").and_then(Value::as_str).unwrap_or_default(),
    );
    let builtin =
        super::super::resources::RESOURCES.iter().any(|r| r.group == group && (r.plural == plural || r.kind == kind));
    let conflict = super::taken(group, plural, kind, &name)
        .map(|other| format!("\"{plural}\" or \"{kind}\" is already in use by {other}"));
    let conflict = if builtin { Some(format!("\"{plural}\" is already in use")) } else { conflict };
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    let status = &mut obj["status"];
    let now = crate::model::time::now_rfc3339();
    let (accepted, reason, message) = match &conflict {
        None => ("True", "NoConflicts", "no conflicts found".to_string()),
        Some(m) => ("False", "AllNamesConflict", m.clone()),
    };
    if conflict.is_none() {
        status["acceptedNames"] = spec["names"].clone();
    } else if !status["acceptedNames"].is_object() {
        status["acceptedNames"] = json!({"plural": "", "kind": ""});
    }
    set_condition(status, "NamesAccepted", accepted, reason, &message, &now);
    if conflict.is_none() {
        set_condition(
            status,
            "Established",
            "True",
            "InitialNamesAccepted",
            "the initial names have been accepted",
            &now,
        );
    } else {
        set_condition(status, "Established", "False", "NotAccepted", "not all names are accepted", &now);
    }
    if obj.pointer("/metadata/deletionTimestamp").is_some_and(Value::is_string) {
        let status = &mut obj["status"];
        set_condition(
            status,
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
            &now,
        );
    }
    let storage = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str());
    let stored = &mut obj["status"]["storedVersions"];
    if !stored.is_array() {
        *stored = json!([]);
    }
    if let (Some(list), Some(v)) = (stored.as_array_mut(), storage)
        && !list.iter().any(|s| s == v)
    {
        list.push(json!(v));
    }
}

/// Sets a condition, keeping its lastTransitionTime when its status stays.
fn set_condition(status: &mut Value, kind: &str, state: &str, reason: &str, message: &str, now: &str) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(list) = status["conditions"].as_array_mut() else { return };
    let fresh = json!({"type": kind, "status": state, "reason": reason, "message": message, "lastTransitionTime": now});
    match list.iter_mut().find(|c| c["type"] == kind) {
        Some(c) if c["status"] == state => {
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        Some(c) => *c = fresh,
        None => list.push(fresh),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    }

    #[test]
    fn a_good_definition_is_valid_and_gets_kubes_defaults_and_status() {
        let mut c = crd();
        defaults(&mut c, "v1");
        assert_eq!(c["spec"]["names"]["singular"], "widget");
        assert_eq!(c["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(c["spec"]["conversion"]["strategy"], "None");
        assert_eq!(validate(&c, None), vec![]);
        normalize(&mut c);
        assert!(condition(&c, "Established"));
        assert!(condition(&c, "NamesAccepted"));
        assert_eq!(c["status"]["storedVersions"], json!(["v1"]));
        assert_eq!(c["status"]["acceptedNames"]["kind"], "Widget");
    }

    #[test]
    fn problems_name_each_field() {
        let mut c = crd();
        c["metadata"]["name"] = json!("gadgets.example.com");
        c["spec"]["group"] = json!("example");
        c["spec"]["versions"][0]["storage"] = json!(false);
        c["spec"]["versions"][0]["schema"] = json!({"openAPIV3Schema": {"type": "object", "properties": {"spec": {}}}});
        let fields: Vec<String> = validate(&c, None).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec![
                "metadata.name",
                "spec.group",
                "spec.versions",
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].type"
            ]
        );
        let mut changed = crd();
        changed["spec"]["scope"] = json!("Cluster");
        assert_eq!(validate(&changed, Some(&crd()))[0].0, "spec.scope");
    }
}
