//! `nodectl daemon`: the node daemon in the foreground (a service manager runs it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use super::local::SocketArgs;
use super::run::{LogArgs, NetArgs};
use crate::node::daemon::{Daemon, api};
use crate::node::image_gc;
use crate::node::owner::PodOptions;
use crate::node::{agent, config};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--pod-network-backend` (network::routes::Backend, which knows no flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PodNetworkBackend {
    Auto,
    HostGw,
    Vxlan,
}

impl From<PodNetworkBackend> for crate::network::routes::Backend {
    fn from(b: PodNetworkBackend) -> Self {
        match b {
            PodNetworkBackend::Auto => Self::Auto,
            PodNetworkBackend::HostGw => Self::HostGw,
            PodNetworkBackend::Vxlan => Self::Vxlan,
        }
    }
}

#[derive(Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The delay before a container's first restart, in seconds; it doubles up to 300.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    restart_backoff: f64,
    /// Serve Prometheus metrics (`/metrics`) on this TCP address too, e.g. 127.0.0.1:10255
    /// (with port 0 the kernel picks one; the address is logged at info level).
    #[arg(long, value_name = "ADDRESS:PORT")]
    metrics_address: Option<std::net::SocketAddr>,
    /// Remove unused images when the image store's filesystem is fuller than this percent
    /// (100: never), as the kubelet's imageGCHighThresholdPercent.
    #[arg(long, value_name = "PERCENT", default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_high_threshold: u8,
    /// ... down to this percent (imageGCLowThresholdPercent); below the high threshold.
    #[arg(long, value_name = "PERCENT", default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_low_threshold: u8,
    /// Never remove an image imported more recently than this (imageMinimumGCAge): 2m, 90s.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = duration)]
    image_minimum_gc_age: Duration,
    /// How often the disk is checked for image garbage collection (also before each pod).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = duration)]
    image_gc_period: Duration,
    /// How the daemon logs: text, or JSON lines.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    logs: LogArgs,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    join: JoinArgs,
    #[command(flatten)]
    fake: FakeArgs,
}

/// Fake nodes, as kwok makes them: no pods run on this machine.
#[derive(Args)]
pub struct FakeArgs {
    /// Register --count fake nodes that renew their Leases and report the pods bound to them
    /// Running without starting anything (for scale tests and `make bench`).
    #[arg(long, requires = "kubeconfig", conflicts_with = "server")]
    fake: bool,
    /// How many fake nodes.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "fake")]
    count: u32,
    /// The credential the fake nodes act with, one for all (the server's admin.kubeconfig).
    #[arg(long, value_name = "FILE", requires = "fake")]
    kubeconfig: Option<PathBuf>,
    /// Fake nodes are named PREFIX-0, PREFIX-1, …
    #[arg(long, value_name = "PREFIX", default_value = "fake-node", requires = "fake")]
    fake_prefix: String,
    /// Each fake node's cpu and memory (its pods: --max-pods), kwok's defaults.
    #[arg(long, value_name = "cpu=Q,memory=Q", default_value = "cpu=32,memory=256Gi", requires = "fake")]
    fake_capacity: String,
}

impl FakeArgs {
    fn config(&self, max_pods: u32) -> Result<Option<crate::node::fake::FakeConfig>> {
        if !self.fake {
            return Ok(None);
        }
        let capacity = agent::node_status::parse_reserved(&self.fake_capacity)
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace("--system-reserved", "--fake-capacity")))?;
        Ok(Some(crate::node::fake::FakeConfig {
            kubeconfig: self.kubeconfig.clone().unwrap_or_default(),
            count: self.count,
            prefix: self.fake_prefix.clone(),
            capacity,
            max_pods,
        }))
    }
}

/// Runs the fake nodes until SIGINT or SIGTERM.
fn run_fake(config: crate::node::fake::FakeConfig) -> Result<i32> {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("tokio runtime")?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        tokio::select! {
            r = crate::node::fake::run(config) => r.map(|()| 0).map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Ok(0),
            _ = term.recv() => Ok(0),
        }
    })
}

/// Joining a cluster: without --server the daemon runs only what its socket is given.
#[derive(Args)]
pub struct JoinArgs {
    /// The API server to join, e.g. https://10.0.0.1:6443: the node registers, keeps its
    /// Node and Lease, and runs the pods bound to it.
    #[arg(long, value_name = "URL", requires_all = ["token_file", "ca_file"])]
    server: Option<String>,
    /// The server's join token (its DATA_DIR/node-token).
    #[arg(long, value_name = "FILE", requires = "server")]
    token_file: Option<PathBuf>,
    /// The server's CA certificate (its DATA_DIR/ca.crt): the only one trusted.
    #[arg(long, value_name = "FILE", requires = "server")]
    ca_file: Option<PathBuf>,
    /// The node's name (default: the hostname).
    #[arg(long, value_name = "NAME", requires = "server")]
    node_name: Option<String>,
    /// What to keep back from pods, as the kubelet's flag: cpu=500m,memory=1Gi.
    #[arg(long, value_name = "cpu=Q,memory=Q", default_value = "")]
    system_reserved: String,
    /// The most pods this node takes (its pods capacity).
    #[arg(long, value_name = "N", default_value_t = 110)]
    max_pods: u32,
    /// Where the node serves the API server container logs (HTTPS, as the kubelet's
    /// --address and --port); port 0 picks a free one. The Node reports the port.
    #[arg(long, value_name = "ADDRESS:PORT", default_value = "0.0.0.0:10250", requires = "server")]
    serving_address: std::net::SocketAddr,
    /// How pod traffic reaches the other nodes' pods: host-gw (a route through the other
    /// node's address; it must be on a subnet of ours), vxlan (a VXLAN overlay, UDP 8472),
    /// or auto (host-gw where it works, VXLAN elsewhere), as flannel's backends.
    #[arg(long, value_enum, default_value = "auto")]
    pod_network_backend: PodNetworkBackend,
    /// How often the running pods' configMap, secret, downwardAPI and projected volumes are
    /// brought up to their sources (and tokens renewed when due), as the kubelet's flag.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = duration, requires = "server")]
    sync_frequency: Duration,
}

impl JoinArgs {
    fn config(&self) -> Result<Option<agent::JoinConfig>> {
        let Some(server) = self.server.clone() else { return Ok(None) };
        if self.sync_frequency.is_zero() {
            bail!("--sync-frequency: must be more than 0");
        }
        let reserved = agent::node_status::parse_reserved(&self.system_reserved)?;
        let node_name = match &self.node_name {
            Some(n) => n.clone(),
            None => nix::unistd::gethostname()
                .context("the hostname (the default --node-name)")?
                .to_string_lossy()
                .to_lowercase(),
        };
        Ok(Some(agent::JoinConfig {
            server,
            token_file: self.token_file.clone().unwrap_or_default(),
            ca_file: self.ca_file.clone().unwrap_or_default(),
            node_name,
            reserved,
            max_pods: self.max_pods,
            serving_address: self.serving_address,
            pod_cidr: None,
            backend: self.pod_network_backend.into(),
            sync_frequency: self.sync_frequency,
        }))
    }
}

/// A duration flag: `2m`, `1m30s`, `90s`, `500ms`, or seconds.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    image_gc::parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration (e.g. 2m, 90s, 500ms)"))
}

pub fn run(root: &Path, args: DaemonArgs) -> Result<i32> {
    // Fake nodes run nothing here: no state root, no sealed binary, no cgroups.
    if let Some(fake) = args.fake.config(args.join.max_pods)? {
        return run_fake(fake);
    }
    // Each pod's monitor is started from /proc/self/exe and forks containers: sealed first.
    crate::sys::exe::reexec_sealed().context("re-execute from a read-only copy of our binary")?;
    // One malloc arena instead of glibc's up to 8 per core: every pod has a thread of its
    // own and, with an arena per thread, 100 pods left 15 arenas of 300-900 KiB each
    // (`make bench`: the daemon with 100 pods 31.2 -> 29.7 MiB RSS). Pod threads mostly
    // wait, so they hardly contend for the one arena.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes the allocator; called before this process starts a thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    if !(args.restart_backoff.is_finite() && args.restart_backoff >= 0.0) {
        bail!("--restart-backoff: {} is not a number of seconds", args.restart_backoff);
    }
    let image_gc =
        image_gc::Policy::new(args.image_gc_high_threshold, args.image_gc_low_threshold, args.image_minimum_gc_age)?;
    if args.image_gc_period.is_zero() {
        bail!("--image-gc-period: must be more than 0");
    }
    let mut join = args.join.config()?;
    super::run::clean_abandoned(root);
    let mut settings = config::settings(root, &args.net.flags())?;
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("tokio runtime")?;
    // Joined, the pod range is the Node's: joining comes before the pod network is set.
    let joined = match join.take() {
        Some(mut join) => {
            join.pod_cidr = settings.pod_cidr_configured.then_some(settings.network.cidr);
            let (server, node) = (join.server.clone(), join.node_name.clone());
            let joined = rt.block_on(agent::join(root, join))?;
            tracing::info!(%server, %node, pod_cidr = %joined.pod_cidr(), "joined the cluster");
            settings.network.cidr = joined.pod_cidr();
            if joined.backend().uses_vxlan() {
                // A pod's packet may cross the VXLAN overlay, whose headers take 50 bytes.
                settings.network.mtu = Some(crate::network::vxlan::MTU);
            }
            Some(joined)
        }
        None => None,
    };
    let opts = PodOptions {
        root: root.to_path_buf(),
        network: settings.network,
        allowed_unsafe_sysctls: settings.allowed_unsafe_sysctls,
        restart_backoff: Duration::from_secs_f64(args.restart_backoff),
        pull: crate::image::pull::PullOptions::from_environment(root),
        log_rotation: args.logs.rotation()?,
        cluster_dns: Default::default(),
    };
    let daemon = Daemon::open(opts)?;
    // What a daemon before us kept goes on where it was.
    for problem in daemon.recover() {
        tracing::warn!("{problem}");
    }
    image_gc::start(&daemon, image_gc, args.image_gc_period).context("start image garbage collection")?;
    let socket = args.socket.path(root);
    rt.block_on(async {
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        if let Some(joined) = joined {
            tokio::spawn(agent::run(daemon.clone(), joined));
        }
        tracing::info!(socket = %socket.display(), "serving");
        if let Some(addr) = args.metrics_address {
            // Bound before the socket answers, so a bad address fails the start.
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--metrics-address {addr}"))?;
            // The bound address, so a port of 0 (the kernel's choice) can be found.
            let addr = listener.local_addr().with_context(|| format!("--metrics-address {addr}"))?;
            tracing::info!(address = %addr, "serving metrics");
            let router = api::metrics_router(daemon.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::warn!("metrics on {addr}: {e}");
                }
            });
        }
        api::serve(daemon, &socket, shutdown).await.map_err(anyhow::Error::from)
    })?;
    // Pods are left running: a daemon that stops is not a node that drains.
    Ok(0)
}
