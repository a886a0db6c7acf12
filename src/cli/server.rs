//! `nodectl server`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::server::store::etcd::Tls;

#[derive(Args)]
pub struct ServerArgs {
    /// Where the store, certificates, tokens and admin.kubeconfig live (default ROOT/server).
    #[arg(long, env = "NODECTL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address and port to serve the API on.
    #[arg(long, env = "NODECTL_LISTEN", default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// The address the `kubernetes` Service's endpoints give for this server, as
    /// kube-apiserver's flag (default: the --listen address, or the host's default route's).
    #[arg(long, env = "NODECTL_ADVERTISE_ADDRESS", value_name = "IP")]
    advertise_address: Option<std::net::Ipv4Addr>,
    /// Keep the objects in etcd, at these members (comma-separated http://HOST:PORT),
    /// instead of the embedded SQLite store in the data dir.
    #[arg(long, env = "NODECTL_ETCD", value_delimiter = ',', value_name = "URLS")]
    etcd: Vec<String>,
    /// The certificates (PEM) of the CAs that sign https:// etcd members' serving
    /// certificates, as kube-apiserver's flag; without it the system's roots are trusted.
    #[arg(long, env = "NODECTL_ETCD_CAFILE", value_name = "FILE", requires = "etcd")]
    etcd_cafile: Option<PathBuf>,
    /// A client certificate (PEM) shown to https:// etcd members that ask for one (mutual
    /// TLS), as kube-apiserver's flag; with --etcd-keyfile.
    #[arg(long, env = "NODECTL_ETCD_CERTFILE", value_name = "FILE", requires_all = ["etcd", "etcd_keyfile"])]
    etcd_certfile: Option<PathBuf>,
    /// The private key (PEM) of --etcd-certfile, as kube-apiserver's flag.
    #[arg(long, env = "NODECTL_ETCD_KEYFILE", value_name = "FILE", requires_all = ["etcd", "etcd_certfile"])]
    etcd_keyfile: Option<PathBuf>,
    /// How long Events (core/v1 and events.k8s.io/v1) are kept after their last write, as
    /// kube-apiserver's flag (a duration: 1h, 30m, 90s).
    #[arg(long, value_parser = super::daemon::duration, default_value = "1h")]
    event_ttl: Duration,
    /// The range Services' cluster IPs come from (IPv4); its first address is the
    /// `kubernetes` Service's.
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/12", value_parser = ipv4_range)]
    service_cluster_ip_range: ipnet::Ipv4Net,
    /// The range the nodes' pod ranges come from (IPv4), as kube-controller-manager's flag.
    #[arg(long, value_name = "CIDR", default_value = "10.244.0.0/16", value_parser = ipv4_network)]
    cluster_cidr: ipnet::Ipv4Net,
    /// The prefix length of each node's pod range (kube's default for IPv4: 24).
    #[arg(long, value_name = "N", default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// The DNS domain of Services and pods, told to the nodes.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// The ports NodePort Services' node ports come from, as kube-apiserver's flag.
    #[arg(long, value_name = "FIRST-LAST", default_value = "30000-32767", value_parser = port_range)]
    service_node_port_range: std::ops::RangeInclusive<u16>,
    /// Give each LoadBalancer Service an address of this range (IPv4) as its
    /// status.loadBalancer.ingress; without it, ServiceLB gives the Ready nodes' addresses.
    #[arg(long, value_name = "CIDR", value_parser = ipv4_network)]
    service_lb_pool: Option<ipnet::Ipv4Net>,
    /// Requests without credentials are the user system:anonymous in the group
    /// system:unauthenticated, as with kube-apiserver's flag (on by default): RBAC decides
    /// what they may do, by default the health checks and /version only. false: they are 401.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    anonymous_auth: bool,
    /// Do not run the scheduler (another one binds pods through pods/binding).
    #[arg(long)]
    disable_scheduler: bool,
    /// Which controllers run, as kube-controller-manager's flag: `*` for all, `NAME` to
    /// add one, `-NAME` to leave one out (known: deployment, disruption, endpoint,
    /// endpointslice, nodeipam, nodelifecycle, podgc, replicaset, servicelb).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// How often the node lifecycle controller looks at the nodes.
    #[arg(long, value_parser = super::daemon::duration, default_value = "5s")]
    node_monitor_period: Duration,
    /// How long a node may go without a heartbeat (Lease renewal or status) before it is
    /// Ready=Unknown, tainted unreachable and its pods marked not ready.
    #[arg(long, value_parser = super::daemon::duration, default_value = "40s")]
    node_monitor_grace_period: Duration,
    /// Nodes per second that get NoExecute taints (their pods evicted) at most.
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f64,
    /// tolerationSeconds of the not-ready NoExecute toleration given to pods that have none.
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds of the unreachable NoExecute toleration given to pods that have none.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    /// Finished pods (Succeeded, Failed) kept at most before the oldest are deleted; 0
    /// keeps them all.
    #[arg(long, default_value_t = 12_500)]
    terminated_pod_gc_threshold: usize,
    /// How often the pod garbage collector looks at pods (kube's fixed 20 s; a node must be
    /// missing for two periods before its pods go).
    #[arg(long, value_parser = super::daemon::duration, default_value = "20s", hide = true)]
    pod_gc_period: Duration,
    /// Stand for leader before running the scheduler and the controllers, so that of
    /// several servers on one etcd exactly one runs them (Leases `kube-scheduler` and
    /// `kube-controller-manager` in kube-system).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    leader_elect: bool,
    /// How long a leader's lease lasts unrenewed before another server takes it.
    #[arg(long, value_parser = super::daemon::duration, default_value = "10s")]
    leader_elect_lease_duration: Duration,
    /// How long a leader tries to renew before it stops leading.
    #[arg(long, value_parser = super::daemon::duration, default_value = "7s")]
    leader_elect_renew_deadline: Duration,
    /// The wait between two tries to win or renew the lease.
    #[arg(long, value_parser = super::daemon::duration, default_value = "2s")]
    leader_elect_retry_period: Duration,
}

/// An IPv4 range given as a flag: a network address and a prefix of at most /29 (a
/// range with room for more than its network, first and broadcast addresses).
fn ipv4_range(s: &str) -> Result<ipnet::Ipv4Net, String> {
    let net: ipnet::Ipv4Net = s.parse().map_err(|e| format!("{s:?} is not an IPv4 CIDR: {e}"))?;
    if net.network() != net.addr() {
        return Err(format!("{s:?} is not a network address (did you mean {}?)", net.trunc()));
    }
    if net.prefix_len() > 29 {
        return Err(format!("{s:?} is too small: a prefix of at most /29 is needed"));
    }
    Ok(net)
}

/// An IPv4 network given as a flag: a network address and a prefix.
fn ipv4_network(s: &str) -> Result<ipnet::Ipv4Net, String> {
    let net: ipnet::Ipv4Net = s.parse().map_err(|e| format!("{s:?} is not an IPv4 CIDR: {e}"))?;
    if net.network() != net.addr() {
        return Err(format!("{s:?} is not a network address (did you mean {}?)", net.trunc()));
    }
    Ok(net)
}

/// A port range given as a flag, `FIRST-LAST` as kube-apiserver's (or one port).
fn port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0);
    match (port(a), port(b)) {
        (Some(first), Some(last)) if first <= last => Ok(first..=last),
        _ => Err(format!("{s:?} is not a port range FIRST-LAST (ports 1-65535, FIRST at most LAST)")),
    }
}

/// The wait between two nodes' NoExecute taints at `rate` nodes a second.
fn eviction_interval(rate: f64) -> Result<Duration> {
    if !(rate.is_finite() && rate > 0.0) {
        anyhow::bail!("--node-eviction-rate: {rate} is not a positive number of nodes per second");
    }
    Duration::try_from_secs_f64(1.0 / rate).context("--node-eviction-rate is too small")
}

/// One of the etcd TLS files, read whole; errors name the flag and the file.
fn read_flag_file(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: reading {}", path.display()))
}

/// The certificates of a PEM file, each checked to be X.509 (rustls would only find out
/// at the first handshake, as a transport error).
fn pem_certificates(flag: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{flag}: {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{flag}: {} holds no PEM CERTIFICATE", path.display());
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert)
            .map_err(|e| anyhow::anyhow!("{flag}: {} holds a certificate that does not parse: {e}", path.display()))?;
    }
    Ok(certs)
}

/// TLS toward etcd from --etcd-cafile, --etcd-certfile and --etcd-keyfile, each file read
/// and checked here so that a bad one is named before any connection is tried. As
/// kube-apiserver, the files serve https:// members only: with http:// members alone they
/// are checked, unused, and a warning says so. etcd-client takes one TLS setting for all
/// members, so https:// and http:// members are not mixed.
fn etcd_tls(args: &ServerArgs) -> Result<Option<Tls>> {
    let https = args.etcd.iter().filter(|e| e.starts_with("https://")).count();
    if https > 0 && https < args.etcd.len() {
        anyhow::bail!("--etcd: {} mixes https:// and http:// members; give all one scheme", args.etcd.join(","));
    }
    let ca = match &args.etcd_cafile {
        Some(path) => {
            let pem = read_flag_file("--etcd-cafile", path)?;
            pem_certificates("--etcd-cafile", path, &pem)?;
            Some(pem)
        }
        None => None,
    };
    let identity = match (&args.etcd_certfile, &args.etcd_keyfile) {
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = read_flag_file("--etcd-certfile", cert_path)?;
            let certs = pem_certificates("--etcd-certfile", cert_path, &cert_pem)?;
            let key_pem = read_flag_file("--etcd-keyfile", key_path)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| anyhow::anyhow!("--etcd-keyfile: {} holds no PEM private key: {e}", key_path.display()))?;
            let signer = rustls::crypto::aws_lc_rs::default_provider()
                .key_provider
                .load_private_key(key)
                .map_err(|e| anyhow::anyhow!("--etcd-keyfile: {}: unusable private key: {e}", key_path.display()))?;
            if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
                CertifiedKey::new(certs, signer).keys_match()
            {
                anyhow::bail!(
                    "--etcd-keyfile: {} is not the key of the certificate in --etcd-certfile {}",
                    key_path.display(),
                    cert_path.display()
                );
            }
            Some((cert_pem, key_pem))
        }
        // clap asks for both or neither.
        _ => None,
    };
    if https == 0 {
        if ca.is_some() || identity.is_some() {
            tracing::warn!(
                "--etcd-cafile, --etcd-certfile and --etcd-keyfile are for https:// members and no --etcd member \
                 is one: etcd is reached without TLS"
            );
        }
        return Ok(None);
    }
    if ca.is_none() {
        tracing::info!("no --etcd-cafile: etcd's serving certificates are checked against the system's roots");
    }
    Ok(Some(Tls { ca, identity }))
}

pub fn run(root: &Path, args: ServerArgs) -> Result<i32> {
    let etcd_tls = etcd_tls(&args)?;
    let data_dir = args.data_dir.unwrap_or_else(|| root.join("server"));
    if args.event_ttl.is_zero() {
        anyhow::bail!("--event-ttl: must be longer than 0s");
    }
    let controllers = crate::server::controllers::selected(&args.controllers)?;
    let network = crate::server::registry::cluster_config::ClusterNetwork {
        cluster_cidr: args.cluster_cidr,
        node_cidr_mask_size: args.node_cidr_mask_size,
        service_cidr: args.service_cluster_ip_range,
        cluster_domain: args.cluster_domain,
        node_ports: args.service_node_port_range,
        service_lb_pool: args.service_lb_pool,
    };
    crate::server::registry::nodeport::set_range(network.node_ports.clone());
    network.check()?;
    if crate::model::names::name_problem(&network.cluster_domain, false).is_some() {
        anyhow::bail!("--cluster-domain: {:?} is not a DNS domain name", network.cluster_domain);
    }
    let leader_election = if args.leader_elect {
        let settings = crate::server::leader::Settings {
            lease: args.leader_elect_lease_duration,
            renew_deadline: args.leader_elect_renew_deadline,
            retry: args.leader_elect_retry_period,
        };
        settings.check()?;
        Some(settings)
    } else {
        None
    };
    let config = crate::server::Config {
        data_dir,
        listen: args.listen,
        etcd: args.etcd,
        etcd_tls,
        disable_scheduler: args.disable_scheduler,
        controllers,
        node_lifecycle: crate::server::controllers::nodelifecycle::Settings {
            period: args.node_monitor_period,
            grace: args.node_monitor_grace_period,
            taint_interval: eviction_interval(args.node_eviction_rate)?,
        },
        pod_gc: crate::server::controllers::podgc::Settings {
            period: args.pod_gc_period,
            terminated_threshold: args.terminated_pod_gc_threshold,
        },
        leader_election,
        network,
        advertise_address: args.advertise_address,
        event_ttl: args.event_ttl,
        anonymous_auth: args.anonymous_auth,
    };
    crate::server::registry::clusterip::set_range(args.service_cluster_ip_range);
    crate::server::registry::kinds::set_default_tolerations(
        args.default_not_ready_toleration_seconds,
        args.default_unreachable_toleration_seconds,
    );
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the event loop")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        // On SIGINT or SIGTERM the server gives its leader leases up before it exits.
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        crate::server::run(config, shutdown).await?;
        Ok(0)
    })
}
