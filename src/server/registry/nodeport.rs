//! Services' node ports: which port of `--service-node-port-range` a NodePort or
//! LoadBalancer Service's port (and a Local LoadBalancer's health check) gets, and the
//! record that says it is taken.
//!
//! kube-apiserver keeps one bitmap of the range; here, as for cluster IPs, every taken port
//! is one key in the store, written with a create that fails if it exists, so that servers
//! sharing a store never hand out one port twice. A port number is taken whatever the
//! protocol: one Service may use it for TCP and UDP alike (kube allows it), two may not.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::error::RegistryError;
use super::records;
use crate::server::store::{Backend, StoreError};

/// Where the records live, one per port number.
pub const PREFIX: &str = "/registry/nodectl.io/servicenodeports/";

/// kube-apiserver's default --service-node-port-range.
pub const DEFAULT_RANGE: RangeInclusive<u16> = 30000..=32767;

static RANGE: OnceLock<RangeInclusive<u16>> = OnceLock::new();

/// Sets the range once, at the server's start (a second call, tests in one process, keeps
/// the first).
pub fn set_range(range: RangeInclusive<u16>) {
    let _ = RANGE.set(range);
}

pub fn range() -> RangeInclusive<u16> {
    RANGE.get_or_init(|| DEFAULT_RANGE).clone()
}

/// kube's words for a port outside the range.
pub fn out_of_range(port: i64) -> String {
    let r = range();
    format!(
        "Invalid value: {port}: provided port is not in the valid range. The range of valid ports is {}-{}",
        r.start(),
        r.end()
    )
}

fn key(port: u16) -> String {
    format!("{PREFIX}{port}")
}

fn record(port: u16, ns: &str, name: &str) -> Vec<u8> {
    let obj = json!({
        "apiVersion": "nodectl.io/v1",
        "kind": "ServiceNodePort",
        "metadata": {"name": port.to_string()},
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": ns, "name": name}},
    });
    super::objects::encode(&obj)
}

fn store_error(e: StoreError) -> RegistryError {
    records::store_error(e, "servicenodeports")
}

/// Does a Service of this type have node ports at all?
pub fn has_node_ports(spec: &Value) -> bool {
    matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer"))
}

/// Does the server pick node ports for the ports that ask for none? (A LoadBalancer with
/// allocateLoadBalancerNodePorts false keeps only those the user gave.)
fn allocates_node_ports(spec: &Value) -> bool {
    spec["type"] == "NodePort" || (spec["type"] == "LoadBalancer" && spec["allocateLoadBalancerNodePorts"] != false)
}

/// Does the Service need a health check node port (kube's NeedsHealthCheck)?
pub fn needs_health_check(spec: &Value) -> bool {
    spec["type"] == "LoadBalancer" && spec["externalTrafficPolicy"] == "Local"
}

fn port_of(v: &Value) -> Option<u16> {
    v.as_i64().and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0)
}

/// The node ports a Service spec holds: its ports' node ports and the health check's.
pub fn held(spec: &Value) -> BTreeSet<u16> {
    let mut out: BTreeSet<u16> =
        spec["ports"].as_array().into_iter().flatten().filter_map(|p| port_of(&p["nodePort"])).collect();
    out.extend(port_of(&spec["healthCheckNodePort"]));
    out
}

/// Takes the node ports Service `ns/name` asks for and free ones for the ports that ask
/// for none, writing them into `spec`. Ports `old` (the stored spec, on an update) holds
/// stay its own without a new record. Answers the ports newly taken (to give back if the
/// Service cannot be stored); on an error, what it took is given back already.
pub fn allocate(
    store: &dyn Backend,
    spec: &mut Value,
    old: Option<&Value>,
    ns: &str,
    name: &str,
) -> Result<Vec<u16>, RegistryError> {
    let mut taken = Vec::new();
    let result = allocate_into(store, spec, old, ns, name, &mut taken);
    if result.is_err() {
        for p in &taken {
            let _ = records::release(store, &key(*p), ns, name);
        }
    }
    result.map(|()| taken)
}

fn allocate_into(
    store: &dyn Backend,
    spec: &mut Value,
    old: Option<&Value>,
    ns: &str,
    name: &str,
    taken: &mut Vec<u16>,
) -> Result<(), RegistryError> {
    if !has_node_ports(spec) {
        return Ok(());
    }
    let mut mine: BTreeSet<u16> = old.map(held).unwrap_or_default();
    let mut take = |port: u16, field: String, mine: &mut BTreeSet<u16>| -> Result<(), RegistryError> {
        if mine.contains(&port) {
            return Ok(());
        }
        if !records::take(store, &key(port), &record(port, ns, name)).map_err(store_error)? {
            return Err(RegistryError::invalid(
                "Service",
                name,
                vec![(field, format!("Invalid value: {port}: provided port is already allocated"))],
            ));
        }
        mine.insert(port);
        taken.push(port);
        Ok(())
    };
    // The ports asked for first, so that a free pick never takes one of them.
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    for (i, p) in ports.iter().enumerate() {
        if let Some(np) = port_of(&p["nodePort"]) {
            take(np, format!("spec.ports[{i}].nodePort"), &mut mine)?;
        }
    }
    let hc = port_of(&spec["healthCheckNodePort"]);
    if let Some(hc) = hc.filter(|_| needs_health_check(spec)) {
        take(hc, "spec.healthCheckNodePort".into(), &mut mine)?;
    }
    if allocates_node_ports(spec) {
        for i in 0..ports.len() {
            if port_of(&spec["ports"][i]["nodePort"]).is_some() {
                continue;
            }
            // A port number served over two protocols gets one node port (as kube).
            let number = &spec["ports"][i]["port"];
            let twin = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| &o["port"] == number && port_of(&o["nodePort"]).is_some())
                .and_then(|o| port_of(&o["nodePort"]));
            let np = match twin {
                Some(np) => np,
                None => {
                    let np = take_any(store, ns, name)?;
                    mine.insert(np);
                    taken.push(np);
                    np
                }
            };
            spec["ports"][i]["nodePort"] = json!(np);
        }
    }
    if needs_health_check(spec) && hc.is_none() {
        let np = take_any(store, ns, name)?;
        taken.push(np);
        spec["healthCheckNodePort"] = json!(np);
    }
    Ok(())
}

/// A free port, from a random start so that servers sharing a store rarely race for the
/// same one; a lost race (the key exists) moves on to the next.
fn take_any(store: &dyn Backend, ns: &str, name: &str) -> Result<u16, RegistryError> {
    let r = range();
    let (first, size) = (u32::from(*r.start()), u32::from(*r.end()) - u32::from(*r.start()) + 1);
    let used: std::collections::HashSet<String> =
        store.list(PREFIX, None, 0, None).map_err(store_error)?.items.into_iter().map(|kv| kv.key).collect();
    let start = rand::random::<u32>() % size;
    for i in 0..size {
        let Ok(port) = u16::try_from(first + (start + i) % size) else { continue };
        let k = key(port);
        if used.contains(&k) {
            continue;
        }
        if records::take(store, &k, &record(port, ns, name)).map_err(store_error)? {
            return Ok(port);
        }
    }
    Err(RegistryError::internal("failed to allocate a nodePort: range is full"))
}

/// Frees the node ports `spec` holds that `keep` (the spec stored instead, on an update)
/// does not, if their records name Service `ns/name`.
pub fn release(
    store: &dyn Backend,
    spec: &Value,
    keep: Option<&Value>,
    ns: &str,
    name: &str,
) -> Result<(), RegistryError> {
    let kept = keep.map(held).unwrap_or_default();
    for port in held(spec).difference(&kept) {
        records::release(store, &key(*port), ns, name).map_err(store_error)?;
    }
    Ok(())
}

/// Gives back ports `allocate` took for a write that failed. Best effort: the repair
/// loop frees what this misses.
pub fn give_back(store: &dyn Backend, ports: &[u16], ns: &str, name: &str) {
    for p in ports {
        let _ = records::release(store, &key(*p), ns, name);
    }
}

/// One pass of the repair loop over node ports, as clusterip::repair.
pub fn repair(
    store: &dyn Backend,
    services: &[Value],
    suspects: &mut std::collections::HashSet<(String, i64)>,
) -> Result<(usize, usize), RegistryError> {
    let holds = records::holders(services, |spec| held(spec).into_iter().map(key));
    let record = |k: &str, ns: &str, name: &str| {
        let port = k.strip_prefix(PREFIX).and_then(|s| s.parse().ok()).unwrap_or(0);
        record(port, ns, name)
    };
    records::repair(store, PREFIX, &holds, record, suspects).map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_counts_node_ports_and_the_health_check_once_each() {
        let spec = json!({"type": "LoadBalancer", "healthCheckNodePort": 30100,
            "ports": [{"port": 53, "protocol": "TCP", "nodePort": 30053},
                      {"port": 53, "protocol": "UDP", "nodePort": 30053},
                      {"port": 80, "nodePort": 0}]});
        assert_eq!(held(&spec), BTreeSet::from([30053, 30100]));
    }

    #[test]
    fn which_services_get_node_ports_and_health_checks() {
        assert!(allocates_node_ports(&json!({"type": "NodePort"})));
        assert!(allocates_node_ports(&json!({"type": "LoadBalancer"})));
        assert!(!allocates_node_ports(&json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false})));
        assert!(!has_node_ports(&json!({"type": "ClusterIP"})));
        assert!(needs_health_check(&json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"})));
        assert!(!needs_health_check(&json!({"type": "NodePort", "externalTrafficPolicy": "Local"})));
    }
}
