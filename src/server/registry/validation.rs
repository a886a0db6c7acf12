//! kube-apiserver's validation of the kinds tutorials write, after defaulting, in its
//! words: every problem is a (field path, message) cause of one 422 Invalid. The rules of
//! a pod spec are [`crate::model::podspec`], which `nodectl run` holds pods to as well.

use serde_json::Value;

use super::resources::Resource;
use crate::model::podspec::{Problem, problems as pod_spec_problems};

/// The problems of `obj` (of `r`'s kind, defaulted), created (`old` None) or replacing `old`.
pub fn validate(r: &Resource, obj: &Value, old: Option<&Value>) -> Vec<Problem> {
    let mut out = Vec::new();
    let spec = &obj["spec"];
    match r.kind {
        "Pod" => out.extend(pod_spec_problems(spec, "spec")),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
            let kind = r.kind.to_lowercase();
            out.extend(workload(spec, &kind));
            if let Some(n) = spec["replicas"].as_i64().filter(|n| *n < 0) {
                out.push(("spec.replicas".into(), format!("Invalid value: {n}: must be greater than or equal to 0")));
            }
            // apps/v1 selectors cannot change: the workload would lose its pods.
            if let Some(old) = old
                && old["spec"]["selector"] != spec["selector"]
            {
                out.push(("spec.selector".into(), format!("Invalid value: {}: field is immutable", spec["selector"])));
            }
        }
        "Job" => {
            out.extend(job(spec, "spec"));
            if let Some(old) = old
                && old["spec"]["template"] != spec["template"]
            {
                out.push(("spec.template".into(), format!("Invalid value: {}: field is immutable", spec["template"])));
            }
        }
        "CronJob" => {
            if spec["schedule"].as_str().is_none_or(str::is_empty) {
                out.push(("spec.schedule".into(), "Required value".into()));
            }
            out.extend(job(&spec["jobTemplate"]["spec"], "spec.jobTemplate.spec"));
        }
        "Service" => out.extend(service(spec, old.map(|o| &o["spec"]))),
        _ => {}
    }
    out
}

/// Whether `selector` (a LabelSelector) picks an object with `labels`.
pub fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let match_labels = selector["matchLabels"].as_object().into_iter().flatten().all(|(k, v)| label(k) == v.as_str());
    let expressions = selector["matchExpressions"].as_array().into_iter().flatten().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        match e["operator"].as_str() {
            Some("In") => label(key).is_some_and(|v| values.contains(&v)),
            Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
            Some("Exists") => label(key).is_some(),
            Some("DoesNotExist") => label(key).is_none(),
            _ => false,
        }
    });
    match_labels && expressions
}

/// Labels as Go's `%#v` prints a map[string]string, as kube's messages show them.
fn go_map(labels: &Value) -> String {
    let pairs: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default()))
        .collect();
    format!("map[string]string{{{}}}", pairs.join(", "))
}

/// A workload's selector and pod template.
fn workload(spec: &Value, kind: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    let selector = &spec["selector"];
    let empty = selector["matchLabels"].as_object().is_none_or(|m| m.is_empty())
        && selector["matchExpressions"].as_array().is_none_or(Vec::is_empty);
    let labels = &spec["template"]["metadata"]["labels"];
    if selector.is_null() {
        out.push(("spec.selector".into(), "Required value".into()));
    } else if empty {
        out.push(("spec.selector".into(), format!("Invalid value: {selector}: empty selector is invalid for {kind}")));
    } else if !selects(selector, labels) {
        out.push((
            "spec.template.metadata.labels".into(),
            format!("Invalid value: {}: `selector` does not match template `labels`", go_map(labels)),
        ));
    }
    out.extend(pod_spec_problems(&spec["template"]["spec"], "spec.template.spec"));
    out
}

/// A Job's spec (or a CronJob's job template's) at `path`.
fn job(spec: &Value, path: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    // A Job's selector is the server's to make unless manualSelector; one given must match.
    if spec["selector"].is_object() && !selects(&spec["selector"], &spec["template"]["metadata"]["labels"]) {
        out.push((
            format!("{path}.template.metadata.labels"),
            format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                go_map(&spec["template"]["metadata"]["labels"])
            ),
        ));
    }
    let pod = format!("{path}.template.spec");
    out.extend(pod_spec_problems(&spec["template"]["spec"], &pod));
    // The restart policy was defaulted to Always: a Job's pods must end.
    let policy = spec["template"]["spec"]["restartPolicy"].as_str().unwrap_or_default();
    if !matches!(policy, "OnFailure" | "Never") && !out.iter().any(|(f, _)| f.ends_with("restartPolicy")) {
        out.push((
            format!("{pod}.restartPolicy"),
            format!("Unsupported value: \"{policy}\": supported values: \"OnFailure\", \"Never\""),
        ));
    }
    for field in ["parallelism", "completions", "backoffLimit"] {
        if let Some(n) = spec[field].as_i64().filter(|n| *n < 0) {
            out.push((format!("{path}.{field}"), format!("Invalid value: {n}: must be greater than or equal to 0")));
        }
    }
    out
}

/// The NodePort range kube-apiserver allocates from (--service-node-port-range).
const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

fn service(spec: &Value, old: Option<&Value>) -> Vec<Problem> {
    let mut out = Vec::new();
    let ty = spec["type"].as_str().unwrap_or_default();
    if !matches!(ty, "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
        out.push((
            "spec.type".into(),
            format!(
                "Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
            ),
        ));
    }
    let headless = spec["clusterIP"] == "None";
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && !headless && ty != "ExternalName" {
        out.push(("spec.ports".into(), "Required value".into()));
    }
    for (i, p) in ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        if ports.len() > 1 && p["name"].as_str().is_none_or(str::is_empty) {
            out.push((format!("{f}.name"), "Required value".into()));
        }
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            out.push((format!("{f}.port"), format!("Invalid value: {port}: must be between 1 and 65535, inclusive")));
        }
        if let Some(t) = p["targetPort"].as_i64().filter(|t| !(1..=65535).contains(t)) {
            out.push((
                format!("{f}.targetPort"),
                format!("Invalid value: {t}: must be between 1 and 65535, inclusive"),
            ));
        }
        if let Some(proto) = p["protocol"].as_str().filter(|p| !matches!(*p, "TCP" | "UDP" | "SCTP")) {
            out.push((
                format!("{f}.protocol"),
                format!("Unsupported value: \"{proto}\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
            ));
        }
        if let Some(np) = p["nodePort"].as_i64().filter(|n| *n != 0) {
            if ty == "ClusterIP" {
                out.push((format!("{f}.nodePort"), "Forbidden: may not be used when `type` is 'ClusterIP'".into()));
            } else if !NODE_PORTS.contains(&np) {
                out.push((
                    format!("{f}.nodePort"),
                    format!(
                        "Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORTS.start(),
                        NODE_PORTS.end()
                    ),
                ));
            }
        }
    }
    // A cluster IP, once set, stays (an update that leaves it out keeps it: see
    // `keep_allocated`).
    if let Some(old) = old {
        let before = old["clusterIP"].as_str().unwrap_or_default();
        let now = spec["clusterIP"].as_str().unwrap_or_default();
        if !before.is_empty() && before != now {
            out.push((
                "spec.clusterIPs[0]".into(),
                format!("Invalid value: []string{{{now:?}}}: may not change once set"),
            ));
        }
    }
    out
}

/// What kube-apiserver carries over from the stored Service into an update that leaves
/// it out (its patchAllocatedValues): the cluster IPs and node ports it allocated.
pub fn keep_allocated(r: &Resource, obj: &mut Value, old: &Value) {
    if r.kind != "Service" || !obj["spec"].is_object() {
        return;
    }
    for field in ["clusterIP", "clusterIPs"] {
        let unset = match &obj["spec"][field] {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        };
        if unset && !old["spec"][field].is_null() {
            obj["spec"][field] = old["spec"][field].clone();
        }
    }
    let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
    for p in obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut).into_iter().flatten() {
        if p["nodePort"].as_i64().unwrap_or(0) != 0 {
            continue;
        }
        let same = old_ports.iter().find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"]);
        if let Some(np) = same.and_then(|o| o["nodePort"].as_i64()).filter(|n| *n != 0)
            && p.is_object()
        {
            p["nodePort"] = np.into();
        }
    }
}
