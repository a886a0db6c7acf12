//! Which pods back a Service and how, as kube's endpoint helpers decide it: the pods its
//! selector picks that have an address and have not finished, whether each is ready,
//! serving or terminating, and the port each service port reaches on it (a named
//! `targetPort` looks the name up among the pod's container ports).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{ObjectReference, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::model::labels::{self, Labels};
use crate::server::controllers::pods::{self, CachedPod};

/// A pod as one endpoint of a Service.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub ip: String,
    pub node: Option<String>,
    /// The pod's hostname, when its subdomain is the Service's name (DNS for headless Services).
    pub hostname: Option<String>,
    pub target: ObjectReference,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// The service ports this pod serves, each with its number on the pod; sorted.
    pub ports: Vec<Port>,
}

/// A service port as it reaches one pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub name: Option<String>,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

/// Whether this Service's endpoints are this controller's to keep: it has a selector (one
/// without is left to whoever writes its endpoints, as in Kubernetes) and is not an
/// ExternalName.
pub fn is_managed(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| s.selector.is_some() && s.type_.as_deref() != Some("ExternalName"))
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

pub fn publishes_not_ready(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false)
}

/// Whether the Service's selector picks the pod (same namespace, every selector label).
pub fn selects(svc: &Service, pod: &CachedPod) -> bool {
    let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else { return false };
    let have: Labels = pod.metadata.labels.clone().unwrap_or_default();
    pod.namespace() == svc.namespace() && labels::has_all(selector, &have)
}

/// kube's ShouldPodBeInEndpoints: not finished, has an address, and (unless terminating
/// pods are wanted) not being deleted.
fn should_be_in(pod: &CachedPod, include_terminating: bool) -> bool {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    if phase == Some("Succeeded") || phase == Some("Failed") {
        return false;
    }
    if ipv4(pod).is_none() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// The pod's IPv4 address (nodectl's pod networks are IPv4).
fn ipv4(pod: &CachedPod) -> Option<String> {
    let s = pod.status.as_ref()?;
    let listed = s.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    s.pod_ip.as_deref().into_iter().chain(listed).find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()).map(String::from)
}

/// The pods of `svc` among `pods` as members; `include_terminating` as the caller's kind
/// wants it (EndpointSlices list terminating pods, Endpoints only when not-ready addresses
/// are published).
pub fn members(svc: &Service, pods: &[&CachedPod], include_terminating: bool) -> Vec<Member> {
    let mut out: Vec<Member> = pods
        .iter()
        .filter(|p| selects(svc, p) && should_be_in(p, include_terminating))
        .filter_map(|p| member(svc, p))
        .collect();
    out.sort_by(|a, b| (&a.ip, &a.target.name).cmp(&(&b.ip, &b.target.name)));
    out
}

fn member(svc: &Service, pod: &CachedPod) -> Option<Member> {
    let spec = pod.spec.as_ref();
    let serving = pods::is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let subdomain = spec.and_then(|s| s.subdomain.as_deref());
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .filter(|_| subdomain.is_some() && subdomain == svc.metadata.name.as_deref());
    let mut ports: Vec<Port> =
        svc.spec.as_ref().and_then(|s| s.ports.as_ref()).into_iter().flatten().filter_map(|sp| port(sp, pod)).collect();
    ports.sort();
    ports.dedup();
    Some(Member {
        ip: ipv4(pod)?,
        node: spec.and_then(|s| s.node_name.clone()),
        hostname,
        target: ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.namespace(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        },
        // A terminating pod is never ready unless not-ready addresses are published.
        ready: publishes_not_ready(svc) || (serving && !terminating),
        serving,
        terminating,
        ports,
    })
}

/// kube's FindPort: a numeric targetPort is the port; a named one is the container port of
/// that name and protocol (app containers, then sidecars). None when the name is unknown.
fn port(sp: &ServicePort, pod: &CachedPod) -> Option<Port> {
    let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
    let number = match &sp.target_port {
        None => sp.port,
        Some(IntOrString::Int(0)) => sp.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => named(pod, name, &protocol)?,
        },
    };
    Some(Port { name: sp.name.clone(), port: number, protocol, app_protocol: sp.app_protocol.clone() })
}

fn named(pod: &CachedPod, name: &str, protocol: &str) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers.iter().chain(sidecars).flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        (p.name.as_deref() == Some(name) && proto == protocol).then_some(p.container_port)
    })
}

/// Which Services a pod change concerns: those that select it now, and those that selected
/// it at its last change (a relabelled or deleted pod leaves them). The informer hands
/// handlers only the new object, so the last answer per pod is remembered here.
#[derive(Default)]
pub struct Concerned {
    last: Mutex<HashMap<String, HashSet<ObjectRef<Service>>>>,
}

impl Concerned {
    pub fn services(&self, pod: &CachedPod, deleted: bool, services: &Store<Service>) -> Vec<ObjectRef<Service>> {
        let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        let now: HashSet<ObjectRef<Service>> = if deleted {
            HashSet::new()
        } else {
            services.state().iter().filter(|s| selects(s, pod)).map(|s| ObjectRef::from_obj(&**s)).collect()
        };
        let mut last = self.last.lock().expect("concerned lock");
        let before = if now.is_empty() { last.remove(&key) } else { last.insert(key, now.clone()) };
        now.into_iter().chain(before.into_iter().flatten()).collect::<HashSet<_>>().into_iter().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "d"}, "spec": spec})).unwrap()
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool, extra: serde_json::Value) -> CachedPod {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "d", "uid": format!("u-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        if let Some(ip) = ip {
            p["status"]["podIP"] = json!(ip);
        }
        crate::server::registry::patch::merge_patch(&mut p, &extra);
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn pods_without_an_address_or_finished_are_left_out_and_terminating_ones_only_when_asked() {
        let s = svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}));
        let ready = pod("a", Some("10.0.0.1"), true, json!({}));
        let unready = pod("b", Some("10.0.0.2"), false, json!({}));
        let no_ip = pod("c", None, true, json!({}));
        let done = pod("d", Some("10.0.0.4"), false, json!({"status": {"phase": "Succeeded"}}));
        let going =
            pod("e", Some("10.0.0.5"), true, json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}));
        let other = pod("f", Some("10.0.0.6"), true, json!({"metadata": {"labels": {"app": "db"}}}));
        let all = [&ready, &unready, &no_ip, &done, &going, &other];
        let m = members(&s, &all, false);
        assert_eq!(
            m.iter().map(|m| (m.ip.as_str(), m.ready)).collect::<Vec<_>>(),
            [("10.0.0.1", true), ("10.0.0.2", false)]
        );
        let m = members(&s, &all, true);
        let e = m.iter().find(|m| m.ip == "10.0.0.5").unwrap();
        assert_eq!((e.ready, e.serving, e.terminating), (false, true, true));
        assert_eq!(m[0].ports, [Port { name: None, port: 8080, protocol: "TCP".into(), app_protocol: None }]);
        assert_eq!(m[0].node.as_deref(), Some("n1"));
    }

    #[test]
    fn named_target_ports_match_name_and_protocol_and_unknown_names_drop_the_port() {
        let s = svc(json!({"selector": {"app": "web"}, "ports": [
            {"name": "a", "port": 53, "targetPort": "dns", "protocol": "UDP"},
            {"name": "b", "port": 54, "targetPort": "dns"},
            {"name": "c", "port": 81, "targetPort": 9090},
            {"name": "d", "port": 82}]}));
        let p = pod("a", Some("10.0.0.1"), true, json!({}));
        let ports: Vec<(String, i32)> =
            members(&s, &[&p], false)[0].ports.iter().map(|p| (p.name.clone().unwrap(), p.port)).collect();
        assert_eq!(ports, [("a".into(), 53), ("c".into(), 9090), ("d".into(), 82)]);
    }

    #[test]
    fn publishing_not_ready_addresses_makes_every_member_ready() {
        let s = svc(json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true}));
        let p = pod("a", Some("10.0.0.1"), false, json!({}));
        assert!(members(&s, &[&p], true)[0].ready);
    }

    #[test]
    fn a_hostname_is_published_only_under_its_own_subdomain() {
        let s = svc(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let mine = pod("a", Some("10.0.0.1"), true, json!({"spec": {"hostname": "h", "subdomain": "web"}}));
        let theirs = pod("b", Some("10.0.0.2"), true, json!({"spec": {"hostname": "h", "subdomain": "db"}}));
        let m = members(&s, &[&mine, &theirs], false);
        assert_eq!((m[0].hostname.as_deref(), m[1].hostname.as_deref()), (Some("h"), None));
    }

    #[test]
    fn services_without_a_selector_or_external_names_are_not_managed() {
        assert!(is_managed(&svc(json!({"selector": {"app": "web"}}))));
        assert!(!is_managed(&svc(json!({"ports": [{"port": 80}]}))));
        assert!(!is_managed(&svc(json!({"selector": {"app": "web"}, "type": "ExternalName"}))));
    }
}
