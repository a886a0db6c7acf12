//! Pod traffic between nodes (flannel's job): a watch of all Nodes, kept in a kube-runtime
//! reflector, and of the cluster ConfigMap; every change wakes one sync, which turns the
//! Nodes into the routes this node needs ([`routes::plan`], pure) and has the
//! [`Router`] make the kernel so on a blocking thread, and keeps the masquerade of pod
//! traffic leaving the cluster range. With a VXLAN device, the node first publishes its
//! MAC in its Node's [`VTEP_MAC_ANNOTATION`] (flannel: `flannel.alpha.coreos.com/backend-data`).
//!
//! The first sync waits for the first full list of Nodes, and removes our routes to nodes
//! that went while the daemon was down.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::Notify;

use super::proxy::{CLUSTER_CONFIG_NAME, CLUSTER_CONFIG_NAMESPACE, MIN_SYNC, reflect};
use crate::network::routes::{self, Backend, Local, Peer, Plan, Router};
use crate::network::{Ipv4Net, masquerade, vxlan};
use crate::node::daemon::Daemon;

/// The annotation with a node's VTEP MAC.
pub const VTEP_MAC_ANNOTATION: &str = "nodectl.io/vtep-mac";
/// The wait before a failed step is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// The other nodes as routes need them: those with a pod range and an IPv4 InternalIP.
pub fn peers(nodes: &[Arc<Node>]) -> Vec<Peer> {
    nodes
        .iter()
        .filter_map(|n| {
            let pod_cidr = super::node_pod_cidr(n)?;
            let internal_ip = n
                .status
                .as_ref()?
                .addresses
                .iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP")
                .find_map(|a| a.address.parse::<Ipv4Addr>().ok())?;
            let vtep_mac = n.annotations().get(VTEP_MAC_ANNOTATION).and_then(|m| vxlan::parse_mac(m));
            Some(Peer { name: n.name_any(), pod_cidr, internal_ip, vtep_mac })
        })
        .collect()
}

/// The cluster's pod range from the ConfigMap; without one, the smallest network that
/// holds every node's range (ours at least).
pub fn cluster_range(cm: Option<&ConfigMap>, own: Ipv4Net, peers: &[Peer]) -> Ipv4Net {
    let named = cm
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get("clusterCIDR"))
        .and_then(|c| c.split(',').find_map(|one| one.trim().parse::<Ipv4Net>().ok()))
        .map(|n| n.trunc());
    if let Some(n) = named {
        return n;
    }
    let mut net = own;
    for p in peers {
        while !net.contains(&p.pod_cidr) {
            match net.supernet() {
                Some(s) => net = s,
                None => break,
            }
        }
    }
    net
}

/// Keeps this node's routes to the other nodes' pods, until dropped.
pub async fn run(daemon: Arc<Daemon>, client: kube::Client, node: String, backend: Backend, ip: Option<IpAddr>) {
    let Some(IpAddr::V4(internal_ip)) = ip else {
        tracing::warn!(%node, "no IPv4 InternalIP: no routes to the other nodes' pods");
        return;
    };
    let (bridge, pod_cidr) = (daemon.opts.network.bridge.clone(), daemon.opts.network.cidr);
    // Pods' traffic to other nodes is forwarded by this host, as a Kubernetes node's is.
    if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
        tracing::warn!("enabling net.ipv4.ip_forward: {e}");
    }
    let router = loop {
        let b = bridge.clone();
        match tokio::task::spawn_blocking(move || Router::new(&b, internal_ip, pod_cidr)).await {
            Ok(Ok(r)) => break r,
            Ok(Err(e)) => tracing::warn!(%bridge, "the pod network's router: {e}"),
            Err(e) => tracing::warn!("the router's thread: {e}"),
        }
        tokio::time::sleep(RETRY).await;
    };
    let nodes_api: Api<Node> = Api::all(client.clone());
    let publish = nodes_api.clone();
    let changed = Arc::new(Notify::new());
    let (nodes, feed_nodes) = reflect(nodes_api, watcher::Config::default(), changed.clone());
    let (config, feed_config) = reflect(
        Api::<ConfigMap>::namespaced(client, CLUSTER_CONFIG_NAMESPACE),
        watcher::Config::default().fields(&format!("metadata.name={CLUSTER_CONFIG_NAME}")),
        changed.clone(),
    );
    let sync = async move {
        if nodes.wait_until_ready().await.is_err() || config.wait_until_ready().await.is_err() {
            return;
        }
        let router = Arc::new(std::sync::Mutex::new(router));
        let mut last: Option<(Plan, Ipv4Net)> = None;
        let mut published: Option<[u8; 6]> = None;
        loop {
            let others: Vec<Peer> = peers(&nodes.state()).into_iter().filter(|p| p.name != node).collect();
            let cm = config.state().into_iter().next();
            let cluster = cluster_range(cm.as_deref(), pod_cidr, &others);
            let local = Local { pod_cidr, internal_ip, backend, connected: Vec::new() };
            match sync_once(router.clone(), &bridge, local, others, cluster, last.as_ref()).await {
                Ok((done, mac)) => {
                    last = Some(done);
                    if let Some(mac) = mac.filter(|m| published != Some(*m)) {
                        // The other nodes reach our pods through this MAC.
                        let text = vxlan::format_mac(mac);
                        let patch = json!({"metadata": {"annotations": {VTEP_MAC_ANNOTATION: text}}});
                        match publish.patch(&node, &PatchParams::default(), &Patch::Merge(&patch)).await {
                            Ok(_) => published = Some(mac),
                            Err(e) => {
                                tracing::warn!(%node, "publishing the VTEP MAC: {e}");
                                tokio::time::sleep(RETRY).await;
                                continue;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%bridge, "routes to the other nodes' pods: {e}");
                    last = None;
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
            tokio::time::sleep(MIN_SYNC).await;
            changed.notified().await;
        }
    };
    tokio::join!(feed_nodes, feed_config, sync);
}

/// One sync on a blocking thread: the VXLAN device if a node needs it, the plan applied
/// (unless it is the last one again) and the masquerade table for `cluster`. The plan,
/// and the device's MAC, if there is one.
async fn sync_once(
    router: Arc<std::sync::Mutex<Router>>,
    bridge: &str,
    mut local: Local,
    others: Vec<Peer>,
    cluster: Ipv4Net,
    last: Option<&(Plan, Ipv4Net)>,
) -> Result<((Plan, Ipv4Net), Option<[u8; 6]>), String> {
    let bridge = bridge.to_string();
    let last = last.cloned();
    let done = tokio::task::spawn_blocking(move || {
        let mut router = router.lock().map_err(|_| "the router's lock is poisoned".to_string())?;
        local.connected = router.connected().map_err(|e| e.to_string())?;
        let mac = match router.vtep_mac() {
            Some(m) => Some(m),
            None if routes::needs_device(&local, &others) => Some(router.ensure_device().map_err(|e| e.to_string())?),
            None => None,
        };
        let plan = routes::plan(&local, &others);
        if last.as_ref().is_some_and(|(p, c)| *p == plan && *c == cluster) {
            return Ok(((plan, cluster), mac));
        }
        for (name, why) in &plan.unreachable {
            tracing::warn!(node = %name, "no route to the node's pods: {why}");
        }
        let applied = router.apply(&plan).map_err(|e| e.to_string())?;
        if last.as_ref().is_none_or(|(_, c)| *c != cluster) {
            masquerade::apply(&bridge, local.pod_cidr, cluster).map_err(|e| e.to_string())?;
        }
        tracing::info!(
            routes = plan.routes.len(),
            added = applied.added,
            removed = applied.removed,
            %cluster,
            "pod routes synced"
        );
        Ok(((plan, cluster), mac))
    })
    .await;
    done.map_err(|e| format!("the routes' thread: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ip: &str, mac: Option<&str>) -> Arc<Node> {
        let annotations = mac.map(|m| [(VTEP_MAC_ANNOTATION.to_string(), m.to_string())].into());
        Arc::new(Node {
            metadata: ObjectMeta { name: Some(name.into()), annotations, ..Default::default() },
            spec: Some(NodeSpec { pod_cidr: cidr.map(String::from), ..Default::default() }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress { type_: "Hostname".into(), address: name.into() },
                    NodeAddress { type_: "InternalIP".into(), address: ip.into() },
                ]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn peers_need_a_range_and_an_ipv4_address() {
        let nodes = vec![
            node("a", Some("10.244.1.0/24"), "192.168.1.11", Some("02:00:00:00:00:01")),
            node("b", None, "192.168.1.12", None),
            node("c", Some("10.244.3.0/24"), "fd00::3", None),
            node("d", Some("10.244.4.0/24"), "192.168.1.14", Some("nonsense")),
        ];
        let p = peers(&nodes);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].vtep_mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!((p[1].name.as_str(), p[1].vtep_mac), ("d", None));
    }

    #[test]
    fn the_cluster_range_is_the_configmaps_or_covers_every_node() {
        let own: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let cm = ConfigMap {
            data: Some([("clusterCIDR".to_string(), "10.244.0.0/16".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(cluster_range(Some(&cm), own, &[]).to_string(), "10.244.0.0/16");
        assert_eq!(cluster_range(None, own, &[]), own);
        let others = peers(&[node("b", Some("10.244.6.0/24"), "192.168.1.12", None)]);
        assert_eq!(cluster_range(None, own, &others).to_string(), "10.244.0.0/21");
    }
}
