//! `nodectl run FILE` and `nodectl gc`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::foreground::{self, RunOptions};
use crate::node::config;
use crate::node::crilog::{self, Rotation};
use crate::node::{pod_state, sandbox};
use std::os::fd::FromRawFd;

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
    /// Sysctls pods may set beyond the kubelet's safe set, comma-separated names or
    /// `prefix*` patterns of a pod's own namespaces (`kernel.msg*,net.core.somaxconn`; also
    /// `allowedUnsafeSysctls:` in the config file).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    allowed_unsafe_sysctls: Option<Vec<String>>,
}

impl NetArgs {
    pub fn flags(&self) -> config::Flags {
        config::Flags {
            bridge: self.bridge.clone(),
            pod_cidr: self.pod_cidr.clone(),
            config: self.config.clone(),
            allowed_unsafe_sysctls: self.allowed_unsafe_sysctls.clone(),
        }
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
    logs: LogArgs,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    socket: super::local::SocketArgs,
}

/// Where containers' logs rotate (ROOT/pods/UID/logs/CONTAINER/RESTART.log), as the
/// kubelet's containerLogMaxSize and containerLogMaxFiles say.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// The size a container's log file grows to before it is rotated (a quantity: 10Mi).
    #[arg(long = "container-log-max-size", value_name = "SIZE", default_value = "10Mi")]
    max_size: String,
    /// How many log files of a container are kept, the current one included (at least 1).
    #[arg(long = "container-log-max-files", value_name = "N", default_value_t = 5)]
    max_files: u32,
}

impl LogArgs {
    pub fn rotation(&self) -> Result<Rotation> {
        let size = crate::model::quantity::memory_bytes(&self.max_size)
            .map_err(|e| anyhow::anyhow!("--container-log-max-size: {e}"))?;
        if size < 1024 {
            bail!("--container-log-max-size: {} is less than 1Ki", self.max_size);
        }
        if self.max_files == 0 {
            bail!("--container-log-max-files: 0: at least the current file is kept");
        }
        Ok(Rotation { max_size: size as u64, max_files: self.max_files })
    }
}

/// `nodectl monitor UID`: how the owner of a pod starts its monitor.
#[derive(Args)]
pub struct MonitorArgs {
    uid: String,
    /// Die with this process, our parent (the foreground `nodectl run`).
    #[arg(long, value_name = "PID")]
    owner: Option<i32>,
    #[arg(long, value_name = "BYTES", default_value_t = crilog::DEFAULT_MAX_SIZE)]
    log_max_size: u64,
    #[arg(long, value_name = "N", default_value_t = crilog::DEFAULT_MAX_FILES)]
    log_max_files: u32,
}

/// The control connection a new monitor gets from its owner, on fd 3.
const CONTROL_FD: i32 = 3;

pub fn monitor(root: &Path, args: MonitorArgs) -> Result<i32> {
    // The monitor forks the containers' inits (CVE-2019-5736: only from a sealed binary).
    crate::sys::exe::reexec_sealed().context("re-execute from a read-only copy of our binary")?;
    if !pod_state::uid_is_valid(&args.uid) {
        bail!("{:?} is not a pod UID", args.uid);
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is a valid out-pointer; a descriptor that is not open gives EBADF.
    let stat_ok = unsafe { libc::fstat(CONTROL_FD, st.as_mut_ptr()) } == 0;
    // SAFETY: read only when fstat succeeded and so filled it in.
    let is_socket = stat_ok && unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFSOCK;
    let control = match is_socket {
        true => {
            // SAFETY: fd 3 is open (fstat succeeded), a socket our spawner put there for us,
            // and nothing else in this process owns it.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(CONTROL_FD) };
            // Never inherited by a container.
            nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
            Some(fd)
        }
        false => None,
    };
    Ok(crate::node::monitor::main(crate::node::monitor::Options {
        root: root.to_path_buf(),
        uid: args.uid,
        control,
        owner: args.owner,
        rotation: Rotation { max_size: args.log_max_size.max(1024), max_files: args.log_max_files.max(1) },
    }))
}

pub fn run(root: &Path, args: RunArgs) -> Result<i32> {
    // First, before anything else runs: every container init is a fork of this process,
    // so the runtime refuses to create one from a writable binary (CVE-2019-5736).
    crate::sys::exe::reexec_sealed().context("re-execute from a read-only copy of our binary")?;
    if args.detach {
        return super::pods::send(root, &args.socket, &args.file, false);
    }
    if !(args.restart_backoff.is_finite() && args.restart_backoff >= 0.0) {
        bail!("--restart-backoff: {} is not a number of seconds", args.restart_backoff);
    }
    let manifest = crate::model::manifest::load(&args.file)?;
    clean_abandoned(root);
    let settings = config::settings(root, &args.net.flags())?;
    let opts = RunOptions {
        root: root.to_path_buf(),
        network: settings.network,
        allowed_unsafe_sysctls: settings.allowed_unsafe_sysctls,
        restart_backoff: Duration::from_secs_f64(args.restart_backoff),
        pull: crate::image::pull::PullOptions::from_environment(root),
        log_rotation: args.logs.rotation()?,
        cluster_dns: Default::default(),
    };
    let name = manifest.pod.metadata.name.clone().unwrap_or_default();
    foreground::run(&opts, manifest).with_context(|| format!("pod \"{name}\""))
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
    let mut errors = report.errors;
    match remove_node_network(root) {
        Ok(removed) => {
            for what in removed {
                let _ = writeln!(std::io::stdout(), "removed {what}");
            }
        }
        Err(e) => errors.push(format!("{e:#}")),
    }
    for e in &errors {
        let _ = writeln!(std::io::stderr(), "nodectl: gc: {e}");
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

/// What a joined daemon set up for the bridge's pods, once nothing needs it: no daemon
/// runs on this root (a stopped one's rules keep serving its pods until it is back) and
/// no pod has an address on the bridge: its Service table, its masquerade table, the
/// routes to other nodes' pods and the VXLAN device. What was removed, to say.
fn remove_node_network(root: &Path) -> Result<Vec<String>> {
    use crate::network::{self, masquerade, routes, services, vxlan};
    let lock = root.join("daemon.lock");
    let daemon_runs = lock.exists()
        && crate::sys::lock::FileLock::try_exclusive(&lock)
            .with_context(|| format!("lock {}", lock.display()))?
            .is_none();
    if daemon_runs {
        return Ok(Vec::new());
    }
    let settings = config::settings(root, &config::Flags::default())?;
    let cfg = settings.network;
    if !network::allocations(&cfg).context("the pod network's addresses")?.is_empty() {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    if services::delete_table(&cfg.bridge)? {
        removed.push(format!("nftables table ip {}", services::table_name(&cfg.bridge)));
    }
    if masquerade::delete_table(&cfg.bridge)? {
        removed.push(format!("nftables table ip {}", masquerade::table_name(&cfg.bridge)));
    }
    // Routes to other nodes' pods are of no use without pods here; the protocol number
    // says which are ours.
    let (routes, device) = routes::remove_all(&cfg.bridge)?;
    if routes > 0 {
        removed.push(format!("{routes} routes of protocol {}", routes::PROTOCOL));
    }
    if device {
        removed.push(format!("VXLAN device {}", vxlan::device_name(&cfg.bridge)));
    }
    Ok(removed)
}
