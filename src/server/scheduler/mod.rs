//! The scheduler's decisions: which node a pod goes to, or why it fits nowhere, as
//! kube-scheduler decides with its default plugins. Pure: it reads an in-memory
//! [`Snapshot`] of the nodes and their pods (no store round trip per filter), so one
//! decision costs microseconds; the loop that feeds it and writes bindings is [`run`].
//!
//! Filters (in kube's order): NodeUnschedulable, TaintToleration, NodeAffinity (and
//! nodeSelector), NodePorts, NodeResourcesFit, PodTopologySpread, InterPodAffinity.
//! Scores: TaintToleration (PreferNoSchedule), NodeAffinity (preferred terms),
//! NodeResourcesFit (least allocated), NodeResourcesBalancedAllocation, and spreading
//! (topologySpreadConstraints, or one owner's pods over nodes).

pub mod filters;
pub mod matching;
pub mod resources;
pub mod run;
pub mod scores;
pub mod snapshot;
pub mod spread;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use filters::{Candidate, PodAffinity, feasible};
pub use snapshot::Snapshot;
use spread::Spread;

/// Why a pod fits no node: each reason with the number of nodes it kept out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub nodes: usize,
    pub reasons: BTreeMap<String, usize>,
}

impl std::fmt::Display for Unschedulable {
    /// kube-scheduler's FitError: "0/3 nodes are available: 1 node(s) had untolerated
    /// taint {k: v}, 2 Insufficient memory." (each "count reason" sorted as a string, as
    /// kube sorts them).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.nodes == 0 {
            return write!(f, "no nodes available to schedule pods");
        }
        let mut each: Vec<String> = self.reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        each.sort();
        write!(f, "0/{} nodes are available: {}.", self.nodes, each.join(", "))
    }
}

/// How many feasible nodes to look for before choosing, as kube-scheduler's
/// percentageOfNodesToScore (adaptive: 50% less 1% per 125 nodes, at least 5%, and at
/// least 100 nodes): a 5,000-node cluster scores 500 nodes, not all of them.
fn feasible_to_find(nodes: usize) -> usize {
    if nodes < 100 {
        return nodes;
    }
    let percent = (50 - (nodes / 125) as i64).max(5) as usize;
    (nodes * percent / 100).max(100)
}

/// The scheduler's state between decisions: where the next search starts (kube rotates
/// it so that all nodes get their turn) and a counter that breaks ties.
#[derive(Debug, Default)]
pub struct Scheduler {
    next_start: usize,
    ties: usize,
}

impl Scheduler {
    /// The node `pod` should go to. The caller records the decision in the snapshot
    /// ([`Snapshot::place`]) before the next one.
    pub fn decide(&mut self, snapshot: &Snapshot, pod: &Pod) -> Result<String, Unschedulable> {
        let n = snapshot.nodes.len();
        let none = Unschedulable { nodes: n, reasons: BTreeMap::new() };
        let Some(spec) = pod.spec.as_ref() else { return Err(none) };
        let c = Candidate::of(pod, spec);
        let spread = Spread::of(snapshot, &c);
        let affinity = PodAffinity::of(snapshot, &c);
        let want = feasible_to_find(n);
        let mut found: Vec<usize> = Vec::with_capacity(want.min(n));
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut examined = 0;
        for k in 0..n {
            let i = (self.next_start + k) % n;
            examined += 1;
            match feasible(&snapshot.nodes[i], &c, &spread, &affinity) {
                Ok(()) => {
                    found.push(i);
                    if found.len() >= want {
                        break;
                    }
                }
                Err(why) => {
                    for r in why {
                        *reasons.entry(r).or_default() += 1;
                    }
                }
            }
        }
        if n > 0 {
            self.next_start = (self.next_start + examined) % n;
        }
        if found.is_empty() {
            return Err(Unschedulable { nodes: n, reasons });
        }
        let nodes = |f: &dyn Fn(&snapshot::NodeInfo) -> i64| found.iter().map(|&i| f(&snapshot.nodes[i])).collect();
        let mut taints: Vec<i64> = nodes(&|node| scores::intolerable(node, &c));
        scores::normalize(&mut taints, true);
        let mut preferred: Vec<i64> = nodes(&|node| scores::preferred_affinity(node, &c));
        scores::normalize(&mut preferred, false);
        let mut crowding: Vec<i64> = found.iter().map(|&i| spread.crowding(snapshot, i)).collect();
        scores::normalize(&mut crowding, true);
        let total: Vec<i64> = found
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let node = &snapshot.nodes[i];
                scores::TAINT_TOLERATION * taints[k]
                    + scores::NODE_AFFINITY * preferred[k]
                    + scores::SPREAD * crowding[k]
                    + scores::LEAST_ALLOCATED * scores::least_allocated(node, &c)
                    + scores::BALANCED * scores::balanced(node, &c)
            })
            .collect();
        let best = total.iter().copied().max().unwrap_or(0);
        let tied: Vec<usize> = found.iter().zip(&total).filter(|(_, t)| **t == best).map(|(&i, _)| i).collect();
        // kube picks among equal scores at random; a rotating pick spreads as well and is
        // reproducible.
        self.ties = self.ties.wrapping_add(1);
        let pick = tied[self.ties % tied.len()];
        Ok(snapshot.nodes[pick].name.clone())
    }
}

#[cfg(test)]
mod tests;
