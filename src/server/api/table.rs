//! `kubectl get` asks for `application/json;as=Table;v=v1;g=meta.k8s.io`: the rows it
//! prints, with the columns kubectl users know for each kind (the API server's printers).

use serde_json::{Value, json};

use super::resources::Resource;
use crate::model::time::{human_duration, now_secs, parse_rfc3339};

/// Whether the Accept header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept.split(',').any(|part| part.contains("as=Table") && part.contains("g=meta.k8s.io"))
}

fn columns(kind: &str) -> Vec<(&'static str, &'static str, i32)> {
    let mut c = vec![("Name", "string", 0)];
    c.extend(match kind {
        "Namespace" => vec![("Status", "string", 0)],
        "Pod" => vec![("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "string", 0)],
        "Node" => vec![("Status", "string", 0), ("Roles", "string", 0)],
        "Service" => vec![
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
        ],
        "Endpoints" => vec![("Endpoints", "string", 0)],
        "ConfigMap" => vec![("Data", "integer", 0)],
        "Secret" => vec![("Type", "string", 0), ("Data", "integer", 0)],
        "Deployment" => vec![("Ready", "string", 0), ("Up-to-date", "integer", 0), ("Available", "integer", 0)],
        "ReplicaSet" => vec![("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0)],
        "Lease" => vec![("Holder", "string", 0)],
        _ => vec![],
    });
    c.push(("Age", "string", 0));
    // Priority 1: the columns `-o wide` adds, as kube-apiserver's printers have them.
    match kind {
        "Node" => c.extend([
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ]),
        "Pod" => c.extend([
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ]),
        "Service" => c.push(("Selector", "string", 1)),
        "Deployment" | "ReplicaSet" => {
            c.extend([("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)])
        }
        _ => {}
    }
    c
}

/// A label selector as kubectl prints it (`app=web,tier in (a,b)`), or `<none>`.
fn selector(sel: &Value) -> String {
    let mut parts: Vec<String> =
        sel["matchLabels"].as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", str_or(v, ""))).collect();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = str_or(&e["key"], "");
        let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        parts.push(match str_or(&e["operator"], "") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    if parts.is_empty() { "<none>".into() } else { parts.join(",") }
}

/// A Service's selector (a plain map), as kubectl prints it.
fn map_selector(sel: &Value) -> String {
    selector(&json!({"matchLabels": sel}))
}

/// The containers' names and images of a pod template, comma-separated.
fn containers_and_images(template: &Value) -> (String, String) {
    let cs = template["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| str_or(&c["name"], "")).collect();
    let images: Vec<&str> = cs.iter().map(|c| str_or(&c["image"], "")).collect();
    (names.join(","), images.join(","))
}

fn definitions(kind: &str) -> Vec<Value> {
    columns(kind)
        .into_iter()
        .map(|(name, ty, priority)| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
        })
        .collect()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn str_or<'a>(v: &'a Value, default: &'a str) -> &'a str {
    v.as_str().filter(|s| !s.is_empty()).unwrap_or(default)
}

fn count(v: &Value) -> i64 {
    v.as_object().map_or(0, |m| m.len() as i64)
}

fn age(o: &Value, now: i64) -> String {
    o.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
        .map_or("<unknown>".into(), |t| human_duration(now - t))
}

fn cells(kind: &str, o: &Value, now: i64) -> Vec<Value> {
    let mut c = vec![json!(o["metadata"]["name"])];
    match kind {
        "Namespace" => c.push(json!(str_or(&o["status"]["phase"], "Active"))),
        "Pod" => {
            let statuses = o["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|s| s["ready"].as_bool() == Some(true)).count();
            let restarts: i64 = statuses.iter().map(|s| int(&s["restartCount"])).sum();
            let status = if o["metadata"]["deletionTimestamp"].is_string() {
                "Terminating"
            } else {
                str_or(&o["status"]["reason"], str_or(&o["status"]["phase"], "Pending"))
            };
            c.extend([json!(format!("{ready}/{total}")), json!(status), json!(restarts.to_string())]);
        }
        "Node" => {
            let ready = o["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"].as_str().unwrap_or(""));
            let status = match ready {
                Some("True") => "Ready",
                Some("False") => "NotReady",
                _ => "Unknown",
            };
            let status = if o["spec"]["unschedulable"].as_bool() == Some(true) {
                format!("{status},SchedulingDisabled")
            } else {
                status.to_string()
            };
            let roles: Vec<&str> = o["metadata"]["labels"]
                .as_object()
                .map(|l| l.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).collect())
                .unwrap_or_default();
            c.extend([json!(status), json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") })]);
        }
        "Service" => {
            let ports: Vec<String> = o["spec"]["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| match p["nodePort"].as_i64() {
                            Some(np) => format!("{}:{np}/{}", int(&p["port"]), str_or(&p["protocol"], "TCP")),
                            None => format!("{}/{}", int(&p["port"]), str_or(&p["protocol"], "TCP")),
                        })
                        .collect()
                })
                .unwrap_or_default();
            c.extend([
                json!(str_or(&o["spec"]["type"], "ClusterIP")),
                json!(str_or(&o["spec"]["clusterIP"], "<none>")),
                json!("<none>"),
                json!(if ports.is_empty() { "<none>".to_string() } else { ports.join(",") }),
            ]);
        }
        "Endpoints" => {
            let mut eps = Vec::new();
            for subset in o["subsets"].as_array().into_iter().flatten() {
                for a in subset["addresses"].as_array().into_iter().flatten() {
                    for p in subset["ports"].as_array().into_iter().flatten() {
                        eps.push(format!("{}:{}", str_or(&a["ip"], "?"), int(&p["port"])));
                    }
                }
            }
            c.push(json!(if eps.is_empty() { "<none>".to_string() } else { eps.join(",") }));
        }
        "ConfigMap" => c.push(json!(count(&o["data"]) + count(&o["binaryData"]))),
        "Secret" => c.extend([json!(str_or(&o["type"], "Opaque")), json!(count(&o["data"]))]),
        "Deployment" => c.extend([
            json!(format!("{}/{}", int(&o["status"]["readyReplicas"]), o["spec"]["replicas"].as_i64().unwrap_or(1))),
            json!(int(&o["status"]["updatedReplicas"])),
            json!(int(&o["status"]["availableReplicas"])),
        ]),
        "ReplicaSet" => c.extend([
            json!(o["spec"]["replicas"].as_i64().unwrap_or(1)),
            json!(int(&o["status"]["replicas"])),
            json!(int(&o["status"]["readyReplicas"])),
        ]),
        "Lease" => c.push(json!(str_or(&o["spec"]["holderIdentity"], "<none>"))),
        _ => {}
    }
    c.push(json!(age(o, now)));
    match kind {
        "Node" => {
            let info = &o["status"]["nodeInfo"];
            let address = |t: &str| {
                o["status"]["addresses"]
                    .as_array()
                    .and_then(|a| a.iter().find(|a| a["type"] == t))
                    .map_or("<none>".to_string(), |a| str_or(&a["address"], "<none>").to_string())
            };
            c.extend([
                json!(str_or(&info["kubeletVersion"], "")),
                json!(address("InternalIP")),
                json!(address("ExternalIP")),
                json!(str_or(&info["osImage"], "<unknown>")),
                json!(str_or(&info["kernelVersion"], "<unknown>")),
                json!(str_or(&info["containerRuntimeVersion"], "<unknown>")),
            ]);
        }
        "Pod" => {
            let gates = o["spec"]["readinessGates"].as_array().map_or(0, Vec::len);
            let ready_gates = o["spec"]["readinessGates"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|g| {
                    o["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == g["conditionType"] && c["status"] == "True")
                })
                .count();
            c.extend([
                json!(str_or(&o["status"]["podIP"], "<none>")),
                json!(str_or(&o["spec"]["nodeName"], "<none>")),
                json!(str_or(&o["status"]["nominatedNodeName"], "<none>")),
                json!(if gates == 0 { "<none>".to_string() } else { format!("{ready_gates}/{gates}") }),
            ]);
        }
        "Service" => c.push(json!(map_selector(&o["spec"]["selector"]))),
        "Deployment" | "ReplicaSet" => {
            let (names, images) = containers_and_images(&o["spec"]["template"]);
            c.extend([json!(names), json!(images), json!(selector(&o["spec"]["selector"]))]);
        }
        _ => {}
    }
    c
}

fn row(kind: &str, o: &Value, now: i64) -> Value {
    // kubectl needs only the metadata of each row (namespace, labels); not the whole object.
    let partial = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]});
    json!({"cells": cells(kind, o, now), "object": partial})
}

/// A Table of `objects`; `columns` false for the later events of a watch.
pub fn table(
    r: &Resource,
    objects: &[Value],
    resource_version: Option<&str>,
    continue_token: Option<&str>,
    with_columns: bool,
) -> Value {
    let now = now_secs();
    let mut meta = json!({});
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = json!(rv);
    }
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    let mut t = json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
        "rows": objects.iter().map(|o| row(r.kind, o, now)).collect::<Vec<_>>(),
    });
    t["columnDefinitions"] = if with_columns { json!(definitions(r.kind)) } else { json!([]) };
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_cell_for_each_column_wide_ones_included() {
        let o = json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
                     "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}, {"name": "d", "image": "nginx"}]}}}});
        for r in super::super::resources::RESOURCES {
            assert_eq!(cells(r.kind, &o, 0).len(), columns(r.kind).len(), "{}", r.kind);
        }
        let wide = cells("Deployment", &o, 0);
        assert_eq!(&wide[wide.len() - 3..], [json!("c,d"), json!("busybox,nginx"), json!("app=web,tier in (a,b)")]);
        assert_eq!(map_selector(&json!(null)), "<none>");
    }

    #[test]
    fn recognises_kubectl_accept_headers() {
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
    }

    #[test]
    fn pod_rows_show_readiness_and_restarts() {
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": crate::model::time::format_rfc3339(now_secs() - 300)},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.1.0.5", "containerStatuses": [{"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1}]}});
        let c = cells("Pod", &pod, now_secs());
        assert_eq!(
            c,
            vec![
                json!("p"),
                json!("1/2"),
                json!("Running"),
                json!("3"),
                json!("5m"),
                json!("10.1.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        assert_eq!(columns("Pod").len(), c.len());
    }
}
