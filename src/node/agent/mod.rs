//! A daemon that joins a cluster: the API side of the kubelet. It registers with the join
//! token ([`register`]), then speaks to the API server only as a client (kube-rs) with the
//! node's own token, which the server's node authorizer confines to this node's objects:
//! - its Node ([`node_status`]): created with the well-known labels, its status written
//!   when it changes and at least every minute;
//! - its Lease in `kube-node-lease`, renewed every 10 s (the node's heartbeat);
//! - the pods bound to it ([`pods`]): run by the daemon, their status written back, their
//!   volumes kept up with their ConfigMaps, Secrets, labels and tokens ([`volume_sync`]);
//! - the cluster's Services: their traffic ([`proxy`]) and names ([`dns`]);
//! - all Nodes: routes to their pods ([`routes`]).
//!
//! This module talks to the server over HTTP only (tests/layers.rs: node code may not
//! import the server's).

pub mod dns;
pub mod node_status;
pub mod pods;
pub mod proxy;
pub mod register;
pub mod routes;
pub mod serving;
pub mod status_patch;
pub mod tokens;
pub mod volume_sync;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use self::node_status::{Host, Reserved};
use crate::node::daemon::Daemon;

/// How often the Lease is renewed (the kubelet's default, nodeLeaseDurationSeconds / 4).
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The Lease's duration, as the kubelet sets it.
const LEASE_DURATION_SECONDS: i32 = 40;
/// How often the Node's status is looked at, and how often it is written even unchanged.
const NODE_CHECK: Duration = Duration::from_secs(10);
const NODE_REPORT: Duration = Duration::from_secs(60);
/// The Lease's namespace.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// How to join: `nodectl daemon --server … --token-file … --ca-file …`.
#[derive(Clone, Debug)]
pub struct JoinConfig {
    pub server: String,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    pub node_name: String,
    pub reserved: Reserved,
    pub max_pods: u32,
    /// Where the node serves the API server ([`serving`]).
    pub serving_address: std::net::SocketAddr,
    /// The pod range the node was configured with, asked for at the Node's creation;
    /// None: the server's node IPAM picks one.
    pub pod_cidr: Option<ipnet::Ipv4Net>,
    /// How pod traffic reaches the other nodes ([`routes`]).
    pub backend: crate::network::routes::Backend,
    /// How often the pods' volumes are brought up to their sources ([`volume_sync`]), as
    /// the kubelet's --sync-frequency.
    pub sync_frequency: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("join {server}: {source}")]
    Join { server: String, source: register::JoinError },
    #[error("--server {0:?} is not an https:// URL")]
    Url(String),
    #[error("API client for {server}: {message}")]
    Client { server: String, message: String },
    #[error("register node {name:?}: {source}")]
    Node { name: String, source: kube::Error },
    #[error("serving the API server: {0}")]
    Serving(#[from] serving::ServingError),
    #[error(
        "node {name:?} was configured with pod range {configured}, but its Node has {given}: \
         drop the configured range (--pod-cidr, NODECTL_POD_CIDR, podCIDR) to take the server's, \
         or delete the Node"
    )]
    PodCidrMismatch { name: String, configured: ipnet::Ipv4Net, given: String },
}

/// A daemon that has joined: its client and what it reports.
pub struct Joined {
    client: kube::Client,
    config: JoinConfig,
    host: Host,
    node_uid: Option<String>,
    /// The endpoint for the API server, bound, and its TLS configuration.
    serving: Option<(tokio::net::TcpListener, Arc<rustls::ServerConfig>)>,
    /// The node's pod range, as its Node has it.
    pod_cidr: ipnet::Ipv4Net,
}

impl Joined {
    pub fn internal_ip(&self) -> Option<IpAddr> {
        self.host.internal_ip
    }

    /// The pod range the Node was given (the bridge's and the address pool's).
    pub fn pod_cidr(&self) -> ipnet::Ipv4Net {
        self.pod_cidr
    }

    pub fn backend(&self) -> crate::network::routes::Backend {
        self.config.backend
    }
}

/// How often the wait for the Node's pod range says what it waits for.
const POD_CIDR_WAIT_LOG: Duration = Duration::from_secs(10);

/// The Node's IPv4 pod range (`spec.podCIDRs`, else `spec.podCIDR`), if it has one.
pub fn node_pod_cidr(node: &Node) -> Option<ipnet::Ipv4Net> {
    let spec = node.spec.as_ref()?;
    let list = spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.iter());
    list.filter_map(|c| c.parse::<ipnet::Ipv4Net>().ok()).next()
}

/// Waits until the Node has a pod range (the server's node IPAM sets it soon after the
/// Node is created), saying every [`POD_CIDR_WAIT_LOG`] why the daemon does not start yet.
async fn wait_for_pod_cidr(nodes: &Api<Node>, name: &str, mut node: Node) -> Result<ipnet::Ipv4Net, AgentError> {
    let started = Instant::now();
    let mut said = Instant::now();
    loop {
        if let Some(range) = node_pod_cidr(&node) {
            return Ok(range);
        }
        if said.elapsed() >= POD_CIDR_WAIT_LOG {
            tracing::warn!(
                node = %name,
                waited_secs = started.elapsed().as_secs(),
                "still waiting for the server to give the Node a pod range (spec.podCIDR); is its --cluster-cidr full?"
            );
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        node = nodes.get(name).await.map_err(|source| AgentError::Node { name: name.to_string(), source })?;
    }
}

/// The source address of the route to the server: the node's InternalIP. A UDP socket's
/// connect picks the route without sending anything.
fn address_towards(url: &str) -> Option<IpAddr> {
    use std::net::ToSocketAddrs;
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']');
    let target = (host, url.port_or_known_default()?).to_socket_addrs().ok()?.next()?;
    let bind: std::net::SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().ok()?;
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(target).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// The kube-rs client: this server, trusting only the given CA, as this node.
async fn client(config: &JoinConfig, token: String) -> Result<kube::Client, AgentError> {
    use kube::config::{
        AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
    };
    let fail = |message: String| AgentError::Client { server: config.server.clone(), message };
    let kubeconfig = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "nodectl".into(),
            cluster: Some(Cluster {
                server: Some(config.server.clone()),
                certificate_authority: Some(config.ca_file.display().to_string()),
                ..Default::default()
            }),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: config.node_name.clone(),
            auth_info: Some(AuthInfo { token: Some(token.into()), ..Default::default() }),
        }],
        contexts: vec![NamedContext {
            name: "nodectl".into(),
            context: Some(Context {
                cluster: "nodectl".into(),
                user: Some(config.node_name.clone()),
                ..Default::default()
            }),
        }],
        current_context: Some("nodectl".into()),
        ..Default::default()
    };
    let c = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    kube::Client::try_from(c).map_err(|e| fail(e.to_string()))
}

fn now() -> Time {
    Time(chrono::DateTime::<chrono::Utc>::from(SystemTime::now()))
}

/// Registers the node and creates (or labels) its Node: what must work before the daemon
/// says it runs. A wrong join token, CA or URL is an error here.
pub async fn join(root: &std::path::Path, config: JoinConfig) -> Result<Joined, AgentError> {
    if !config.server.starts_with("https://") {
        return Err(AgentError::Url(config.server.clone()));
    }
    let mut host = Host::read();
    host.internal_ip = address_towards(&config.server);
    let ips: Vec<IpAddr> = host.internal_ip.into_iter().collect();
    let token = register::register(root, &config.server, &config.token_file, &config.ca_file, &config.node_name, &ips)
        .await
        .map_err(|source| AgentError::Join { server: config.server.clone(), source })?;
    let tls = serving::tls_config(&register::dir(root), &config.ca_file)?;
    let listener = serving::bind(config.serving_address).await?;
    host.daemon_port = listener
        .local_addr()
        .map_err(|source| serving::ServingError::Listen { addr: config.serving_address, source })?
        .port();
    let client = client(&config, token).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let name = config.node_name.clone();
    let node_err = |source| AgentError::Node { name: name.clone(), source };
    let status = node_status::status(&host, config.reserved, config.max_pods, &now(), &now());
    let node = match nodes.get_opt(&name).await.map_err(node_err)? {
        Some(_) => {
            let labels = json!({"metadata": {"labels": node_status::labels(&name, &host)}});
            nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&labels)).await.map_err(node_err)?
        }
        None => {
            let mut new = node_status::node(&name, &host, status);
            // A configured range is asked for; the server keeps it if it is free and
            // inside its cluster range.
            if let Some(range) = config.pod_cidr {
                new.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
                    pod_cidr: Some(range.to_string()),
                    pod_cidrs: Some(vec![range.to_string()]),
                    ..Default::default()
                });
            }
            nodes.create(&PostParams::default(), &new).await.map_err(node_err)?
        }
    };
    let node_uid = node.metadata.uid.clone();
    if node_pod_cidr(&node).is_none() {
        tracing::info!(node = %name, "waiting for the server to give the Node a pod range");
    }
    let pod_cidr = wait_for_pod_cidr(&nodes, &name, node).await?;
    if let Some(configured) = config.pod_cidr
        && configured != pod_cidr
    {
        return Err(AgentError::PodCidrMismatch { name, configured, given: pod_cidr.to_string() });
    }
    Ok(Joined { node_uid, client, config, host, serving: Some((listener, tls)), pod_cidr })
}

/// Keeps the Node, the Lease and the pods, until the returned future is dropped.
pub async fn run(daemon: Arc<Daemon>, mut joined: Joined) {
    let name = joined.config.node_name.clone();
    let serving =
        joined.serving.take().map(|(listener, tls)| tokio::spawn(serving::serve(daemon.clone(), listener, tls)));
    // Before the pods: their resolv.conf names the cluster DNS from the first one on.
    let dns = dns::start(&daemon, &joined.client);
    let proxy = tokio::spawn(proxy::run(daemon.clone(), joined.client.clone(), name.clone()));
    let routes = tokio::spawn(routes::run(
        daemon.clone(),
        joined.client.clone(),
        name.clone(),
        joined.config.backend,
        joined.host.internal_ip,
    ));
    let sync = pods::PodSync::new(daemon, joined.client.clone(), joined.host.internal_ip);
    let volumes = tokio::spawn(sync.volume_sync().run(joined.config.sync_frequency));
    let pods = tokio::spawn(sync.run(name.clone()));
    let lease = tokio::spawn(keep_lease(joined.client.clone(), name.clone(), joined.node_uid.clone()));
    keep_node(&joined).await;
    pods.abort();
    volumes.abort();
    lease.abort();
    dns.abort();
    proxy.abort();
    routes.abort();
    if let Some(s) = serving {
        s.abort();
    }
}

/// Writes the Node's status when it changed, and at least every [`NODE_REPORT`].
async fn keep_node(joined: &Joined) {
    let nodes: Api<Node> = Api::all(joined.client.clone());
    let name = &joined.config.node_name;
    let since = now();
    let mut last: Option<(k8s_openapi::api::core::v1::NodeStatus, Instant)> = None;
    loop {
        let status = node_status::status(&joined.host, joined.config.reserved, joined.config.max_pods, &since, &now());
        let due = match &last {
            None => true,
            Some((s, at)) => {
                node_status::without_heartbeats(s) != node_status::without_heartbeats(&status)
                    || at.elapsed() >= NODE_REPORT
            }
        };
        if due {
            let patch = json!({ "status": status });
            match nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => last = Some((status, Instant::now())),
                Err(e) => tracing::warn!(node = %name, "writing the node's status: {e}"),
            }
        }
        tokio::time::sleep(NODE_CHECK).await;
    }
}

/// The node's heartbeat: its Lease, renewed every [`LEASE_RENEW`].
async fn keep_lease(client: kube::Client, name: String, node_uid: Option<String>) {
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    loop {
        if let Err(e) = renew(&leases, &name, node_uid.as_deref()).await {
            tracing::warn!(node = %name, "renewing the node's lease: {e}");
        }
        tokio::time::sleep(LEASE_RENEW).await;
    }
}

async fn renew(leases: &Api<Lease>, name: &str, node_uid: Option<&str>) -> Result<(), kube::Error> {
    let spec = LeaseSpec {
        holder_identity: Some(name.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
        renew_time: Some(MicroTime(chrono::DateTime::<chrono::Utc>::from(SystemTime::now()))),
        ..Default::default()
    };
    match leases.get_opt(name).await? {
        Some(mut lease) => {
            lease.spec = Some(spec);
            leases.replace(name, &PostParams::default(), &lease).await?;
        }
        None => {
            // Owned by the Node, as the kubelet's: it goes when the Node goes.
            let owner = node_uid.map(|uid| OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: name.to_string(),
                uid: uid.to_string(),
                ..Default::default()
            });
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: owner.map(|o| vec![o]),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}
