//! How good a feasible node is for a pod, as kube-scheduler's default score plugins rank
//! them: each gives 0-100, summed with kube's weights.

use k8s_openapi::api::core::v1::Taint;

use super::filters::Candidate;
use super::matching::{term_matches, tolerates};
use super::snapshot::NodeInfo;

/// kube-scheduler's default weights.
pub const TAINT_TOLERATION: i64 = 3;
pub const NODE_AFFINITY: i64 = 2;
pub const SPREAD: i64 = 2;
pub const LEAST_ALLOCATED: i64 = 1;
pub const BALANCED: i64 = 1;

fn fraction(used: i64, want: i64, have: i64) -> f64 {
    if have <= 0 { 1.0 } else { ((used + want) as f64 / have as f64).min(1.0) }
}

/// NodeResourcesFit (LeastAllocated): the share of cpu and memory left after the pod, 0-100.
pub fn least_allocated(node: &NodeInfo, c: &Candidate<'_>) -> i64 {
    let (have, used, want) = (&node.allocatable, &node.requested, &c.requests);
    let cpu = 1.0 - fraction(used.milli_cpu, want.milli_cpu, have.milli_cpu);
    let mem = 1.0 - fraction(used.memory, want.memory, have.memory);
    ((cpu + mem) / 2.0 * 100.0) as i64
}

/// NodeResourcesBalancedAllocation: cpu and memory used in the same proportion, 0-100.
pub fn balanced(node: &NodeInfo, c: &Candidate<'_>) -> i64 {
    let (have, used, want) = (&node.allocatable, &node.requested, &c.requests);
    let cpu = fraction(used.milli_cpu, want.milli_cpu, have.milli_cpu);
    let mem = fraction(used.memory, want.memory, have.memory);
    // The standard deviation of two fractions is half their difference.
    ((1.0 - (cpu - mem).abs() / 2.0) * 100.0) as i64
}

/// TaintToleration: PreferNoSchedule taints the pod does not tolerate (fewer is better).
pub fn intolerable(node: &NodeInfo, c: &Candidate<'_>) -> i64 {
    let bad = |t: &&Taint| t.effect == "PreferNoSchedule" && !c.tolerations.iter().any(|tol| tolerates(tol, t));
    node.taints.iter().filter(bad).count() as i64
}

/// NodeAffinity: the weights of the preferred node affinity terms the node matches.
pub fn preferred_affinity(node: &NodeInfo, c: &Candidate<'_>) -> i64 {
    c.spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| term_matches(&p.preference, &node.name, &node.labels))
        .map(|p| i64::from(p.weight))
        .sum()
}

/// Scales raw values to 0-100 over the candidates, highest best (`reverse`: lowest best),
/// as kube's DefaultNormalizeScore.
pub fn normalize(raw: &mut [i64], reverse: bool) {
    let max = raw.iter().copied().max().unwrap_or(0);
    for r in raw.iter_mut() {
        *r = match (max, reverse) {
            (0, true) => 100,
            (0, false) => 0,
            (m, false) => *r * 100 / m,
            (m, true) => 100 - *r * 100 / m,
        };
    }
}
