//! What the daemon measures: each running container's cpu and memory from its cgroup
//! (read when asked, as cAdvisor's names have them), restarts and OOM kills from the
//! pods' statuses, pods by phase, and the daemon's own memory and descriptors. Served as
//! Prometheus text (`/metrics`) and as the rows of `nodectl top pods`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Daemon;
use crate::node::reconcile::State;
use crate::runtime::Runtime;

/// One running container's usage now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub cpu_ns: u64,
    /// Memory in use less the inactive page cache (the kubelet's working set).
    pub working_set: u64,
}

/// A container's cpu rate over a window, and its memory: a row of `top pods`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Top {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub millicores: u64,
    pub working_set: u64,
}

/// The usage of every running container, from its cgroup (blocking reads).
pub fn usage(daemon: &Daemon) -> Vec<Usage> {
    let rt = Runtime::new(&daemon.opts.root.join("runtime"));
    let mut out = Vec::new();
    for e in daemon.list() {
        let view = e.view();
        for c in view.statuses.iter().filter(|c| matches!(c.state, State::Running { .. })) {
            let Ok(s) = rt.stats(&format!("{}.{}", view.key, c.name)) else { continue };
            let inactive = s.memory_raw.get("total_inactive_file").or(s.memory_raw.get("inactive_file")).copied();
            out.push(Usage {
                namespace: e.namespace().to_string(),
                pod: e.name().to_string(),
                container: c.name.clone(),
                cpu_ns: s.cpu_usage_ns,
                working_set: s.memory_current.saturating_sub(inactive.unwrap_or(0)),
            });
        }
    }
    out
}

/// Rates between two readings `window` apart (containers in both).
pub fn top(before: &[Usage], after: &[Usage], window: Duration) -> Vec<Top> {
    let ns = window.as_nanos().max(1);
    after
        .iter()
        .filter_map(|a| {
            let b =
                before.iter().find(|b| (&b.namespace, &b.pod, &b.container) == (&a.namespace, &a.pod, &a.container))?;
            let used = u128::from(a.cpu_ns.saturating_sub(b.cpu_ns));
            Some(Top {
                namespace: a.namespace.clone(),
                pod: a.pod.clone(),
                container: a.container.clone(),
                millicores: u64::try_from(used * 1000 / ns).unwrap_or(u64::MAX),
                working_set: a.working_set,
            })
        })
        .collect()
}

/// Escapes a label value as the text format wants it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Our resident memory and open descriptors, from /proc.
fn own_process() -> (u64, u64) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    (rss, fds)
}

/// The Prometheus text of everything above.
pub fn render(daemon: &Daemon, usage: &[Usage]) -> String {
    let mut out = String::new();
    let started = Instant::now();
    let _ = writeln!(out, "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed by the container.");
    let _ = writeln!(out, "# TYPE container_cpu_usage_seconds_total counter");
    for u in usage {
        let _ = writeln!(
            out,
            "container_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\",container=\"{}\"}} {:.9}",
            label(&u.namespace),
            label(&u.pod),
            label(&u.container),
            u.cpu_ns as f64 / 1e9
        );
    }
    let _ = writeln!(out, "# HELP container_memory_working_set_bytes Current working set of the container.");
    let _ = writeln!(out, "# TYPE container_memory_working_set_bytes gauge");
    for u in usage {
        let _ = writeln!(
            out,
            "container_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\",container=\"{}\"}} {}",
            label(&u.namespace),
            label(&u.pod),
            label(&u.container),
            u.working_set
        );
    }
    let pods = daemon.list();
    let mut restarts = String::new();
    let mut ooms = String::new();
    let mut phases = std::collections::BTreeMap::<String, u64>::new();
    for e in &pods {
        let pod = e.pod_with_status();
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
        *phases.entry(phase).or_default() += 1;
        let view = e.view();
        for c in &view.statuses {
            let labels = format!(
                "namespace=\"{}\",pod=\"{}\",container=\"{}\"",
                label(e.namespace()),
                label(e.name()),
                label(&c.name)
            );
            let _ = writeln!(restarts, "kube_pod_container_status_restarts_total{{{labels}}} {}", c.restart_count);
            let _ = writeln!(ooms, "container_oom_events_total{{{labels}}} {}", c.oom_kills);
        }
    }
    let _ = writeln!(out, "# HELP kube_pod_container_status_restarts_total The number of container restarts.");
    let _ = writeln!(out, "# TYPE kube_pod_container_status_restarts_total counter");
    out.push_str(&restarts);
    let _ = writeln!(out, "# HELP container_oom_events_total Count of out-of-memory kills of the container.");
    let _ = writeln!(out, "# TYPE container_oom_events_total counter");
    out.push_str(&ooms);
    let _ = writeln!(out, "# HELP nodectl_pods The daemon's pods by phase.");
    let _ = writeln!(out, "# TYPE nodectl_pods gauge");
    for phase in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
        let _ = writeln!(out, "nodectl_pods{{phase=\"{phase}\"}} {}", phases.get(phase).copied().unwrap_or(0));
    }
    let (rss, fds) = own_process();
    let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory size in bytes.");
    let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
    let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    let _ = writeln!(out, "# HELP process_open_fds Number of open file descriptors.");
    let _ = writeln!(out, "# TYPE process_open_fds gauge");
    let _ = writeln!(out, "process_open_fds {fds}");
    tracing::trace!("metrics rendered in {:?}", started.elapsed());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(pod: &str, cpu_ns: u64) -> Usage {
        Usage { namespace: "default".into(), pod: pod.into(), container: "c".into(), cpu_ns, working_set: 5 << 20 }
    }

    #[test]
    fn top_gives_millicores_over_the_window_for_containers_seen_twice() {
        let before = [u("a", 1_000_000_000), u("gone", 0)];
        let after = [u("a", 1_250_000_000), u("new", 9)];
        let rows = top(&before, &after, Duration::from_millis(500));
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].pod.as_str(), rows[0].millicores), ("a", 500));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
