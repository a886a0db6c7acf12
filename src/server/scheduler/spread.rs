//! PodTopologySpread: a pod's topologySpreadConstraints (DoNotSchedule as a filter,
//! ScheduleAnyway as a score), and, for a pod without constraints, the spreading of one
//! owner's pods over nodes that kube-scheduler's system defaults give (a Deployment's
//! replicas go to different nodes while they can).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;

use super::filters::Candidate;
use super::matching::selects;
use super::snapshot::{NodeInfo, Snapshot};

/// One constraint with the count of the pods it selects in each domain.
struct Counted<'a> {
    constraint: &'a TopologySpreadConstraint,
    counts: HashMap<String, i64>,
    /// The smallest count over the domains (0 if a domain holds none).
    min: i64,
}

/// What spreading needs of the whole cluster, worked out once per pod.
pub struct Spread<'a> {
    constraints: Vec<Counted<'a>>,
    owner: Option<String>,
}

impl<'a> Spread<'a> {
    pub fn of(snapshot: &Snapshot, c: &Candidate<'a>) -> Spread<'a> {
        let constraints = c
            .spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .map(|constraint| {
                let mut counts: HashMap<String, i64> = HashMap::new();
                for node in &snapshot.nodes {
                    let Some(v) = node.labels.get(&constraint.topology_key) else { continue };
                    let n = node
                        .pods
                        .values()
                        .filter(|p| {
                            p.namespace == c.namespace
                                && constraint.label_selector.as_ref().is_some_and(|s| selects(s, &p.labels))
                        })
                        .count() as i64;
                    *counts.entry(v.clone()).or_default() += n;
                }
                let min = counts.values().copied().min().unwrap_or(0);
                Counted { constraint, counts, min }
            })
            .collect();
        Spread { constraints, owner: c.owner.clone() }
    }

    /// DoNotSchedule constraints: placing the pod here must keep the skew within maxSkew.
    pub fn filter(&self, node: &NodeInfo) -> Option<String> {
        let broken = self.constraints.iter().filter(|k| k.constraint.when_unsatisfiable == "DoNotSchedule").any(|k| {
            match node.labels.get(&k.constraint.topology_key) {
                // A node without the key is in no domain: kube refuses it for the constraint.
                None => true,
                Some(v) => k.counts.get(v).copied().unwrap_or(0) + 1 - k.min > i64::from(k.constraint.max_skew),
            }
        });
        broken.then(|| "node(s) didn't match pod topology spread constraints".into())
    }

    /// How crowded the node is for this pod: the selected pods in its domains (ScheduleAnyway
    /// constraints), or, without constraints, its owner's pods on it. Lower is better.
    pub fn crowding(&self, snapshot: &Snapshot, i: usize) -> i64 {
        let soft: Vec<&Counted<'_>> =
            self.constraints.iter().filter(|k| k.constraint.when_unsatisfiable == "ScheduleAnyway").collect();
        if self.constraints.is_empty() {
            return self.owner.as_deref().map_or(0, |o| i64::from(snapshot.owned_on(o, i)));
        }
        let node = &snapshot.nodes[i];
        soft.iter()
            .map(|k| node.labels.get(&k.constraint.topology_key).and_then(|v| k.counts.get(v)).copied().unwrap_or(0))
            .sum()
    }
}
