//! A pod's sysctls (`spec.securityContext.sysctls`), admitted as the kubelet admits them:
//! the safe set always, others only where the node allows them
//! (`--allowed-unsafe-sysctls`, `allowedUnsafeSysctls:`), and only sysctls of a namespace
//! the pod has of its own (net.* not with hostNetwork, the IPC ones not with hostIPC). The
//! runtime writes them inside the container's namespaces; one that is not namespaced would
//! change the host and is never allowed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::PlanError;

/// The kubelet's safe sysctls (1.32): namespaced, and unable to harm other pods.
pub const SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Namespace {
    Net,
    Ipc,
}

/// The namespace a sysctl (or a `prefix*` pattern) belongs to, as the kubelet knows them.
fn namespace_of(name: &str) -> Option<Namespace> {
    let name = name.trim_end_matches('*');
    if name.starts_with("net.") {
        Some(Namespace::Net)
    } else if name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name == "kernel.sem"
        || name.starts_with("fs.mqueue.")
    {
        Some(Namespace::Ipc)
    } else {
        None
    }
}

/// The kubelet takes `net/ipv4/...` for `net.ipv4....`.
fn dotted(name: &str) -> String {
    if name.contains('/') { name.replace('/', ".") } else { name.to_string() }
}

/// Checks the node's allowed unsafe sysctls: names or `prefix*` patterns of namespaced
/// sysctls (the kubelet refuses to start with others).
pub fn check_allowed(patterns: &[String]) -> Result<(), String> {
    let bad: Vec<&str> = patterns.iter().map(String::as_str).filter(|p| namespace_of(&dotted(p)).is_none()).collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(format!(
        "allowed unsafe sysctls {bad:?}: only sysctls of a pod's own network or IPC namespace (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) can be allowed"
    ))
}

fn allowlisted(name: &str, unsafe_patterns: &[String]) -> bool {
    SAFE.contains(&name)
        || unsafe_patterns.iter().map(|p| dotted(p)).any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        })
}

/// The spec's `linux.sysctl` for the pod, or the kubelet's refusal naming the sysctl.
pub fn linux_sysctls(pod: &Pod, unsafe_patterns: &[String]) -> Result<BTreeMap<String, String>, PlanError> {
    let Some(spec) = pod.spec.as_ref() else { return Ok(BTreeMap::new()) };
    let mut out = BTreeMap::new();
    for (i, s) in spec.security_context.iter().flat_map(|sc| sc.sysctls.iter().flatten()).enumerate() {
        let field = format!("spec.securityContext.sysctls[{i}].name");
        let name = dotted(&s.name);
        let forbidden = |why: String| PlanError::invalid(field.clone(), format!("forbidden sysctl: {why}"));
        if !allowlisted(&name, unsafe_patterns) {
            return Err(forbidden(format!("\"{name}\" not allowlisted")));
        }
        match namespace_of(&name) {
            Some(Namespace::Net) if spec.host_network == Some(true) => {
                return Err(forbidden(format!("\"{name}\" not allowed with host net enabled")));
            }
            Some(Namespace::Ipc) if spec.host_ipc == Some(true) => {
                return Err(forbidden(format!("\"{name}\" not allowed with host ipc enabled")));
            }
            Some(_) => {}
            None => return Err(forbidden(format!("\"{name}\" is not namespaced"))),
        }
        out.insert(name, s.value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, Sysctl};

    use super::*;

    fn pod(sysctls: &[(&str, &str)], host_network: bool) -> Pod {
        Pod {
            spec: Some(PodSpec {
                host_network: Some(host_network),
                security_context: Some(PodSecurityContext {
                    sysctls: Some(
                        sysctls.iter().map(|(n, v)| Sysctl { name: n.to_string(), value: v.to_string() }).collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn safe_sysctls_pass_and_unsafe_ones_need_the_node() {
        let p = pod(&[("net.ipv4.ip_unprivileged_port_start", "0"), ("net/ipv4/tcp_syncookies", "1")], false);
        let got = linux_sysctls(&p, &[]).unwrap();
        assert_eq!(got.get("net.ipv4.tcp_syncookies").map(String::as_str), Some("1"));
        let p = pod(&[("kernel.msgmax", "65536")], false);
        let e = linux_sysctls(&p, &[]).unwrap_err().to_string();
        assert_eq!(e, "spec.securityContext.sysctls[0].name: forbidden sysctl: \"kernel.msgmax\" not allowlisted");
        assert!(linux_sysctls(&p, &["kernel.msg*".into()]).is_ok());
        assert!(linux_sysctls(&p, &["kernel.msgmax".into()]).is_ok());
        assert!(linux_sysctls(&p, &["kernel.msgmnb".into()]).is_err());
    }

    #[test]
    fn a_host_namespace_or_a_host_wide_sysctl_is_refused() {
        let p = pod(&[("net.ipv4.tcp_syncookies", "1")], true);
        let e = linux_sysctls(&p, &[]).unwrap_err().to_string();
        assert!(e.ends_with("\"net.ipv4.tcp_syncookies\" not allowed with host net enabled"), "{e}");
        assert!(check_allowed(&["kernel.msg*".into(), "net.core.somaxconn".into()]).is_ok());
        let e = check_allowed(&["kernel.printk".into(), "vm.*".into()]).unwrap_err();
        assert!(e.contains("[\"kernel.printk\", \"vm.*\"]"), "{e}");
    }
}
