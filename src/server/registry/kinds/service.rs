//! Services: defaults, port and type rules, and the cluster IP and node ports the server
//! allocated, which an update that leaves them out keeps.

use serde_json::{Value, json};

use super::fill::{each, or_set, spec};
use super::{PLAIN, Problem, Strategy};
use crate::server::registry::nodeport;

pub const SERVICE: Strategy = Strategy {
    status: true,
    categories: &["all"],
    defaults: |obj, _| {
        if let Some(s) = spec(obj) {
            defaults(s);
        }
    },
    validate: |obj, old| validate(&obj["spec"], old.map(|o| &o["spec"])),
    keep_allocated,
    delete_answers_object: true,
    ..PLAIN
};

fn defaults(spec: &mut Value) {
    or_set(spec, "type", json!("ClusterIP"));
    or_set(spec, "sessionAffinity", json!("None"));
    let ty = spec["type"].as_str().unwrap_or_default().to_string();
    if ty != "ExternalName" {
        or_set(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty != "ExternalName" {
        // Single-stack IPv4, as kube-apiserver with one IPv4 service range.
        // clusterIP follows clusterIPs[0] when only the list is given.
        let first = spec["clusterIPs"].get(0).and_then(Value::as_str).map(str::to_string);
        if let Some(first) = first
            && spec["clusterIP"].as_str().is_none_or(str::is_empty)
        {
            spec["clusterIP"] = json!(first);
        }
        let ip = spec["clusterIP"].as_str().filter(|s| !s.is_empty()).map(str::to_string);
        if let Some(ip) = ip
            && spec["clusterIPs"].as_array().is_none_or(Vec::is_empty)
        {
            spec["clusterIPs"] = json!([ip]);
        }
        or_set(spec, "ipFamilies", json!(["IPv4"]));
        or_set(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        or_set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        or_set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    for p in each(spec, "ports") {
        or_set(p, "protocol", json!("TCP"));
        // targetPort defaults to the port (0 and "" count as unset).
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if unset && let Some(port) = p.get("port").cloned() {
            p["targetPort"] = port;
        }
    }
}

fn validate(spec: &Value, old: Option<&Value>) -> Vec<Problem> {
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
    out.extend(cluster_ip_problems(spec));
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
            } else if !in_node_port_range(np) {
                out.push((format!("{f}.nodePort"), nodeport::out_of_range(np)));
            } else if ports[..i].iter().any(|o| o["nodePort"].as_i64() == Some(np) && o["protocol"] == p["protocol"]) {
                out.push((format!("{f}.nodePort"), format!("Duplicate value: {np}")));
            }
        }
    }
    if let Some(hc) = spec["healthCheckNodePort"].as_i64().filter(|n| *n != 0) {
        if !nodeport::needs_health_check(spec) {
            out.push((
                "spec.healthCheckNodePort".into(),
                "Forbidden: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
                    .into(),
            ));
        } else if !in_node_port_range(hc) {
            out.push(("spec.healthCheckNodePort".into(), nodeport::out_of_range(hc)));
        }
    }
    // A cluster IP, once set, stays (an update that leaves it out keeps it: see
    // `keep_allocated`).
    if let Some(old) = old {
        let before = old["clusterIP"].as_str().unwrap_or_default();
        let now = spec["clusterIP"].as_str().unwrap_or_default();
        if !before.is_empty() && before != now && ty != "ExternalName" {
            out.push((
                "spec.clusterIPs[0]".into(),
                format!("Invalid value: []string{{{now:?}}}: may not change once set"),
            ));
        }
    }
    out
}

/// Is `port` a node port of --service-node-port-range?
fn in_node_port_range(port: i64) -> bool {
    u16::try_from(port).is_ok_and(|p| nodeport::range().contains(&p))
}

/// What kube-apiserver carries over from the stored Service into an update that leaves
/// it out (its patchAllocatedValues): the cluster IPs and node ports it allocated.
fn keep_allocated(obj: &mut Value, old: &Value) {
    if !obj["spec"].is_object() {
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
    // Node ports are carried over only between types that have them; a change to a type
    // without them drops those left as they were (kube's dropTypeDependentFields), so
    // that they are given back instead of refused.
    let had = nodeport::has_node_ports(&old["spec"]);
    let has = nodeport::has_node_ports(&obj["spec"]);
    for p in obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut).into_iter().flatten() {
        let same = old_ports.iter().find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"]);
        let before = same.and_then(|o| o["nodePort"].as_i64()).filter(|n| *n != 0);
        let now = p["nodePort"].as_i64().unwrap_or(0);
        if had && !has && before.is_some_and(|b| b == now) {
            if let Some(m) = p.as_object_mut() {
                m.remove("nodePort");
            }
        } else if now == 0
            && had
            && has
            && let Some(np) = before
            && p.is_object()
        {
            p["nodePort"] = np.into();
        }
    }
    if old["spec"]["type"] == "LoadBalancer"
        && obj["spec"]["type"] != "LoadBalancer"
        && obj["spec"]["allocateLoadBalancerNodePorts"] == old["spec"]["allocateLoadBalancerNodePorts"]
        && let Some(m) = obj["spec"].as_object_mut()
    {
        m.remove("allocateLoadBalancerNodePorts");
    }
    let hc_before = old["spec"]["healthCheckNodePort"].as_i64().filter(|n| *n != 0);
    let hc_now = obj["spec"]["healthCheckNodePort"].as_i64().unwrap_or(0);
    let needed = nodeport::needs_health_check(&old["spec"]);
    let needs = nodeport::needs_health_check(&obj["spec"]);
    if needed && !needs && hc_before == Some(hc_now) {
        if let Some(m) = obj["spec"].as_object_mut() {
            m.remove("healthCheckNodePort");
        }
    } else if hc_now == 0
        && needed
        && needs
        && let Some(hc) = hc_before
    {
        obj["spec"]["healthCheckNodePort"] = hc.into();
    }
}

/// clusterIP and clusterIPs: addresses (or "None"), the first the same as clusterIP, as
/// kube's ValidateService words it.
fn cluster_ip_problems(spec: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let ips: Vec<String> = spec["clusterIPs"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    let ip = spec["clusterIP"].as_str().unwrap_or_default();
    if let Some(first) = ips.first()
        && !ip.is_empty()
        && first != ip
    {
        out.push(("spec.clusterIPs[0]".into(), format!("Invalid value: {first:?}: must match `clusterIP`")));
    }
    for (i, v) in ips.iter().enumerate() {
        if v == "None" && i == 0 {
            continue;
        }
        if v.parse::<std::net::IpAddr>().is_err() {
            out.push((
                format!("spec.clusterIPs[{i}]"),
                format!("Invalid value: {v:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
            ));
        }
    }
    if ips.len() > 1 {
        out.push((
            "spec.clusterIPs".into(),
            "Invalid value: more than one cluster IP: only one IP family (IPv4) is served".into(),
        ));
    }
    out
}
