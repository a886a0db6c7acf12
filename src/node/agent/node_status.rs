//! The Node a joined daemon reports, as the kubelet reports it: capacity and allocatable
//! (host values less `--system-reserved`), addresses, nodeInfo, conditions and the
//! well-known labels. The host is read once into [`Host`]; the rest is pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::model::quantity;

/// The kubelet version a joined node reports (the API we speak is 1.32's).
pub const KUBELET_VERSION: &str = "v1.32.0";

/// What `--system-reserved cpu=…,memory=…,pods=…` keeps back from pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReservedError {
    #[error("--system-reserved: {0:?} is not NAME=QUANTITY")]
    Syntax(String),
    #[error("--system-reserved: {name}: {message}")]
    Quantity { name: String, message: String },
    #[error("--system-reserved: {0:?} is not a resource this node reserves (cpu, memory)")]
    Unknown(String),
}

/// Reads the kubelet's `--system-reserved` form: `cpu=500m,memory=1Gi` (either may be left
/// out; empty reserves nothing).
pub fn parse_reserved(text: &str) -> Result<Reserved, ReservedError> {
    let mut r = Reserved::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').ok_or_else(|| ReservedError::Syntax(part.to_string()))?;
        let bad = |message: String| ReservedError::Quantity { name: name.to_string(), message };
        match name.trim() {
            "cpu" => r.cpu_millis = quantity::cpu_millis(value.trim()).map_err(bad)?,
            "memory" => r.memory_bytes = quantity::memory_bytes(value.trim()).map_err(bad)?,
            other => return Err(ReservedError::Unknown(other.to_string())),
        }
        if r.cpu_millis < 0 || r.memory_bytes < 0 {
            return Err(ReservedError::Quantity { name: name.to_string(), message: "must not be negative".into() });
        }
    }
    Ok(r)
}

/// What the node is made of and runs, read from the host once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Host {
    pub cpus: i64,
    pub memory_bytes: i64,
    pub hostname: String,
    pub internal_ip: Option<IpAddr>,
    pub kernel_version: String,
    pub os_image: String,
    /// Go's name for it, as Kubernetes writes it: amd64, arm64.
    pub architecture: String,
    pub machine_id: String,
    pub boot_id: String,
    pub system_uuid: String,
    /// The port the node serves the API server on (0: none, as fake nodes).
    pub daemon_port: u16,
}

impl Host {
    /// The host as it is now; `internal_ip` is left for the caller (it depends on the server).
    pub fn read() -> Host {
        let trimmed = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default();
        let cpus = std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_total(&m)).unwrap_or(0);
        let uname = nix::sys::utsname::uname().ok();
        let hostname = uname.as_ref().map(|u| u.nodename().to_string_lossy().into_owned()).unwrap_or_default();
        Host {
            cpus,
            memory_bytes,
            hostname,
            internal_ip: None,
            kernel_version: uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
            os_image: std::fs::read_to_string("/etc/os-release").ok().and_then(|t| pretty_name(&t)).unwrap_or_default(),
            architecture: go_arch(std::env::consts::ARCH).to_string(),
            machine_id: trimmed("/etc/machine-id"),
            boot_id: trimmed("/proc/sys/kernel/random/boot_id"),
            system_uuid: trimmed("/sys/class/dmi/id/product_uuid"),
            daemon_port: 0,
        }
    }
}

/// MemTotal of /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// PRETTY_NAME of /etc/os-release, unquoted.
fn pretty_name(os_release: &str) -> Option<String> {
    let value = os_release.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(value.trim().trim_matches('"').to_string())
}

fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn cpu_quantity(millis: i64) -> Quantity {
    Quantity(if millis % 1000 == 0 { (millis / 1000).to_string() } else { format!("{millis}m") })
}

fn memory_quantity(bytes: i64) -> Quantity {
    // The kubelet reports memory in Ki (MemTotal is in kB already).
    if bytes % 1024 == 0 { Quantity(format!("{}Ki", bytes / 1024)) } else { Quantity(bytes.to_string()) }
}

/// Capacity and allocatable: allocatable is capacity less what is reserved, never below 0.
pub fn resources(
    host: &Host,
    reserved: Reserved,
    max_pods: u32,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let cpu = host.cpus * 1000;
    let pods = Quantity(max_pods.to_string());
    let capacity = BTreeMap::from([
        ("cpu".to_string(), cpu_quantity(cpu)),
        ("memory".to_string(), memory_quantity(host.memory_bytes)),
        ("pods".to_string(), pods.clone()),
    ]);
    let allocatable = BTreeMap::from([
        ("cpu".to_string(), cpu_quantity((cpu - reserved.cpu_millis).max(0))),
        ("memory".to_string(), memory_quantity((host.memory_bytes - reserved.memory_bytes).max(0))),
        ("pods".to_string(), pods),
    ]);
    (capacity, allocatable)
}

/// The kubelet's four conditions for a healthy node, with its reasons and messages.
/// `since` is when each took its present value (lastTransitionTime); `now` the heartbeat.
pub fn conditions(since: &Time, now: &Time) -> Vec<NodeCondition> {
    let c = |kind: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(since.clone()),
    };
    vec![
        c("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        c("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        c("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        c("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
}

/// The node's well-known labels.
pub fn labels(name: &str, host: &Host) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), host.architecture.clone()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), host.architecture.clone()),
    ])
}

/// The Node's status; `since` and `now` as for [`conditions`].
pub fn status(host: &Host, reserved: Reserved, max_pods: u32, since: &Time, now: &Time) -> NodeStatus {
    let (capacity, allocatable) = resources(host, reserved, max_pods);
    let mut addresses = Vec::new();
    if let Some(ip) = host.internal_ip {
        addresses.push(NodeAddress { type_: "InternalIP".into(), address: ip.to_string() });
    }
    addresses.push(NodeAddress { type_: "Hostname".into(), address: host.hostname.clone() });
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        addresses: Some(addresses),
        conditions: Some(conditions(since, now)),
        daemon_endpoints: (host.daemon_port != 0).then(|| NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(host.daemon_port) }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: host.architecture.clone(),
            boot_id: host.boot_id.clone(),
            container_runtime_version: format!("nodectl://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: host.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_string(),
            machine_id: host.machine_id.clone(),
            operating_system: "linux".to_string(),
            os_image: host.os_image.clone(),
            system_uuid: host.system_uuid.clone(),
        }),
        ..Default::default()
    }
}

/// The Node as created: name, labels and status.
pub fn node(name: &str, host: &Host, status: NodeStatus) -> Node {
    Node {
        metadata: ObjectMeta { name: Some(name.to_string()), labels: Some(labels(name, host)), ..Default::default() },
        spec: None,
        status: Some(status),
    }
}

/// The status with its heartbeat times taken out: two reports that differ only in when they
/// were made are the same report.
pub fn without_heartbeats(status: &NodeStatus) -> NodeStatus {
    let mut s = status.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = None;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host { cpus: 2, memory_bytes: 4 * 1024 * 1024 * 1024, architecture: "amd64".into(), ..Default::default() }
    }

    #[test]
    fn system_reserved_is_read_as_the_kubelet_writes_it() {
        assert_eq!(parse_reserved("cpu=500m,memory=1Gi"), Ok(Reserved { cpu_millis: 500, memory_bytes: 1 << 30 }));
        assert_eq!(parse_reserved(""), Ok(Reserved::default()));
        assert_eq!(parse_reserved("memory=100Mi"), Ok(Reserved { cpu_millis: 0, memory_bytes: 100 << 20 }));
        assert!(matches!(parse_reserved("cpu"), Err(ReservedError::Syntax(_))));
        assert!(matches!(parse_reserved("gpu=1"), Err(ReservedError::Unknown(_))));
        assert!(matches!(parse_reserved("cpu=lots"), Err(ReservedError::Quantity { .. })));
        assert!(matches!(parse_reserved("cpu=-1"), Err(ReservedError::Quantity { .. })));
    }

    #[test]
    fn allocatable_is_capacity_less_what_is_reserved() {
        let r = Reserved { cpu_millis: 250, memory_bytes: 512 << 20 };
        let (cap, alloc) = resources(&host(), r, 110);
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4194304Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(alloc["cpu"].0, "1750m");
        assert_eq!(alloc["memory"].0, "3670016Ki");
        assert_eq!(alloc["pods"].0, "110");
    }

    #[test]
    fn a_reservation_larger_than_the_host_leaves_nothing_not_less() {
        let r = Reserved { cpu_millis: 5000, memory_bytes: 1 << 40 };
        let (_, alloc) = resources(&host(), r, 10);
        assert_eq!((alloc["cpu"].0.as_str(), alloc["memory"].0.as_str()), ("0", "0Ki"));
    }

    #[test]
    fn the_host_files_are_read_as_the_kubelet_reads_them() {
        assert_eq!(mem_total("MemTotal:        8041520 kB\nMemFree: 1 kB\n"), Some(8041520 * 1024));
        assert_eq!(
            pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").unwrap(),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(go_arch("x86_64"), "amd64");
    }

    #[test]
    fn a_report_differs_from_the_last_only_by_more_than_its_heartbeat() {
        let t = |s: i64| Time(chrono::DateTime::from_timestamp(s, 0).unwrap());
        let a = status(&host(), Reserved::default(), 110, &t(0), &t(10));
        let b = status(&host(), Reserved::default(), 110, &t(0), &t(20));
        assert_ne!(a, b);
        assert_eq!(without_heartbeats(&a), without_heartbeats(&b));
        let c = status(&host(), Reserved::default(), 100, &t(0), &t(20));
        assert_ne!(without_heartbeats(&a), without_heartbeats(&c));
    }
}
