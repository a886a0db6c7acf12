//! The node's Service proxy (kube-proxy's job): watches of Services, EndpointSlices and
//! the ConfigMap `kube-system/nodectl-cluster` (the cluster CIDR), each kept in a
//! kube-runtime reflector; every change wakes one sync loop, which turns the caches into a
//! [`Snapshot`] ([`snapshot`], pure) and has [`Proxy`] apply it on a blocking thread.
//! Changes that come while a sync runs, or within [`MIN_SYNC`] of the last one, are taken
//! together by the next (kube-proxy's minSyncPeriod).
//!
//! The first apply waits until every cache holds its first full list, and replaces the
//! whole table in one batch: a restarted daemon keeps established connections (their NAT
//! is in conntrack) and drops the rules of Services deleted while it was down.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort as KubeServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::network::Protocol;
use crate::network::services::{ClusterInfo, Endpoint, Proxy, ServicePort, Snapshot};
use crate::node::daemon::Daemon;

/// The least time between two syncs, so a burst of changes makes one batch.
pub const MIN_SYNC: Duration = Duration::from_millis(250);
/// The wait before a failed apply is tried again.
const RETRY: Duration = Duration::from_secs(2);
/// The ConfigMap the server keeps with the cluster's settings (issue 12's contract).
pub const CLUSTER_CONFIG_NAMESPACE: &str = "kube-system";
pub const CLUSTER_CONFIG_NAME: &str = "nodectl-cluster";
/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// kube's default sessionAffinityConfig.clientIP.timeoutSeconds (3 hours).
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// A watch of `api` kept in a reflector: its cache, and the future that feeds it and
/// wakes `changed` after every change once the first list is in.
pub(crate) fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
) -> (Store<K>, impl Future<Output = ()> + Send)
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let feed = async move {
        let mut events = watcher(api, config).default_backoff().reflect(writer).boxed();
        while let Some(event) = events.next().await {
            match event {
                // A (re)list is taken whole, at its end.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(kind = %K::kind(&Default::default()), "watch: {e}"),
            }
        }
    };
    (reader, feed)
}

/// Keeps the Service table of the daemon's bridge as the API says, until dropped.
pub async fn run(daemon: Arc<Daemon>, client: kube::Client, node: String) {
    let bridge = daemon.opts.network.bridge.clone();
    let changed = Arc::new(Notify::new());
    let (services, feed_services) =
        reflect(Api::<Service>::all(client.clone()), watcher::Config::default(), changed.clone());
    let (slices, feed_slices) =
        reflect(Api::<EndpointSlice>::all(client.clone()), watcher::Config::default(), changed.clone());
    let (config, feed_config) = reflect(
        Api::<ConfigMap>::namespaced(client, CLUSTER_CONFIG_NAMESPACE),
        watcher::Config::default().fields(&format!("metadata.name={CLUSTER_CONFIG_NAME}")),
        changed.clone(),
    );
    let sync = async move {
        for ready in
            [services.wait_until_ready().await, slices.wait_until_ready().await, config.wait_until_ready().await]
        {
            if ready.is_err() {
                return;
            }
        }
        let mut proxy: Option<Proxy> = None;
        let mut last: Option<Snapshot> = None;
        loop {
            let cm = config.state().into_iter().next();
            let snap = snapshot(&services.state(), &slices.state(), cm.as_deref(), &node);
            if last.as_ref() != Some(&snap) {
                match apply(proxy.take(), &bridge, snap.clone()).await {
                    Ok(p) => {
                        proxy = Some(p);
                        last = Some(snap);
                    }
                    Err(e) => {
                        tracing::warn!(%bridge, "Service rules: {e}");
                        last = None;
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                }
            }
            tokio::time::sleep(MIN_SYNC).await;
            changed.notified().await;
        }
    };
    tokio::join!(feed_services, feed_slices, feed_config, sync);
}

/// Applies `snap` with `proxy` (a new one for the first apply, or after a failure) on a
/// blocking thread; the proxy back for the next.
async fn apply(proxy: Option<Proxy>, bridge: &str, snap: Snapshot) -> Result<Proxy, String> {
    let bridge = bridge.to_string();
    let done = tokio::task::spawn_blocking(move || {
        let mut proxy = match proxy {
            Some(p) => p,
            None => Proxy::new(&bridge).map_err(|e| e.to_string())?,
        };
        let applied = proxy.apply(&snap).map_err(|e| e.to_string())?;
        tracing::debug!(table = proxy.table(), ?applied, ports = snap.ports.len(), "Service rules applied");
        Ok(proxy)
    })
    .await;
    done.map_err(|e| format!("the applying thread: {e}"))?
}

fn protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn port16(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// The cluster CIDR the ConfigMap names, if it is an IPv4 network.
fn cluster_info(cm: Option<&ConfigMap>) -> ClusterInfo {
    let cidr = cm.and_then(|c| c.data.as_ref()).and_then(|d| d.get("clusterCIDR"));
    let cluster_cidr = cidr.and_then(|c| {
        // A dual-stack list: its IPv4 part.
        c.split(',').find_map(|one| one.trim().parse::<ipnet::Ipv4Net>().ok()).map(|n| n.trunc())
    });
    ClusterInfo { cluster_cidr }
}

/// A Service's endpoints for one of its ports, from its slices: the port number is the
/// slice's port of the same name and protocol (the endpoint controller resolved a named
/// targetPort per pod, so pods of one Service may differ), each address once.
fn endpoints_of(slices: &[&EndpointSlice], sp: &KubeServicePort, node: &str) -> Vec<Endpoint> {
    let name = sp.name.clone().unwrap_or_default();
    let proto = sp.protocol.as_deref().unwrap_or("TCP");
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let port =
            slice.ports.iter().flatten().find(|p| {
                p.name.clone().unwrap_or_default() == name && p.protocol.as_deref().unwrap_or("TCP") == proto
            });
        let Some(port) = port.and_then(|p| p.port).and_then(port16) else { continue };
        for e in &slice.endpoints {
            let c = e.conditions.as_ref();
            // kube's rules for unset conditions: ready unless said otherwise, serving as
            // ready, not terminating.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let local = e.node_name.as_deref() == Some(node);
            for a in &e.addresses {
                let Ok(ip) = a.parse::<Ipv4Addr>() else { continue };
                if seen.insert((ip, port)) {
                    out.push(Endpoint { ip, port, ready, serving, terminating, local });
                }
            }
        }
    }
    out
}

/// What the proxy is to implement, from the watched objects (pure). Only IPv4 ClusterIP,
/// NodePort and LoadBalancer Services with a cluster IP get rules; headless and
/// ExternalName ones are DNS's alone.
pub fn snapshot(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    cluster: Option<&ConfigMap>,
    node: &str,
) -> Snapshot {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        if let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
            by_service.entry((ns, svc.clone())).or_default().push(s);
        }
    }
    let mut ports = Vec::new();
    for svc in services {
        let (Some(ns), Some(name)) = (svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref()) else {
            continue;
        };
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let Some(cluster_ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else {
            continue;
        };
        let external = matches!(spec.type_.as_deref(), Some("NodePort") | Some("LoadBalancer"));
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            t.and_then(|t| u32::try_from(t).ok()).filter(|t| *t > 0).unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let load_balancer_ips: Vec<Ipv4Addr> = if spec.type_.as_deref() == Some("LoadBalancer") {
            let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
            ingress.into_iter().flatten().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect()
        } else {
            Vec::new()
        };
        let svc_slices = by_service.get(&(ns.to_string(), name.to_string())).map(Vec::as_slice).unwrap_or_default();
        for sp in spec.ports.iter().flatten() {
            let (Some(protocol), Some(port)) = (protocol(sp.protocol.as_deref()), port16(sp.port)) else { continue };
            ports.push(ServicePort {
                name: format!("{ns}/{name}:{}", sp.name.as_deref().unwrap_or("")),
                cluster_ip: Some(cluster_ip),
                protocol,
                port,
                node_port: if external { sp.node_port.and_then(port16) } else { None },
                load_balancer_ips: load_balancer_ips.clone(),
                affinity_timeout,
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                external_local: external && spec.external_traffic_policy.as_deref() == Some("Local"),
                endpoints: endpoints_of(svc_slices, sp, node),
            });
        }
    }
    // Names are unique per Service in a valid one; should two still meet, the first
    // wins rather than the whole apply being refused.
    let mut names = BTreeSet::new();
    ports.retain(|p| names.insert(p.name.clone()));
    Snapshot { cluster: cluster_info(cluster), ports }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn slice(v: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn named_target_ports_come_from_the_slices_and_local_from_node_names() {
        let s = svc(json!({
            "metadata": {"namespace": "ns", "name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "externalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }));
        // Two slices of one Service, whose pods name the port differently.
        let a = slice(json!({
            "metadata": {"namespace": "ns", "name": "web-a", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "n1", "conditions": {"ready": true}},
                          {"addresses": ["10.244.2.5"], "nodeName": "n2", "conditions": {"ready": false, "serving": true, "terminating": true}}]
        }));
        let b = slice(json!({
            "metadata": {"namespace": "ns", "name": "web-b", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 9090, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.1.6"], "nodeName": "n1"}]
        }));
        let other = slice(json!({
            "metadata": {"namespace": "other", "name": "web-x", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 1, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.9.9"]}]
        }));
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "nodectl-cluster"}, "data": {"clusterCIDR": "10.244.0.0/16"}}),
        )
        .unwrap();
        let snap = snapshot(&[s], &[a, b, other], Some(&cm), "n1");
        assert_eq!(snap.cluster.cluster_cidr, Some("10.244.0.0/16".parse().unwrap()));
        assert_eq!(snap.ports.len(), 2);
        let http = &snap.ports[0];
        assert_eq!(http.name, "ns/web:http");
        assert_eq!(
            (http.port, http.node_port, http.external_local, http.internal_local),
            (80, Some(30080), true, false)
        );
        let eps: Vec<(String, u16, bool, bool)> =
            http.endpoints.iter().map(|e| (e.ip.to_string(), e.port, e.ready, e.local)).collect();
        assert_eq!(
            eps,
            [
                ("10.244.1.5".into(), 8080, true, true),
                ("10.244.2.5".into(), 8080, false, false),
                ("10.244.1.6".into(), 9090, true, true)
            ]
        );
        assert!(http.endpoints[1].terminating && http.endpoints[1].serving);
        // No slice has a "dns" port: no endpoints, so the proxy rejects.
        assert_eq!((snap.ports[1].protocol, snap.ports[1].endpoints.len()), (Protocol::Udp, 0));
    }

    #[test]
    fn headless_external_name_and_bad_services_get_no_rules_and_affinity_has_kubes_default() {
        let services = [
            svc(
                json!({"metadata": {"namespace": "ns", "name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
            ),
            svc(
                json!({"metadata": {"namespace": "ns", "name": "x"}, "spec": {"type": "ExternalName", "externalName": "a.example"}}),
            ),
            svc(
                json!({"metadata": {"namespace": "ns", "name": "v6"}, "spec": {"clusterIP": "fd00::1", "ports": [{"port": 80}]}}),
            ),
            svc(
                json!({"metadata": {"namespace": "ns", "name": "odd"}, "spec": {"clusterIP": "10.96.0.3", "ports": [{"port": 80, "protocol": "ICMP"}, {"port": 70000}]}}),
            ),
            svc(
                json!({"metadata": {"namespace": "ns", "name": "a"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.4",
                "sessionAffinity": "ClientIP", "ports": [{"port": 80, "nodePort": 31000}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}, {"hostname": "lb.example"}]}}}),
            ),
        ];
        let snap = snapshot(&services, &[], None, "n1");
        assert_eq!(snap.cluster.cluster_cidr, None);
        assert_eq!(snap.ports.len(), 1);
        let p = &snap.ports[0];
        assert_eq!(p.name, "ns/a:");
        assert_eq!(p.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        assert_eq!(p.load_balancer_ips, vec![Ipv4Addr::new(192, 0, 2, 7)]);
        assert_eq!(p.node_port, Some(31000));
    }
}
