//! Whether a pod may go on a node, in kube-scheduler's filter order; a node that fails
//! says why in kube-scheduler's words (they make up the Unschedulable message).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, PodSpec, Toleration};

use super::matching::{Labels, selects, term_matches, tolerates};
use super::resources::Resources;
use super::snapshot::{HostPort, NodeInfo, Snapshot, host_ports};
use super::spread::Spread;

/// The pod being scheduled, with what the filters and scores read of it worked out once.
pub struct Candidate<'a> {
    pub pod: &'a Pod,
    pub spec: &'a PodSpec,
    pub namespace: String,
    pub labels: Labels,
    pub owner: Option<String>,
    pub requests: Resources,
    pub host_ports: Vec<HostPort>,
    pub tolerations: &'a [Toleration],
}

impl<'a> Candidate<'a> {
    pub fn of(pod: &'a Pod, spec: &'a PodSpec) -> Candidate<'a> {
        Candidate {
            pod,
            spec,
            namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            owner: pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            requests: Resources::requests_of(spec),
            host_ports: host_ports(spec),
            tolerations: spec.tolerations.as_deref().unwrap_or_default(),
        }
    }

    fn anti_affinity(&self) -> &[PodAffinityTerm] {
        self.spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref())
            .unwrap_or_default()
    }

    fn affinity(&self) -> &[PodAffinityTerm] {
        self.spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref())
            .unwrap_or_default()
    }
}

/// Runs the filters on one node: Ok, or the reasons of the first filter that failed.
pub fn feasible(
    node: &NodeInfo,
    c: &Candidate<'_>,
    spread: &Spread<'_>,
    affinity: &PodAffinity,
) -> Result<(), Vec<String>> {
    let one = |reason: Option<String>| reason.map_or(Ok(()), |r| Err(vec![r]));
    one(unschedulable(node, c))?;
    one(taints(node, c))?;
    one(node_affinity(node, c))?;
    one(ports(node, c))?;
    fit(node, c)?;
    one(spread.filter(node))?;
    one(inter_pod_affinity(node, affinity))
}

/// NodeUnschedulable: a cordoned node, unless the pod tolerates its taint.
fn unschedulable(node: &NodeInfo, c: &Candidate<'_>) -> Option<String> {
    let taint = k8s_openapi::api::core::v1::Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    (node.unschedulable && !c.tolerations.iter().any(|t| tolerates(t, &taint)))
        .then(|| "node(s) were unschedulable".into())
}

/// TaintToleration: every NoSchedule and NoExecute taint must be tolerated.
fn taints(node: &NodeInfo, c: &Candidate<'_>) -> Option<String> {
    node.taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !c.tolerations.iter().any(|tol| tolerates(tol, t)))
        .map(|t| format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or_default()))
}

/// NodeAffinity: nodeSelector and the required node affinity (any of its terms).
fn node_affinity(node: &NodeInfo, c: &Candidate<'_>) -> Option<String> {
    let selector_ok = c.spec.node_selector.iter().flatten().all(|(k, v)| node.labels.get(k) == Some(v));
    let terms = c
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|r| r.node_selector_terms.as_slice());
    let affinity_ok = terms.is_none_or(|terms| terms.iter().any(|t| term_matches(t, &node.name, &node.labels)));
    (!(selector_ok && affinity_ok)).then(|| "node(s) didn't match Pod's node affinity/selector".into())
}

/// NodePorts: a host port (protocol, port) is free unless held on the same or every address.
fn ports(node: &NodeInfo, c: &Candidate<'_>) -> Option<String> {
    let clash = |(proto, ip, port): &HostPort| {
        node.pods.values().flat_map(|p| &p.host_ports).any(|(p2, ip2, port2)| {
            p2 == proto
                && port2 == port
                && (ip.is_empty() || ip2.is_empty() || ip == "0.0.0.0" || ip2 == "0.0.0.0" || ip == ip2)
        })
    };
    c.host_ports.iter().any(clash).then(|| "node(s) didn't have free ports for the requested pod ports".into())
}

/// NodeResourcesFit: every resource the pod asks for fits what is left; all shortages named.
fn fit(node: &NodeInfo, c: &Candidate<'_>) -> Result<(), Vec<String>> {
    let (have, used, want) = (&node.allocatable, &node.requested, &c.requests);
    let mut out = Vec::new();
    if used.pods + 1 > have.pods {
        out.push("Too many pods".to_string());
    }
    let short = |want: i64, used: i64, have: i64| want > 0 && want > have - used;
    if short(want.milli_cpu, used.milli_cpu, have.milli_cpu) {
        out.push("Insufficient cpu".into());
    }
    if short(want.memory, used.memory, have.memory) {
        out.push("Insufficient memory".into());
    }
    if short(want.ephemeral_storage, used.ephemeral_storage, have.ephemeral_storage) {
        out.push("Insufficient ephemeral-storage".into());
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

/// Whether a term selects a pod of `namespace` with `labels`, the term being `owner_ns`'s.
fn term_selects(term: &PodAffinityTerm, owner_ns: &str, namespace: &str, labels: &Labels) -> bool {
    let in_namespace = match (&term.namespaces, &term.namespace_selector) {
        (Some(list), _) if !list.is_empty() => list.iter().any(|n| n == namespace),
        // A namespace selector would need the namespaces' labels: only the empty one (every
        // namespace), the common case, is understood; any other selects none.
        (_, Some(sel)) => sel.match_labels.as_ref().is_none_or(|m| m.is_empty()) && sel.match_expressions.is_none(),
        _ => namespace == owner_ns,
    };
    in_namespace && term.label_selector.as_ref().is_some_and(|s| selects(s, labels))
}

/// The topology domains (values of a key) that hold a pod a term selects.
type Domains = (String, HashSet<String>);

/// What inter-pod affinity needs of the whole cluster, worked out once per pod rather than
/// once per node: the domains its anti-affinity keeps it out of, those its affinity wants
/// it in, and those the placed pods' anti-affinity keeps it out of.
#[derive(Default)]
pub struct PodAffinity {
    anti: Vec<Domains>,
    /// Per required affinity term: its domains, and whether the pod may go anywhere the
    /// key exists (no selected pod exists yet and the pod selects itself: the first of a group).
    affinity: Vec<(Domains, bool)>,
    refused: Vec<(String, String)>,
}

impl PodAffinity {
    pub fn of(snapshot: &Snapshot, c: &Candidate<'_>) -> PodAffinity {
        let domains = |term: &PodAffinityTerm| -> Domains {
            let mut values = HashSet::new();
            for node in &snapshot.nodes {
                if let Some(v) = node.labels.get(&term.topology_key)
                    && !values.contains(v)
                    && node.pods.values().any(|p| term_selects(term, &c.namespace, &p.namespace, &p.labels))
                {
                    values.insert(v.clone());
                }
            }
            (term.topology_key.clone(), values)
        };
        let mut out = PodAffinity { anti: c.anti_affinity().iter().map(domains).collect(), ..Default::default() };
        for term in c.affinity() {
            let d = domains(term);
            let first = d.1.is_empty()
                && !snapshot
                    .nodes
                    .iter()
                    .any(|n| n.pods.values().any(|p| term_selects(term, &c.namespace, &p.namespace, &p.labels)))
                && term_selects(term, &c.namespace, &c.namespace, &c.labels);
            out.affinity.push((d, first));
        }
        for (uid, node) in snapshot.anti_affine() {
            let Some(p) = snapshot.nodes[node].pods.get(uid) else { continue };
            for term in &p.anti_affinity {
                if term_selects(term, &p.namespace, &c.namespace, &c.labels)
                    && let Some(v) = snapshot.nodes[node].labels.get(&term.topology_key)
                {
                    out.refused.push((term.topology_key.clone(), v.clone()));
                }
            }
        }
        out
    }
}

/// InterPodAffinity: the pod's required anti-affinity (no selected pod in the node's
/// domain), its required affinity (some selected pod there, or the first of its group),
/// and the anti-affinity of the pods already placed (symmetry).
fn inter_pod_affinity(node: &NodeInfo, a: &PodAffinity) -> Option<String> {
    let value = |key: &str| node.labels.get(key);
    if a.anti.iter().any(|(key, values)| value(key).is_some_and(|v| values.contains(v))) {
        return Some("node(s) didn't match pod anti-affinity rules".into());
    }
    let wanted = a.affinity.iter().all(|((key, values), first)| match value(key) {
        Some(v) => values.contains(v) || *first,
        None => false,
    });
    if !wanted {
        return Some("node(s) didn't match pod affinity rules".into());
    }
    a.refused
        .iter()
        .any(|(key, v)| value(key) == Some(v))
        .then(|| "node(s) didn't satisfy existing pods anti-affinity rules".into())
}
