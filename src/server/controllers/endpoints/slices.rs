//! A Service's EndpointSlices as kube's EndpointSlice reconciler keeps them: one set of
//! slices per combination of ports its pods serve, at most 100 endpoints each, labelled
//! with the Service's name and this controller, owned by the Service (so the garbage
//! collector removes them with it). A change touches as few slices as it can: endpoints
//! that did not change stay where they are, new ones fill the slices that are written
//! anyway before one with room, and only then new slices; a Service without endpoints
//! keeps one empty placeholder slice, as kube's does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use super::members::{self, Member, Port};
use super::subsets::HEADLESS;

pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER: &str = "endpointslice-controller.k8s.io";
/// kube's --max-endpoints-per-slice default.
pub const MAX_PER_SLICE: usize = 100;
const IPV4: &str = "IPv4";

/// The writes that bring a Service's slices to its members.
#[derive(Debug, Default)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// The label selector of the slices this controller keeps for the Service `name`.
pub fn selector(name: &str) -> String {
    format!("{SERVICE_NAME}={name},{MANAGED_BY}={CONTROLLER}")
}

/// The labels every slice of `svc` carries: the Service's own, then the reserved ones.
fn labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.labels().clone();
    for reserved in [SERVICE_NAME, MANAGED_BY, HEADLESS] {
        l.remove(reserved);
    }
    l.insert(SERVICE_NAME.into(), svc.name_any());
    l.insert(MANAGED_BY.into(), CONTROLLER.into());
    if members::is_headless(svc) {
        l.insert(HEADLESS.into(), String::new());
    }
    l
}

fn endpoint(m: &Member) -> Endpoint {
    Endpoint {
        addresses: vec![m.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(m.ready),
            serving: Some(m.serving),
            terminating: Some(m.terminating),
        }),
        hostname: m.hostname.clone(),
        node_name: m.node.clone(),
        target_ref: Some(m.target.clone()),
        ..Endpoint::default()
    }
}

/// What makes an endpoint the same one across changes: its pod and address.
fn identity(e: &Endpoint) -> (Option<&str>, Option<&str>, Option<&str>) {
    let target = e.target_ref.as_ref();
    (
        target.and_then(|t| t.namespace.as_deref()),
        target.and_then(|t| t.name.as_deref()),
        e.addresses.first().map(String::as_str),
    )
}

fn ports_of(slice: &EndpointSlice) -> Vec<Port> {
    let mut p: Vec<Port> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| Port {
            name: p.name.clone(),
            port: p.port.unwrap_or(0),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    p.sort();
    p
}

fn slice_ports(ports: &[Port]) -> Vec<EndpointPort> {
    ports
        .iter()
        .map(|p| EndpointPort {
            name: p.name.clone(),
            port: Some(p.port),
            protocol: Some(p.protocol.clone()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}

fn new_slice(svc: &Service, owner: &OwnerReference, ports: &[Port], endpoints: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.name_any())),
            namespace: svc.namespace(),
            labels: Some(labels(svc)),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        address_type: IPV4.into(),
        endpoints,
        ports: Some(slice_ports(ports)),
    }
}

/// The writes from `existing` (this controller's slices of `svc`) to `all` members, with
/// at most `max` endpoints a slice.
pub fn plan(svc: &Service, owner: &OwnerReference, all: &[Member], existing: &[EndpointSlice], max: usize) -> Plan {
    let want_labels = labels(svc);
    let mut desired: BTreeMap<Vec<Port>, Vec<Endpoint>> = BTreeMap::new();
    for m in all {
        desired.entry(m.ports.clone()).or_default().push(endpoint(m));
    }
    let mut plan = Plan::default();
    let mut sorted: Vec<&EndpointSlice> = existing.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    if desired.is_empty() {
        // One empty placeholder stays; any other slice goes.
        let keep = sorted.iter().position(|s| s.endpoints.is_empty() && s.address_type == IPV4);
        for (i, s) in sorted.iter().enumerate() {
            if Some(i) != keep {
                plan.delete.push((*s).clone());
            }
        }
        match keep.map(|i| sorted[i]) {
            Some(s) if s.labels() == &want_labels => {}
            Some(s) => {
                let mut s = s.clone();
                s.metadata.labels = Some(want_labels);
                plan.update.push(s);
            }
            None => plan.create.push(new_slice(svc, owner, &[], Vec::new())),
        }
        return plan;
    }

    let mut by_ports: BTreeMap<Vec<Port>, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in sorted {
        let key = ports_of(s);
        if s.address_type != IPV4 || !desired.contains_key(&key) {
            plan.delete.push(s.clone());
        } else {
            by_ports.entry(key).or_default().push(s);
        }
    }
    for (ports, wanted) in desired {
        let slices = by_ports.remove(&ports).unwrap_or_default();
        reconcile_group(svc, owner, &want_labels, &ports, wanted, &slices, max, &mut plan);
    }
    plan
}

/// One group of slices (those of one port combination) towards `wanted`.
#[allow(clippy::too_many_arguments)]
fn reconcile_group(
    svc: &Service,
    owner: &OwnerReference,
    want_labels: &BTreeMap<String, String>,
    ports: &[Port],
    wanted: Vec<Endpoint>,
    slices: &[&EndpointSlice],
    max: usize,
    plan: &mut Plan,
) {
    let mut left: BTreeMap<_, Endpoint> = BTreeMap::new();
    for e in &wanted {
        left.insert(identity(e), e.clone());
    }
    // First pass: keep what did not change, rewrite what did, drop what went.
    let mut changed: Vec<EndpointSlice> = Vec::new();
    let mut unchanged: Vec<EndpointSlice> = Vec::new();
    for s in slices {
        let mut out = Vec::with_capacity(s.endpoints.len());
        let mut dirty = s.labels() != want_labels;
        for e in &s.endpoints {
            match left.remove(&identity(e)) {
                Some(w) if &w == e => out.push(w),
                Some(w) => {
                    out.push(w);
                    dirty = true;
                }
                None => dirty = true,
            }
        }
        let mut s = (*s).clone();
        s.endpoints = out;
        s.metadata.labels = Some(want_labels.clone());
        if dirty { changed.push(s) } else { unchanged.push(s) }
    }
    // Endpoints still to place: first into slices written anyway, then into one unchanged
    // slice with room for them all, then into new slices.
    let mut rest: Vec<Endpoint> = left.into_values().collect();
    for s in &mut changed {
        let room = max.saturating_sub(s.endpoints.len());
        s.endpoints.extend(rest.drain(..room.min(rest.len())));
    }
    if !rest.is_empty()
        && let Some(i) = unchanged.iter().position(|s| s.endpoints.len() + rest.len() <= max)
    {
        let mut s = unchanged.remove(i);
        s.endpoints.append(&mut rest);
        changed.push(s);
    }
    while !rest.is_empty() {
        let chunk: Vec<Endpoint> = rest.drain(..max.min(rest.len())).collect();
        plan.create.push(new_slice(svc, owner, ports, chunk));
    }
    for s in changed {
        if s.endpoints.is_empty() { plan.delete.push(s) } else { plan.update.push(s) }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use serde_json::json;

    fn svc() -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "d", "uid": "s1", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        )
        .unwrap()
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: "web".into(),
            uid: "s1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn member(i: usize, ready: bool, port: i32) -> Member {
        Member {
            ip: format!("10.0.{}.{}", i / 200, i % 200 + 1),
            node: None,
            hostname: None,
            target: ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some("d".into()),
                name: Some(format!("p{i}")),
                ..Default::default()
            },
            ready,
            serving: ready,
            terminating: false,
            ports: vec![Port { name: None, port, protocol: "TCP".into(), app_protocol: None }],
        }
    }

    /// The slices after applying `plan` to `existing`, new ones named s0, s1, ….
    fn apply(existing: &[EndpointSlice], plan: Plan, next: &mut usize) -> Vec<EndpointSlice> {
        let gone =
            |s: &EndpointSlice| plan.delete.iter().chain(&plan.update).any(|d| d.metadata.name == s.metadata.name);
        let mut out: Vec<EndpointSlice> = existing.iter().filter(|s| !gone(s)).cloned().collect();
        out.extend(plan.update);
        for mut s in plan.create {
            s.metadata.name = Some(format!("s{next}"));
            *next += 1;
            out.push(s);
        }
        out
    }

    #[test]
    fn endpoints_fill_slices_of_a_hundred_and_a_changed_pod_touches_one_slice() {
        let mut members: Vec<Member> = (0..250).map(|i| member(i, true, 8080)).collect();
        let mut n = 0;
        let p = plan(&svc(), &owner(), &members, &[], MAX_PER_SLICE);
        assert_eq!(p.create.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(), [100, 100, 50]);
        let s0 = &p.create[0];
        assert_eq!(s0.labels()[SERVICE_NAME], "web");
        assert_eq!(s0.labels()[MANAGED_BY], CONTROLLER);
        assert_eq!(s0.labels()["tier"], "front");
        assert_eq!(s0.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(s0.metadata.owner_references.as_ref().unwrap()[0].uid, "s1");
        let slices = apply(&[], p, &mut n);
        assert!(plan(&svc(), &owner(), &members, &slices, MAX_PER_SLICE).is_empty());

        members[7].ready = false;
        let p = plan(&svc(), &owner(), &members, &slices, MAX_PER_SLICE);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        let ep = p.update[0].endpoints.iter().find(|e| e.addresses[0] == members[7].ip).unwrap();
        assert_eq!(ep.conditions.as_ref().unwrap().ready, Some(false));
        let slices = apply(&slices, p, &mut n);

        // A new pod goes into a slice with room, not a new slice.
        members.push(member(250, true, 8080));
        let p = plan(&svc(), &owner(), &members, &slices, MAX_PER_SLICE);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        let slices = apply(&slices, p, &mut n);
        assert_eq!(slices.iter().map(|s| s.endpoints.len()).sum::<usize>(), 251);
    }

    #[test]
    fn pods_serving_other_ports_get_slices_of_their_own_and_a_service_without_pods_keeps_a_placeholder() {
        let members = [member(0, true, 8080), member(1, true, 9090)];
        let mut n = 0;
        let p = plan(&svc(), &owner(), &members, &[], MAX_PER_SLICE);
        assert_eq!(p.create.len(), 2);
        let slices = apply(&[], p, &mut n);

        let p = plan(&svc(), &owner(), &[], &slices, MAX_PER_SLICE);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 2));
        assert!(p.create[0].endpoints.is_empty());
        let slices = apply(&slices, p, &mut n);
        assert!(plan(&svc(), &owner(), &[], &slices, MAX_PER_SLICE).is_empty());
        // Pods come back: the placeholder goes for a slice with them.
        let p = plan(&svc(), &owner(), &members[..1], &slices, MAX_PER_SLICE);
        assert_eq!((p.create.len(), p.delete.len()), (1, 1));
    }

    #[test]
    fn a_relabelled_service_rewrites_the_labels_of_its_slices() {
        let members = [member(0, true, 8080)];
        let mut n = 0;
        let slices = apply(&[], plan(&svc(), &owner(), &members, &[], MAX_PER_SLICE), &mut n);
        let mut s = svc();
        s.metadata.labels = Some([("tier".to_string(), "back".to_string())].into());
        let p = plan(&s, &owner(), &members, &slices, MAX_PER_SLICE);
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].labels()["tier"], "back");
    }
}
