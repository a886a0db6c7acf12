//! `kubectl get` asks for `application/json;as=Table;v=v1;g=meta.k8s.io`: the rows it
//! prints, with the columns kubectl users know for each kind (the API server's printers).

use serde_json::{Value, json};

use crate::model::time::{human_duration, now_secs, parse_rfc3339};
use crate::server::registry::resources::Resource;

/// Whether the Accept header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept.split(',').any(|part| part.contains("as=Table") && part.contains("g=meta.k8s.io"))
}

fn columns(kind: &str) -> Vec<(&'static str, &'static str, i32)> {
    // Events lead with when they were last seen, and name themselves only in -o wide.
    if kind == "Event" {
        return vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
            ("Name", "string", 1),
        ];
    }
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
        "DaemonSet" => vec![
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
        ],
        "StatefulSet" => vec![("Ready", "string", 0)],
        "ControllerRevision" => vec![("Controller", "string", 0), ("Revision", "integer", 0)],
        "Job" => vec![("Status", "string", 0), ("Completions", "string", 0), ("Duration", "string", 0)],
        "CronJob" => vec![
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
        ],
        "PersistentVolume" => vec![
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
        ],
        "PersistentVolumeClaim" => vec![
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
        ],
        "ServiceAccount" => vec![("Secrets", "string", 0)],
        "StorageClass" => vec![
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "string", 0),
        ],
        "Ingress" => {
            vec![("Class", "string", 0), ("Hosts", "string", 0), ("Address", "string", 0), ("Ports", "string", 0)]
        }
        "IngressClass" => vec![("Controller", "string", 0), ("Parameters", "string", 0)],
        "NetworkPolicy" => vec![("Pod-Selector", "string", 0)],
        // Roles show when they were made as a date, in place of an age.
        "Role" | "ClusterRole" | "CustomResourceDefinition" => {
            return vec![("Name", "string", 0), ("Created At", "string", 0)];
        }
        "RoleBinding" | "ClusterRoleBinding" => vec![("Role", "string", 0)],
        "HorizontalPodAutoscaler" => vec![
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "integer", 0),
            ("Replicas", "integer", 0),
        ],
        "PodDisruptionBudget" => vec![
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
        ],
        "EndpointSlice" => vec![("AddressType", "string", 0), ("Ports", "string", 0), ("Endpoints", "string", 0)],
        "PriorityClass" => vec![("Value", "integer", 0), ("Global-Default", "boolean", 0)],
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
        "Deployment" | "ReplicaSet" | "DaemonSet" | "Job" | "CronJob" => {
            c.extend([("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)])
        }
        "StatefulSet" => c.extend([("Containers", "string", 1), ("Images", "string", 1)]),
        "PersistentVolume" | "PersistentVolumeClaim" => c.push(("VolumeMode", "string", 1)),
        "RoleBinding" | "ClusterRoleBinding" => {
            c.extend([("Users", "string", 1), ("Groups", "string", 1), ("ServiceAccounts", "string", 1)])
        }
        // After the age, as kube-apiserver added it.
        "PriorityClass" => c.push(("PreemptionPolicy", "string", 0)),
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
            let format = match name {
                "Name" => "name",
                "Created At" => "date",
                _ => "",
            };
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
    match kind {
        "Event" => return event_cells(o, now),
        "Role" | "ClusterRole" | "CustomResourceDefinition" => {
            let created = o.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or_default();
            return vec![json!(o["metadata"]["name"]), json!(created)];
        }
        _ => {}
    }
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
        "DaemonSet" => {
            let st = &o["status"];
            c.extend([
                json!(int(&st["desiredNumberScheduled"])),
                json!(int(&st["currentNumberScheduled"])),
                json!(int(&st["numberReady"])),
                json!(int(&st["updatedNumberScheduled"])),
                json!(int(&st["numberAvailable"])),
                json!(labels(&o["spec"]["template"]["spec"]["nodeSelector"])),
            ]);
        }
        "StatefulSet" => c.push(json!(format!(
            "{}/{}",
            int(&o["status"]["readyReplicas"]),
            o["spec"]["replicas"].as_i64().unwrap_or(1)
        ))),
        "ControllerRevision" => {
            // As kube prints its owner: `daemonset.apps/fluentd`.
            let owner = o["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["controller"] == true));
            let controller = owner.map_or("<none>".to_string(), |r| {
                let group = r["apiVersion"].as_str().unwrap_or_default().split_once('/').map_or("", |(g, _)| g);
                let kind = r["kind"].as_str().unwrap_or_default().to_ascii_lowercase();
                let name = r["name"].as_str().unwrap_or_default();
                if group.is_empty() { format!("{kind}/{name}") } else { format!("{kind}.{group}/{name}") }
            });
            c.extend([json!(controller), json!(int(&o["revision"]))]);
        }
        "Job" => c.extend(job_cells(o, now)),
        "CronJob" => {
            let last = o.pointer("/status/lastScheduleTime").and_then(Value::as_str).and_then(parse_rfc3339);
            c.extend([
                json!(str_or(&o["spec"]["schedule"], "")),
                json!(str_or(&o["spec"]["timeZone"], "<none>")),
                // Printed as Go's printBool prints it; unset is defaulted to false.
                json!(if o["spec"]["suspend"].as_bool() == Some(true) { "True" } else { "False" }),
                json!(o["status"]["active"].as_array().map_or(0, Vec::len)),
                json!(last.map_or("<none>".to_string(), |t| human_duration(now - t))),
            ]);
        }
        "PersistentVolume" => {
            let claim = &o["spec"]["claimRef"];
            let claim = if claim.is_object() {
                format!("{}/{}", str_or(&claim["namespace"], ""), str_or(&claim["name"], ""))
            } else {
                String::new()
            };
            c.extend([
                json!(str_or(&o["spec"]["capacity"]["storage"], "0")),
                json!(access_modes(&o["spec"]["accessModes"])),
                json!(str_or(&o["spec"]["persistentVolumeReclaimPolicy"], "")),
                json!(if o["metadata"]["deletionTimestamp"].is_string() {
                    "Terminating"
                } else {
                    str_or(&o["status"]["phase"], "")
                }),
                json!(claim),
                json!(str_or(&o["spec"]["storageClassName"], "")),
                json!(str_or(&o["spec"]["volumeAttributesClassName"], "<unset>")),
                json!(str_or(&o["status"]["reason"], "")),
            ]);
        }
        "PersistentVolumeClaim" => {
            // Capacity and access modes are the bound volume's, shown once there is one.
            let bound = !str_or(&o["spec"]["volumeName"], "").is_empty();
            let phase = if o["metadata"]["deletionTimestamp"].is_string() {
                "Terminating"
            } else {
                str_or(&o["status"]["phase"], "")
            };
            c.extend([
                json!(phase),
                json!(str_or(&o["spec"]["volumeName"], "")),
                json!(if bound { str_or(&o["status"]["capacity"]["storage"], "0") } else { "" }),
                json!(if bound { access_modes(&o["status"]["accessModes"]) } else { String::new() }),
                json!(str_or(&o["spec"]["storageClassName"], "")),
                json!(str_or(&o["spec"]["volumeAttributesClassName"], "<unset>")),
            ]);
        }
        "ServiceAccount" => c.push(json!(o["secrets"].as_array().map_or(0, Vec::len).to_string())),
        "StorageClass" => {
            let default =
                ["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"]
                    .iter()
                    .any(|a| o["metadata"]["annotations"][a] == "true");
            if default {
                c[0] = json!(format!("{} (default)", str_or(&o["metadata"]["name"], "")));
            }
            c.extend([
                json!(str_or(&o["provisioner"], "")),
                json!(str_or(&o["reclaimPolicy"], "Delete")),
                json!(str_or(&o["volumeBindingMode"], "Immediate")),
                json!(o["allowVolumeExpansion"].as_bool().unwrap_or(false).to_string()),
            ]);
        }
        "Ingress" => c.extend(ingress_cells(o)),
        "IngressClass" => {
            let p = &o["spec"]["parameters"];
            let parameters = if p.is_object() {
                let kind = match p["apiGroup"].as_str() {
                    Some(g) => format!("{}.{g}", str_or(&p["kind"], "")),
                    None => str_or(&p["kind"], "").to_string(),
                };
                format!("{kind}/{}", str_or(&p["name"], ""))
            } else {
                "<none>".to_string()
            };
            c.extend([json!(str_or(&o["spec"]["controller"], "")), json!(parameters)]);
        }
        "NetworkPolicy" => c.push(json!(selector(&o["spec"]["podSelector"]))),
        "RoleBinding" | "ClusterRoleBinding" => {
            c.push(json!(format!("{}/{}", str_or(&o["roleRef"]["kind"], ""), str_or(&o["roleRef"]["name"], ""))))
        }
        "HorizontalPodAutoscaler" => {
            let spec = &o["spec"];
            c.extend([
                json!(format!(
                    "{}/{}",
                    str_or(&spec["scaleTargetRef"]["kind"], ""),
                    str_or(&spec["scaleTargetRef"]["name"], "")
                )),
                json!(hpa_targets(&spec["metrics"], &o["status"]["currentMetrics"])),
                json!(spec["minReplicas"].as_i64().map_or("<unset>".to_string(), |m| m.to_string())),
                json!(int(&spec["maxReplicas"])),
                json!(int(&o["status"]["currentReplicas"])),
            ]);
        }
        "PodDisruptionBudget" => {
            let int_or_string = |v: &Value| match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => "N/A".to_string(),
            };
            c.extend([
                json!(int_or_string(&o["spec"]["minAvailable"])),
                json!(int_or_string(&o["spec"]["maxUnavailable"])),
                json!(int(&o["status"]["disruptionsAllowed"])),
            ]);
        }
        "EndpointSlice" => {
            let ports: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["port"].as_i64().map_or("<unset>".to_string(), |n| n.to_string()))
                .collect();
            let addresses: Vec<String> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            c.extend([
                json!(str_or(&o["addressType"], "")),
                json!(if ports.is_empty() { "<unset>".to_string() } else { ports.join(",") }),
                json!(at_most(&addresses, 3, "<unset>")),
            ]);
        }
        "PriorityClass" => c.extend([json!(int(&o["value"])), json!(o["globalDefault"].as_bool().unwrap_or(false))]),
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
        "Deployment" | "ReplicaSet" | "DaemonSet" | "Job" => {
            let (names, images) = containers_and_images(&o["spec"]["template"]);
            c.extend([json!(names), json!(images), json!(selector(&o["spec"]["selector"]))]);
        }
        "CronJob" => {
            let job = &o["spec"]["jobTemplate"]["spec"];
            let (names, images) = containers_and_images(&job["template"]);
            c.extend([json!(names), json!(images), json!(selector(&job["selector"]))]);
        }
        "StatefulSet" => {
            let (names, images) = containers_and_images(&o["spec"]["template"]);
            c.extend([json!(names), json!(images)]);
        }
        "PersistentVolume" | "PersistentVolumeClaim" => c.push(json!(str_or(&o["spec"]["volumeMode"], "<unset>"))),
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects = o["subjects"].as_array().cloned().unwrap_or_default();
            let of = |kind: &str| -> String {
                let names: Vec<String> = subjects
                    .iter()
                    .filter(|s| s["kind"] == kind)
                    .map(|s| match kind {
                        "ServiceAccount" => format!("{}/{}", str_or(&s["namespace"], ""), str_or(&s["name"], "")),
                        _ => str_or(&s["name"], "").to_string(),
                    })
                    .collect();
                names.join(", ")
            };
            c.extend([json!(of("User")), json!(of("Group")), json!(of("ServiceAccount"))]);
        }
        "PriorityClass" => c.push(json!(str_or(&o["preemptionPolicy"], "<unset>"))),
        _ => {}
    }
    c
}

/// `items` joined with commas, the first `max` of them and "+ N more..." after, as
/// kubectl's printers shorten long lists; `empty` for none.
fn at_most(items: &[String], max: usize, empty: &str) -> String {
    match items.len() {
        0 => empty.to_string(),
        n if n > max => format!("{} + {} more...", items[..max].join(","), n - max),
        _ => items.join(","),
    }
}

/// A map of labels as `k=v,k2=v2`, or `<none>` (a DaemonSet's node selector).
fn labels(m: &Value) -> String {
    let parts: Vec<String> =
        m.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", str_or(v, ""))).collect();
    if parts.is_empty() { "<none>".into() } else { parts.join(",") }
}

/// Access modes as kubectl abbreviates them, in its order.
fn access_modes(modes: &Value) -> String {
    let modes: Vec<&str> = modes.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(long, _)| modes.contains(long))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

fn since(v: &Value, now: i64) -> Option<String> {
    v.as_str().and_then(parse_rfc3339).map(|t| human_duration(now - t))
}

/// A Job's status, completions and duration.
fn job_cells(o: &Value, now: i64) -> [Value; 3] {
    let conditions = o["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let has = |t: &str| conditions.iter().any(|c| c["type"] == t && c["status"] == "True");
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if o["metadata"]["deletionTimestamp"].is_string() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let succeeded = int(&o["status"]["succeeded"]);
    let completions = match (o["spec"]["completions"].as_i64(), o["spec"]["parallelism"].as_i64()) {
        (Some(n), _) => format!("{succeeded}/{n}"),
        (None, Some(p)) if p > 1 => format!("{succeeded}/1 of {p}"),
        _ => format!("{succeeded}/1"),
    };
    let start = o.pointer("/status/startTime").and_then(Value::as_str).and_then(parse_rfc3339);
    let end = o.pointer("/status/completionTime").and_then(Value::as_str).and_then(parse_rfc3339);
    let duration = match (start, end) {
        (Some(s), Some(e)) => human_duration(e - s),
        (Some(s), None) => human_duration(now - s),
        _ => String::new(),
    };
    [json!(status), json!(completions), json!(duration)]
}

/// An Ingress's class, hosts, address and ports.
fn ingress_cells(o: &Value) -> [Value; 4] {
    let hosts: Vec<String> = o["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["host"].as_str().filter(|h| !h.is_empty()).map(String::from))
        .collect();
    let address: Vec<String> = o["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().filter(|s| !s.is_empty()).or_else(|| i["hostname"].as_str()).map(String::from))
        .collect();
    let tls = o["spec"]["tls"].as_array().is_some_and(|t| !t.is_empty());
    [
        json!(str_or(&o["spec"]["ingressClassName"], "<none>")),
        json!(at_most(&hosts, 4, "*")),
        json!(address.join(",")),
        json!(if tls { "80, 443" } else { "80" }),
    ]
}

/// An HPA's targets (autoscaling/v2 metrics against their current values), as
/// `cpu: 40%/50%`; the first two, and how many more.
fn hpa_targets(metrics: &Value, current: &Value) -> String {
    let metrics = metrics.as_array().cloned().unwrap_or_default();
    if metrics.is_empty() {
        return "<none>".into();
    }
    let list: Vec<String> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let now = &current[i];
            let ty = str_or(&m["type"], "");
            let key = match ty {
                "Resource" => "resource",
                "ContainerResource" => "containerResource",
                "Pods" => "pods",
                "Object" => "object",
                _ => "external",
            };
            let target = &m[key]["target"];
            let value = |v: &Value| match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => "<unknown>".into(),
            };
            let (cur, want) = match target["averageUtilization"].as_i64() {
                Some(u) => (
                    now[key]["current"]["averageUtilization"]
                        .as_i64()
                        .map_or("<unknown>".to_string(), |c| format!("{c}%")),
                    format!("{u}%"),
                ),
                None => {
                    let field = if target["type"] == "Value" { "value" } else { "averageValue" };
                    let cur = now[key]["current"].get(field).map_or("<unknown>".to_string(), value);
                    (cur, value(&target[field]))
                }
            };
            match ty {
                "Resource" | "ContainerResource" => format!("{}: {cur}/{want}", str_or(&m[key]["name"], "")),
                _ => format!("{cur}/{want}"),
            }
        })
        .collect();
    if list.len() > 2 { format!("{} + {} more...", list[..2].join(", "), list.len() - 2) } else { list.join(", ") }
}

/// A core/v1 Event's row: when it was last and first seen, how often, about what.
fn event_cells(o: &Value, now: i64) -> Vec<Value> {
    let first =
        since(&o["firstTimestamp"], now).or_else(|| since(&o["eventTime"], now)).unwrap_or_else(|| "<unknown>".into());
    let mut last = since(&o["lastTimestamp"], now).unwrap_or_else(|| first.clone());
    let mut count = o["count"].as_i64().unwrap_or(0);
    if o["series"].is_object() {
        last = since(&o["series"]["lastObservedTime"], now).unwrap_or_else(|| "<unknown>".into());
        count = int(&o["series"]["count"]);
    } else if count == 0 {
        // Singleton events of the new API have no count.
        count = 1;
    }
    let involved = &o["involvedObject"];
    let kind = str_or(&involved["kind"], "").to_lowercase();
    let target = match involved["name"].as_str().filter(|n| !n.is_empty()) {
        Some(n) => format!("{kind}/{n}"),
        None => kind,
    };
    let component = str_or(&o["source"]["component"], str_or(&o["reportingComponent"], ""));
    let host = str_or(&o["source"]["host"], str_or(&o["reportingInstance"], ""));
    let source = if host.is_empty() { component.to_string() } else { format!("{component}, {host}") };
    vec![
        json!(last),
        json!(str_or(&o["type"], "")),
        json!(str_or(&o["reason"], "")),
        json!(target),
        json!(str_or(&involved["fieldPath"], "")),
        json!(source),
        json!(str_or(&o["message"], "").trim()),
        json!(first),
        json!(count),
        json!(o["metadata"]["name"]),
    ]
}

fn row(r: &'static Resource, o: &Value, now: i64) -> Value {
    // kubectl needs only the metadata of each row (namespace, labels); not the whole object.
    let partial = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]});
    // The printers read the stored version (an HPA's v2 metrics, a core Event's fields),
    // whichever version was asked for, as kube-apiserver's print its internal version.
    if let Some(c) = r.custom {
        return json!({"cells": super::printer_columns::cells(c, o, now), "object": partial});
    }
    let stored = crate::server::registry::convert::to_version(r.storage(), o.clone());
    json!({"cells": cells(r.kind, &stored, now), "object": partial})
}

/// A Table of `objects`; `columns` false for the later events of a watch.
pub fn table(
    r: &'static Resource,
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
        "rows": objects.iter().map(|o| row(r, o, now)).collect::<Vec<_>>(),
    });
    t["columnDefinitions"] = match (with_columns, r.custom) {
        (false, _) => json!([]),
        (true, Some(c)) => json!(super::printer_columns::definitions(c)),
        (true, None) => json!(definitions(r.kind)),
    };
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
        for r in crate::server::registry::resources::RESOURCES {
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
