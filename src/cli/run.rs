//! `nodectl run FILE` and `nodectl gc`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::node::config;
use crate::node::pod::{self, RunOptions};
use crate::node::sandbox;

/// Where pods get their network. Flags win over the environment, the environment over the
/// config file: `node::config` decides, clap only reads the flags.
#[derive(Args, Clone, Debug)]
pub struct NetArgs {
    /// The bridge pods are attached to (default nodectl0; also NODECTL_BRIDGE).
    #[arg(long, value_name = "NAME")]
    bridge: Option<String>,
    /// The range pod addresses come from (default 10.88.0.0/16; also NODECTL_POD_CIDR).
    #[arg(long = "pod-cidr", value_name = "CIDR")]
    pod_cidr: Option<String>,
    /// A YAML or JSON file with `bridge:` and `podCIDR:` (also NODECTL_CONFIG; default
    /// ROOT/config.yaml, if there).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl NetArgs {
    fn flags(&self) -> config::Flags {
        config::Flags { bridge: self.bridge.clone(), pod_cidr: self.pod_cidr.clone(), config: self.config.clone() }
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// The Pod manifest (YAML or JSON; it may also carry the ConfigMaps and Secrets the Pod uses).
    file: PathBuf,
    /// Hand the pod to the node daemon instead of running it in the foreground.
    #[arg(long, short = 'd')]
    detach: bool,
    /// The delay before a container's first restart, in seconds; it doubles up to 300.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    restart_backoff: f64,
    #[command(flatten)]
    net: NetArgs,
}

pub fn run(root: &Path, args: RunArgs) -> Result<i32> {
    // First, before anything else runs: every container init is a fork of this process,
    // so the runtime refuses to create one from a writable binary (CVE-2019-5736).
    crate::sys::exe::reexec_sealed().context("re-execute from a read-only copy of our binary")?;
    if args.detach {
        bail!(
            "--detach hands the pod to the node daemon (`nodectl daemon`), which this version does not have yet; run it in the foreground without --detach"
        );
    }
    if !(args.restart_backoff.is_finite() && args.restart_backoff >= 0.0) {
        bail!("--restart-backoff: {} is not a number of seconds", args.restart_backoff);
    }
    let manifest = crate::model::manifest::load(&args.file)?;
    clean_abandoned(root);
    let opts = RunOptions {
        root: root.to_path_buf(),
        network: config::net_config(root, &args.net.flags())?,
        restart_backoff: Duration::from_secs_f64(args.restart_backoff),
        pull: crate::image::pull::PullOptions::from_environment(root),
    };
    let name = manifest.pod.metadata.name.clone().unwrap_or_default();
    pod::run(&opts, &manifest).with_context(|| format!("pod \"{name}\""))
}

/// Removes pods whose `nodectl run` was killed, saying so on stderr.
pub fn clean_abandoned(root: &Path) {
    let report = sandbox::gc(root);
    // Written without eprintln!, which panics (and aborts) if stderr is a closed pipe.
    let mut err = std::io::stderr();
    for key in &report.pods {
        let _ = writeln!(err, "nodectl: removed the remains of pod {key}, whose nodectl run was killed");
    }
    for e in &report.errors {
        let _ = writeln!(err, "nodectl: warning: cleaning up: {e}");
    }
}

pub fn gc(root: &Path) -> Result<i32> {
    let report = sandbox::gc(root);
    for key in &report.pods {
        let _ = writeln!(std::io::stdout(), "removed pod {key}");
    }
    for e in &report.errors {
        let _ = writeln!(std::io::stderr(), "nodectl: gc: {e}");
    }
    Ok(if report.errors.is_empty() { 0 } else { 1 })
}
