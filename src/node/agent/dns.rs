//! The cluster's DNS on this node (docs/architecture.md, decision 18): [`node::dns`]'s
//! server on UDP and TCP port 53 of the bridge's gateway address, its zone fed by watches
//! of Services and EndpointSlices, other names forwarded to the node's own resolvers.
//!
//! [`start`] says at once, before any pod is made, that the node has cluster DNS (the
//! gateway address and the cluster domain), so a ClusterFirst pod is never given the
//! host's resolv.conf because it came first. The domain is the ConfigMap
//! `kube-system/nodectl-cluster`'s `clusterDomain`, read once at the start ("cluster.local"
//! until it is read, and when the server has none).
//!
//! [`node::dns`]: crate::node::dns

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};

use super::proxy::{CLUSTER_CONFIG_NAME, CLUSTER_CONFIG_NAMESPACE};
use crate::node::daemon::Daemon;
use crate::node::dns::forward::{self, Forwarder};
use crate::node::dns::records::Zone;
use crate::node::dns::server::{self, Handler};
use crate::node::resolv::ClusterDns;

/// kube's default cluster domain.
pub const DEFAULT_DOMAIN: &str = "cluster.local";
/// How often the ConfigMap is asked for when the API does not answer, and how many times
/// before the default domain is kept.
const CONFIG_RETRY: Duration = Duration::from_millis(500);
const CONFIG_TRIES: u32 = 20;
/// The wait before binding port 53 again after it failed.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// Records that this node serves cluster DNS and starts serving it; the task runs until
/// aborted.
pub fn start(daemon: &Arc<Daemon>, client: &kube::Client) -> tokio::task::JoinHandle<()> {
    let server = crate::network::gateway(daemon.opts.network.cidr);
    set_cluster_dns(daemon, ClusterDns { server, domain: DEFAULT_DOMAIN.into() });
    tokio::spawn(run(daemon.clone(), client.clone(), server))
}

fn set_cluster_dns(daemon: &Daemon, dns: ClusterDns) {
    *daemon.opts.cluster_dns.write().unwrap_or_else(|p| p.into_inner()) = Some(dns);
}

/// The cluster domain the server's ConfigMap names; None if it names none.
async fn configured_domain(client: &kube::Client) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), CLUSTER_CONFIG_NAMESPACE);
    for _ in 0..CONFIG_TRIES {
        match api.get_opt(CLUSTER_CONFIG_NAME).await {
            Ok(cm) => {
                let domain = cm.and_then(|c| c.data).and_then(|mut d| d.remove("clusterDomain"));
                return domain.map(|d| d.trim().trim_end_matches('.').to_string()).filter(|d| !d.is_empty());
            }
            Err(e) => tracing::debug!("reading ConfigMap {CLUSTER_CONFIG_NAMESPACE}/{CLUSTER_CONFIG_NAME}: {e}"),
        }
        tokio::time::sleep(CONFIG_RETRY).await;
    }
    tracing::warn!(
        "ConfigMap {CLUSTER_CONFIG_NAMESPACE}/{CLUSTER_CONFIG_NAME} could not be read: cluster domain {DEFAULT_DOMAIN}"
    );
    None
}

async fn run(daemon: Arc<Daemon>, client: kube::Client, server: Ipv4Addr) {
    let mut domain = configured_domain(&client).await.unwrap_or_else(|| DEFAULT_DOMAIN.into());
    let zone = match Zone::new(&domain) {
        Ok(z) => z,
        Err(e) => {
            tracing::warn!("{e}: cluster domain {DEFAULT_DOMAIN}");
            domain = DEFAULT_DOMAIN.into();
            match Zone::new(DEFAULT_DOMAIN) {
                Ok(z) => z,
                Err(_) => return,
            }
        }
    };
    set_cluster_dns(&daemon, ClusterDns { server, domain: domain.clone() });
    let zone = Arc::new(RwLock::new(zone));
    let upstreams = forward::upstreams_of(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let addr = SocketAddr::from((server, 53));
    let serve = {
        let zone = zone.clone();
        async move {
            loop {
                let handler = Handler { zone: zone.clone(), forward: Forwarder::new(&upstreams) };
                match server::serve(addr, handler).await {
                    Ok(mut s) => {
                        tracing::info!(%addr, %domain, "serving the cluster's DNS");
                        if let Err(e) = s.block_until_done().await {
                            tracing::warn!(%addr, "cluster DNS: {e}");
                        }
                    }
                    Err(e) => tracing::warn!(%addr, "cluster DNS cannot listen: {e}"),
                }
                tokio::time::sleep(BIND_RETRY).await;
            }
        }
    };
    let services = feed(Api::<Service>::all(client.clone()), zone.clone(), Zone::apply_service, Zone::delete_service);
    let slices = feed(Api::<EndpointSlice>::all(client), zone, Zone::apply_slice, Zone::delete_slice);
    tokio::join!(serve, services, slices);
}

/// Keeps the zone's copy of one kind as a watch of `api` says. A relist's objects are
/// applied as they come, and what it no longer holds is deleted at its end, so the zone
/// answers from the old copy meanwhile (an API outage leaves names as they were).
async fn feed<K>(api: Api<K>, zone: Arc<RwLock<Zone>>, apply: fn(&mut Zone, &K), delete: fn(&mut Zone, &str, &str))
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
    let mut known: BTreeSet<(String, String)> = BTreeSet::new();
    let mut listed: BTreeSet<(String, String)> = BTreeSet::new();
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("cluster DNS watch: {e}");
                continue;
            }
        };
        let mut z = zone.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitApply(o) => {
                listed.insert(key(&o));
                known.insert(key(&o));
                apply(&mut z, &o);
            }
            watcher::Event::InitDone => {
                for (ns, name) in known.difference(&listed) {
                    delete(&mut z, ns, name);
                }
                known = std::mem::take(&mut listed);
            }
            watcher::Event::Apply(o) => {
                known.insert(key(&o));
                apply(&mut z, &o);
            }
            watcher::Event::Delete(o) => {
                let (ns, name) = key(&o);
                delete(&mut z, &ns, &name);
                known.remove(&(ns, name));
            }
        }
    }
}
