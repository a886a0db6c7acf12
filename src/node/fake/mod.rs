//! Fake nodes, as kwok makes them (`nodectl daemon --fake --count N`): N Nodes that renew
//! their Leases and report the pods bound to them Running, without starting a process, so
//! that one machine can hold a cluster of thousands of nodes for the scheduler, the
//! controllers and `make bench`.
//!
//! One process acts for every fake node with one client (as kwok's controller does): a
//! node's own token would mean a connection and a pod watch per node, which is the cost
//! the simulation exists to leave out. So it needs a credential that may write Nodes,
//! Leases and pods' status, such as the server's admin.kubeconfig.
//!
//! Node i has the InternalIP 198.18.0.0 + i (RFC 2544's benchmarking range) and gives its
//! pods addresses from 100.64.0.0 + 256·i (a /24 each in RFC 6598's shared range): nothing
//! is routed to either.

pub mod pods;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::node::agent::node_status::{self, Host, Reserved};

/// The Lease renewal period and duration, as the kubelet's.
const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_DURATION_SECONDS: i32 = 40;
/// How often each Node's status is written (its heartbeat times).
const NODE_REPORT: Duration = Duration::from_secs(60);
/// Writes in flight at once: enough to keep the server busy, few enough not to flood it.
const IN_FLIGHT: usize = 64;
/// Most fake nodes one process makes: node addresses come from a /15, pod ranges from a /10.
pub const MAX_COUNT: u32 = 16_384;
const LEASE_NAMESPACE: &str = "kube-node-lease";

#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// A kubeconfig whose user may write Nodes, Leases and pods (admin.kubeconfig).
    pub kubeconfig: PathBuf,
    pub count: u32,
    /// Nodes are named PREFIX-0 … PREFIX-(N-1).
    pub prefix: String,
    /// What each node has: cpu and memory, and how many pods it takes.
    pub capacity: Reserved,
    pub max_pods: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("--count: {0} is not between 1 and {MAX_COUNT}")]
    Count(u32),
    #[error("the kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("creating fake node {name:?}: {source}")]
    Node { name: String, source: kube::Error },
}

/// The fake nodes: their names by index.
pub struct Fleet {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Fleet {
    pub fn new(prefix: &str, count: u32) -> Fleet {
        let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32)).collect();
        Fleet { names, index }
    }

    pub fn index(&self, node: &str) -> Option<u32> {
        self.index.get(node).copied()
    }

    /// Node i's InternalIP.
    pub fn node_ip(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i)
    }
}

fn host(config: &FakeConfig, i: u32) -> Host {
    Host {
        cpus: config.capacity.cpu_millis / 1000,
        memory_bytes: config.capacity.memory_bytes,
        hostname: format!("{}-{i}", config.prefix),
        internal_ip: Some(Fleet::node_ip(i).into()),
        kernel_version: "fake".into(),
        os_image: "fake".into(),
        architecture: "amd64".into(),
        machine_id: String::new(),
        boot_id: String::new(),
        system_uuid: String::new(),
        daemon_port: 0,
    }
}

fn now() -> Time {
    Time(chrono::DateTime::<chrono::Utc>::from(SystemTime::now()))
}

async fn client(path: &PathBuf) -> Result<kube::Client, FakeError> {
    let fail = |message: String| FakeError::Kubeconfig { path: path.clone(), message };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}

/// Makes the nodes and keeps them (Leases, status, pods) until the future is dropped.
pub async fn run(config: FakeConfig) -> Result<(), FakeError> {
    if config.count == 0 || config.count > MAX_COUNT {
        return Err(FakeError::Count(config.count));
    }
    let client = client(&config.kubeconfig).await?;
    let fleet = Arc::new(Fleet::new(&config.prefix, config.count));
    let uids = register(&client, &config, &fleet).await?;
    tracing::info!(count = config.count, prefix = %config.prefix, "fake nodes registered");
    eprintln!("nodectl daemon: {} fake nodes {}-0..{} registered", config.count, config.prefix, config.count - 1);
    let leases = tokio::spawn(keep_leases(client.clone(), fleet.clone(), uids));
    let status = tokio::spawn(keep_status(client.clone(), config.clone(), fleet.clone()));
    pods::run(client, fleet).await;
    leases.abort();
    status.abort();
    Ok(())
}

/// Creates each Node that is missing; answers every Node's uid (its Lease's owner).
async fn register(client: &kube::Client, config: &FakeConfig, fleet: &Fleet) -> Result<Vec<String>, FakeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let since = now();
    futures_util::stream::iter(fleet.names.iter().enumerate())
        .map(|(i, name)| {
            let nodes = nodes.clone();
            let h = host(config, i as u32);
            let status = node_status::status(&h, Reserved::default(), config.max_pods, &since, &since);
            async move {
                let err = |source| FakeError::Node { name: name.clone(), source };
                let node = match nodes.get_opt(name).await.map_err(err)? {
                    Some(n) => n,
                    None => {
                        nodes.create(&PostParams::default(), &node_status::node(name, &h, status)).await.map_err(err)?
                    }
                };
                Ok(node.metadata.uid.unwrap_or_default())
            }
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await
}

/// Renews every node's Lease each [`LEASE_RENEW`].
async fn keep_leases(client: kube::Client, fleet: Arc<Fleet>, uids: Vec<String>) {
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let mut tick = tokio::time::interval(LEASE_RENEW);
    loop {
        tick.tick().await;
        // Owned items: a stream over borrows cannot be held across a spawned task's awaits.
        let work: Vec<(String, String)> = fleet.names.iter().cloned().zip(uids.iter().cloned()).collect();
        let renewed = futures_util::stream::iter(work)
            .map(|(name, uid)| {
                let leases = leases.clone();
                async move { renew(&leases, &name, &uid).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .filter(|r| futures_util::future::ready(r.is_err()))
            .count()
            .await;
        if renewed > 0 {
            tracing::warn!(failed = renewed, "fake nodes' leases not renewed");
        }
    }
}

async fn renew(leases: &Api<Lease>, name: &str, uid: &str) -> Result<(), kube::Error> {
    let renew_time = MicroTime(chrono::DateTime::<chrono::Utc>::from(SystemTime::now()));
    let patch = json!({"spec": {"renewTime": renew_time}});
    match leases.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(r)) if r.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.to_string(),
                        uid: uid.to_string(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.to_string()),
                    lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                    renew_time: Some(renew_time),
                    ..Default::default()
                }),
            };
            leases.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Writes every node's status (its conditions' heartbeats) each [`NODE_REPORT`].
async fn keep_status(client: kube::Client, config: FakeConfig, fleet: Arc<Fleet>) {
    let nodes: Api<Node> = Api::all(client);
    let since = now();
    let mut tick = tokio::time::interval(NODE_REPORT);
    tick.tick().await; // registration wrote the first status
    loop {
        tick.tick().await;
        let at = now();
        let work: Vec<(usize, String)> = fleet.names.iter().cloned().enumerate().collect();
        futures_util::stream::iter(work)
            .map(|(i, name)| {
                let status =
                    node_status::status(&host(&config, i as u32), Reserved::default(), config.max_pods, &since, &at);
                let nodes = nodes.clone();
                async move {
                    let patch = json!({"status": status});
                    if let Err(e) = nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                        tracing::debug!(node = %name, "writing a fake node's status: {e}");
                    }
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<()>()
            .await;
    }
}

/// Pods bound to a node (fake or not): what the pod loop watches.
pub(crate) fn bound_pods(
    client: kube::Client,
) -> impl futures_util::Stream<Item = Result<watcher::Event<pods::FakePod>, watcher::Error>> {
    watcher::watcher(Api::<pods::FakePod>::all(client), watcher::Config::default().fields("spec.nodeName!="))
}
