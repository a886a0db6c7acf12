//! ServiceLB, as k3s' servicelb: every Service of type LoadBalancer without a
//! loadBalancerClass gets `status.loadBalancer.ingress`. With `--service-lb-pool`, one
//! address of the pool per Service ([`pool`]: `spec.loadBalancerIP` honoured when it is in
//! the pool and free); without, the InternalIP of every Ready, schedulable Node, sorted,
//! updated as Nodes come and go. The node daemons program what the status says. A Service
//! that stops being a LoadBalancer has its status cleared and its address given back.
//!
//! One task handles the changes in order, so two Services never race for one address in
//! this server; the records in the store keep servers apart.

pub mod pool;

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Service};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use serde_json::json;
use tokio::sync::mpsc;

use super::events::{Recorder, Type};
use super::informer::{self, Informer};
use crate::server::registry::RegistryError;
use crate::server::registry::objects::{Store, blocking};
use pool::PoolError;

/// The Event's reason when a Service gets no address of the pool (MetalLB's).
pub const ALLOCATION_FAILED: &str = "AllocationFailed";

/// The wait before a failed write is tried again; also how often addresses whose
/// Service is gone are looked for.
const RETRY: Duration = Duration::from_secs(1);
const SWEEP: Duration = Duration::from_secs(30);

enum Change {
    Service(String, String),
    Gone(String, String),
    Nodes,
    Sweep,
}

/// Is this Service ours to give an address?
pub fn is_ours(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none())
}

/// The InternalIPs of the Ready, schedulable Nodes, sorted (k3s' servicelb lists the
/// nodes' addresses).
pub fn node_addresses(nodes: &[std::sync::Arc<Node>]) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = nodes
        .iter()
        .filter(|n| !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false))
        .filter(|n| {
            let conds = n.status.as_ref().and_then(|s| s.conditions.as_ref());
            conds.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .flat_map(|n| n.status.as_ref().and_then(|s| s.addresses.clone()).unwrap_or_default())
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn ingress_ips(svc: &Service) -> Vec<String> {
    let lb = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref());
    lb.and_then(|l| l.ingress.as_ref()).into_iter().flatten().filter_map(|i| i.ip.clone()).collect()
}

/// The controller on the shared Node informer, with a Service informer of its own; runs,
/// for as long as the runtime (the leader's) runs, when the returned future is polled.
pub fn controller(
    client: kube::Client,
    store: Store,
    pool: Option<Ipv4Net>,
    nodes: &mut Informer<Node>,
) -> impl Future<Output = ()> + Send + 'static {
    let (tx, rx) = mpsc::unbounded_channel();
    let sender = tx.clone();
    nodes.on_change(move |_, _| {
        let _ = sender.send(Change::Nodes);
    });
    let node_cache = nodes.store();
    serve(client, store, pool, node_cache, tx, rx)
}

async fn serve(
    client: kube::Client,
    store: Store,
    pool: Option<Ipv4Net>,
    node_cache: Cache<Node>,
    tx: mpsc::UnboundedSender<Change>,
    rx: mpsc::UnboundedReceiver<Change>,
) {
    let mut services = Informer::<Service>::default();
    let sender = tx.clone();
    services.on_change(move |s, deleted| {
        let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
        let _ = sender.send(if deleted { Change::Gone(ns, name) } else { Change::Service(ns, name) });
    });
    let svc_cache = services.store();
    tokio::spawn(services.run(Api::all(client.clone())));
    if !informer::ready(&svc_cache).await || !informer::ready(&node_cache).await {
        return;
    }
    let sweeper = tx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP);
        loop {
            tick.tick().await;
            if sweeper.send(Change::Sweep).is_err() {
                return;
            }
        }
    });
    let lb = ServiceLb {
        client: client.clone(),
        store,
        pool,
        services: svc_cache,
        nodes: node_cache,
        events: Recorder::new(client, "service-lb-controller"),
        told: std::collections::HashMap::new(),
        tx,
    };
    lb.run(rx).await;
}

struct ServiceLb {
    client: kube::Client,
    store: Store,
    pool: Option<Ipv4Net>,
    services: Cache<Service>,
    nodes: Cache<Node>,
    events: Recorder,
    /// Services told by an Event why they have no address (told once per reason).
    told: std::collections::HashMap<(String, String), String>,
    tx: mpsc::UnboundedSender<Change>,
}

impl ServiceLb {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Change>) {
        while let Some(change) = rx.recv().await {
            match change {
                Change::Service(ns, name) => self.sync(&ns, &name).await,
                Change::Gone(ns, name) => self.gone(&ns, &name).await,
                Change::Nodes => {
                    if self.pool.is_none() {
                        for svc in self.services.state().iter().filter(|s| is_ours(s)) {
                            let _ = self.tx.send(Change::Service(svc.namespace().unwrap_or_default(), svc.name_any()));
                        }
                    }
                }
                Change::Sweep => self.sweep().await,
            }
        }
    }

    async fn sync(&mut self, ns: &str, name: &str) {
        let Some(svc) = self.services.get(&ObjectRef::new(name).within(ns)) else { return };
        if svc.spec.as_ref().and_then(|s| s.load_balancer_class.as_ref()).is_some() {
            // Another controller's.
            return;
        }
        if !is_ours(&svc) {
            self.told.remove(&(ns.to_string(), name.to_string()));
            self.release(ns, name).await;
            if !ingress_ips(&svc).is_empty() {
                self.write(&svc, &[]).await;
            }
            return;
        }
        let want = match self.pool {
            None => node_addresses(&self.nodes.state()),
            Some(pool) => {
                let requested = svc.spec.as_ref().and_then(|s| s.load_balancer_ip.as_deref()).filter(|s| !s.is_empty());
                let requested = match requested.map(str::parse::<Ipv4Addr>) {
                    Some(Ok(ip)) => Some(ip),
                    Some(Err(_)) => {
                        let why = format!(
                            "Failed to allocate IP for \"{ns}/{name}\": spec.loadBalancerIP is not an IPv4 address"
                        );
                        self.tell(&svc, why).await;
                        return;
                    }
                    None => None,
                };
                let (store, n, s) = (self.store.clone(), ns.to_string(), name.to_string());
                let got =
                    blocking(move || Ok::<_, RegistryError>(pool::assign(&*store, pool, requested, &n, &s))).await;
                match got {
                    Ok(Ok(ip)) => vec![ip],
                    Err(err) => {
                        tracing::warn!(service = %format!("{ns}/{name}"), %err, "allocating a load-balancer address");
                        self.retry(ns, name);
                        return;
                    }
                    Ok(Err(PoolError::Store(err))) => {
                        tracing::warn!(service = %format!("{ns}/{name}"), %err, "allocating a load-balancer address");
                        self.retry(ns, name);
                        return;
                    }
                    Ok(Err(why)) => {
                        self.tell(&svc, format!("Failed to allocate IP for \"{ns}/{name}\": {why}")).await;
                        return;
                    }
                }
            }
        };
        self.told.remove(&(ns.to_string(), name.to_string()));
        let want: Vec<String> = want.iter().map(Ipv4Addr::to_string).collect();
        if ingress_ips(&svc) != want {
            self.write(&svc, &want).await;
        }
    }

    /// Writes the Service's ingress list (empty: cleared).
    async fn write(&self, svc: &Service, ips: &[String]) {
        let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
        let api: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect();
        let lb = if ingress.is_empty() { json!({}) } else { json!({"ingress": ingress}) };
        // A merge patch replaces the list, and a null removes the old one first.
        let patch = json!({"status": {"loadBalancer": if ingress.is_empty() { json!(null) } else { lb }}});
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => tracing::info!(service = %format!("{ns}/{name}"), ?ips, "load-balancer ingress written"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(err) => {
                tracing::warn!(service = %format!("{ns}/{name}"), %err, "writing the load-balancer ingress; trying again");
                self.retry(&ns, &name);
            }
        }
    }

    async fn gone(&mut self, ns: &str, name: &str) {
        self.told.remove(&(ns.to_string(), name.to_string()));
        self.release(ns, name).await;
        // Whoever waits for an address may have this one now.
        if self.pool.is_some() {
            let waiting: Vec<(String, String)> = self.told.keys().cloned().collect();
            for (n, s) in waiting {
                let _ = self.tx.send(Change::Service(n, s));
            }
        }
    }

    async fn release(&self, ns: &str, name: &str) {
        if self.pool.is_none() {
            return;
        }
        let (store, n, s) = (self.store.clone(), ns.to_string(), name.to_string());
        let done =
            blocking(move || pool::release(&*store, &n, &s).map_err(|e| RegistryError::from_store(e, "services", &s)))
                .await;
        if let Err(err) = done {
            tracing::warn!(service = %format!("{ns}/{name}"), %err, "giving the load-balancer address back");
        }
    }

    /// Addresses held by Services that are gone or no longer ours (a deletion missed while
    /// another server led) are given back.
    async fn sweep(&mut self) {
        if self.pool.is_none() {
            return;
        }
        let store = self.store.clone();
        let Ok(Ok(holders)) = blocking(move || Ok::<_, RegistryError>(pool::holders(&*store))).await else {
            return;
        };
        for (ns, name) in holders {
            let svc = self.services.get(&ObjectRef::new(&name).within(&ns));
            if !svc.is_some_and(|s| is_ours(&s)) {
                self.gone(&ns, &name).await;
            }
        }
    }

    /// An Event on the Service saying why it has no address, once per reason.
    async fn tell(&mut self, svc: &Service, message: String) {
        let key = (svc.namespace().unwrap_or_default(), svc.name_any());
        if self.told.get(&key) == Some(&message) {
            return;
        }
        tracing::warn!(service = %format!("{}/{}", key.0, key.1), %message, "no load-balancer address");
        self.told.insert(key, message.clone());
        let regarding = ObjectReference {
            kind: Some("Service".into()),
            api_version: Some("v1".into()),
            namespace: svc.namespace(),
            name: Some(svc.name_any()),
            uid: svc.uid(),
            resource_version: svc.resource_version(),
            ..ObjectReference::default()
        };
        self.events.record(regarding, Type::Warning, ALLOCATION_FAILED, message).await;
    }

    fn retry(&self, ns: &str, name: &str) {
        let (tx, ns, name) = (self.tx.clone(), ns.to_string(), name.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(RETRY).await;
            let _ = tx.send(Change::Service(ns, name));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(name: &str, ip: &str, ready: &str, unschedulable: bool) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"unschedulable": unschedulable},
                "status": {"conditions": [{"type": "Ready", "status": ready}],
                           "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn only_ready_schedulable_nodes_internal_ips_sorted() {
        let nodes = vec![
            node("b", "10.0.0.12", "True", false),
            node("a", "10.0.0.9", "True", false),
            node("c", "10.0.0.13", "False", false),
            node("d", "10.0.0.14", "True", true),
        ];
        assert_eq!(node_addresses(&nodes), vec![Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 12)]);
    }

    #[test]
    fn only_load_balancers_without_a_class_are_ours() {
        let svc = |spec: serde_json::Value| -> Service { serde_json::from_value(json!({"spec": spec})).unwrap() };
        assert!(is_ours(&svc(json!({"type": "LoadBalancer"}))));
        assert!(!is_ours(&svc(json!({"type": "LoadBalancer", "loadBalancerClass": "x.io/lb"}))));
        assert!(!is_ours(&svc(json!({"type": "NodePort"}))));
    }
}
