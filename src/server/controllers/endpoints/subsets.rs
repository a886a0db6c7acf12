//! A Service's v1 Endpoints as kube's endpoints controller writes them: its members grouped
//! into subsets by the ports they serve (kube's RepackSubsets), ready ones under
//! `addresses` and the others under `notReadyAddresses`, at most 1,000 addresses (more are
//! cut and the object is marked `endpoints.kubernetes.io/over-capacity: truncated`), with the
//! Service's labels and `service.kubernetes.io/headless` for a headless Service.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::members::{self, Member, Port};

/// kube's maxCapacity for one Endpoints object.
pub const MAX_ADDRESSES: usize = 1000;
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
pub const HEADLESS: &str = "service.kubernetes.io/headless";
/// Endpoints used as a leader-election lock by old components: never a leftover.
pub const LEADER: &str = "control-plane.alpha.kubernetes.io/leader";

/// The Endpoints `svc` should have, if that differs from `existing` (None: leave it).
pub fn desired(svc: &Service, all: &[Member], existing: Option<&Endpoints>) -> Option<Endpoints> {
    let (subsets, truncated) = subsets(svc, all);
    let mut labels = svc.labels().clone();
    labels.remove(HEADLESS);
    if members::is_headless(svc) {
        labels.insert(HEADLESS.into(), String::new());
    }
    let mut annotations = existing.map(|e| e.annotations().clone()).unwrap_or_default();
    if truncated {
        annotations.insert(OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY);
    }
    if let Some(e) = existing {
        let same = normalized(e.subsets.clone().unwrap_or_default()) == subsets
            && e.labels() == &labels
            && e.annotations() == &annotations;
        if same {
            return None;
        }
    }
    Some(Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            resource_version: existing.and_then(|e| e.resource_version()),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    })
}

/// The subsets, and whether addresses were cut to [`MAX_ADDRESSES`].
fn subsets(svc: &Service, all: &[Member]) -> (Vec<EndpointSubset>, bool) {
    let portless = svc.spec.as_ref().and_then(|s| s.ports.as_ref()).is_none_or(|p| p.is_empty());
    let mut groups: BTreeMap<Vec<Port>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> = BTreeMap::new();
    let mut room = MAX_ADDRESSES;
    // Ready addresses are kept first when there are too many.
    let ordered = all.iter().filter(|m| m.ready).chain(all.iter().filter(|m| !m.ready));
    let mut truncated = false;
    for m in ordered {
        // A pod that serves none of the ports is no endpoint; a headless Service without
        // ports lists its pods' addresses alone.
        if m.ports.is_empty() && !(portless && members::is_headless(svc)) {
            continue;
        }
        if room == 0 {
            truncated = true;
            break;
        }
        room -= 1;
        let group = groups.entry(m.ports.clone()).or_default();
        let list = if m.ready { &mut group.0 } else { &mut group.1 };
        list.push(address(m));
    }
    let subsets = groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| ports.into_iter().map(endpoint_port).collect()),
            }
        })
        .collect();
    (subsets, truncated)
}

fn address(m: &Member) -> EndpointAddress {
    EndpointAddress {
        ip: m.ip.clone(),
        hostname: m.hostname.clone(),
        node_name: m.node.clone(),
        target_ref: Some(m.target.clone()),
    }
}

fn endpoint_port(p: Port) -> EndpointPort {
    EndpointPort { name: p.name, port: p.port, protocol: Some(p.protocol), app_protocol: p.app_protocol }
}

/// Subsets as [`subsets`] would write them: empty lists absent, target references without
/// the fields the controller does not set.
fn normalized(subsets: Vec<EndpointSubset>) -> Vec<EndpointSubset> {
    let addresses = |l: Option<Vec<EndpointAddress>>| l.filter(|l| !l.is_empty());
    subsets
        .into_iter()
        .map(|s| EndpointSubset {
            addresses: addresses(s.addresses),
            not_ready_addresses: addresses(s.not_ready_addresses),
            ports: s.ports.filter(|p| !p.is_empty()),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "d", "labels": {"tier": "front"}}, "spec": spec}),
        )
        .unwrap()
    }

    fn member(ip: &str, ready: bool, ports: &[i32]) -> Member {
        Member {
            ip: ip.into(),
            node: Some("n1".into()),
            hostname: None,
            target: ObjectReference { kind: Some("Pod".into()), name: Some(format!("p{ip}")), ..Default::default() },
            ready,
            serving: ready,
            terminating: false,
            ports: ports
                .iter()
                .map(|&port| Port { name: None, port, protocol: "TCP".into(), app_protocol: None })
                .collect(),
        }
    }

    #[test]
    fn members_are_packed_by_their_ports_ready_and_not_ready_apart() {
        let s = svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let all = [
            member("10.0.0.2", true, &[80]),
            member("10.0.0.1", true, &[80]),
            member("10.0.0.3", false, &[80]),
            member("10.0.0.4", true, &[8080]),
        ];
        let ep = desired(&s, &all, None).unwrap();
        let v = serde_json::to_value(&ep).unwrap();
        assert_eq!(v["subsets"][0]["addresses"][0]["ip"], "10.0.0.1");
        assert_eq!(v["subsets"][0]["addresses"][1]["ip"], "10.0.0.2");
        assert_eq!(v["subsets"][0]["notReadyAddresses"][0]["ip"], "10.0.0.3");
        assert_eq!(v["subsets"][0]["ports"], json!([{"port": 80, "protocol": "TCP"}]));
        assert_eq!(v["subsets"][1]["addresses"][0]["ip"], "10.0.0.4");
        assert_eq!(v["metadata"]["labels"], json!({"tier": "front"}));
        // Written again from the same members, nothing changes.
        assert!(desired(&s, &all, Some(&ep)).is_none());
    }

    #[test]
    fn a_headless_service_without_ports_lists_bare_addresses_and_is_labelled() {
        let s = svc(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let ep = desired(&s, &[member("10.0.0.1", true, &[])], None).unwrap();
        let v = serde_json::to_value(&ep).unwrap();
        assert_eq!(
            v["subsets"],
            json!([{"addresses": [{"ip": "10.0.0.1", "nodeName": "n1", "targetRef": {"kind": "Pod", "name": "p10.0.0.1"}}]}])
        );
        assert_eq!(v["metadata"]["labels"][HEADLESS], "");
        // Not headless and without ports: no endpoints at all.
        let plain = svc(json!({"selector": {"app": "web"}}));
        assert!(desired(&plain, &[member("10.0.0.1", true, &[])], None).unwrap().subsets.is_none());
    }

    #[test]
    fn more_than_a_thousand_addresses_are_cut_ready_ones_first_and_marked() {
        let s = svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let all: Vec<Member> =
            (0..1200).map(|i| member(&format!("10.0.{}.{}", i / 250, i % 250), i >= 300, &[80])).collect();
        let ep = desired(&s, &all, None).unwrap();
        let sub = &ep.subsets.as_ref().unwrap()[0];
        assert_eq!(sub.addresses.as_ref().unwrap().len(), 900);
        assert_eq!(sub.not_ready_addresses.as_ref().unwrap().len(), 100);
        assert_eq!(ep.annotations().get(OVER_CAPACITY).map(String::as_str), Some("truncated"));
        // Back under the limit, the mark goes.
        let fewer = desired(&s, &all[..10], Some(&ep)).unwrap();
        assert!(!fewer.annotations().contains_key(OVER_CAPACITY));
    }
}
