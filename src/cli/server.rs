//! `nodectl server`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct ServerArgs {
    /// Where the store, certificates, tokens and admin.kubeconfig live (default ROOT/server).
    #[arg(long, env = "NODECTL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address and port to serve the API on.
    #[arg(long, env = "NODECTL_LISTEN", default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Keep the objects in etcd, at these members (comma-separated http://HOST:PORT),
    /// instead of the embedded SQLite store in the data dir.
    #[arg(long, env = "NODECTL_ETCD", value_delimiter = ',', value_name = "URLS")]
    etcd: Vec<String>,
    /// Do not run the scheduler (another one binds pods through pods/binding).
    #[arg(long)]
    disable_scheduler: bool,
    /// Which controllers run, as kube-controller-manager's flag: `*` for all, `NAME` to
    /// add one, `-NAME` to leave one out (known: deployment, endpoint, endpointslice,
    /// replicaset).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
}

pub fn run(root: &Path, args: ServerArgs) -> Result<i32> {
    let data_dir = args.data_dir.unwrap_or_else(|| root.join("server"));
    let controllers = crate::server::controllers::selected(&args.controllers)?;
    let config = crate::server::Config {
        data_dir,
        listen: args.listen,
        etcd: args.etcd,
        disable_scheduler: args.disable_scheduler,
        controllers,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the event loop")?;
    runtime.block_on(async {
        tokio::select! {
            r = crate::server::run(config) => r.map(|_| 0).map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Ok(0),
            _ = async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler").recv().await } => Ok(0),
        }
    })
}
