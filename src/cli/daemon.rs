//! `nodectl daemon`: the node daemon in the foreground (a service manager runs it).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use super::local::SocketArgs;
use super::run::{LogArgs, NetArgs};
use crate::node::config;
use crate::node::daemon::{Daemon, api};
use crate::node::owner::PodOptions;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The delay before a container's first restart, in seconds; it doubles up to 300.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    restart_backoff: f64,
    /// Serve Prometheus metrics (`/metrics`) on this TCP address too, e.g. 127.0.0.1:10255.
    #[arg(long, value_name = "ADDRESS:PORT")]
    metrics_address: Option<std::net::SocketAddr>,
    /// How the daemon logs: text, or JSON lines.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    logs: LogArgs,
    #[command(flatten)]
    net: NetArgs,
}

pub fn run(root: &Path, args: DaemonArgs) -> Result<i32> {
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
    super::run::clean_abandoned(root);
    let opts = PodOptions {
        root: root.to_path_buf(),
        network: config::net_config(root, &args.net.flags())?,
        restart_backoff: Duration::from_secs_f64(args.restart_backoff),
        pull: crate::image::pull::PullOptions::from_environment(root),
        log_rotation: args.logs.rotation()?,
    };
    let daemon = Daemon::open(opts)?;
    // What a daemon before us kept goes on where it was.
    for problem in daemon.recover() {
        tracing::warn!("{problem}");
    }
    let socket = args.socket.path(root);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("tokio runtime")?;
    rt.block_on(async {
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        tracing::info!(socket = %socket.display(), "serving");
        if let Some(addr) = args.metrics_address {
            // Bound before the socket answers, so a bad address fails the start.
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--metrics-address {addr}"))?;
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
