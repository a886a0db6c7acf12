//! The container's side of `create`, run in the forked child. It joins and creates the
//! namespaces, forks once more when a pid namespace needs it (the child of an
//! unshare(CLONE_NEWPID) is the namespace's PID 1) unless the runtime already forked it
//! into that namespace (no user namespace to come first), builds the root filesystem, becomes
//! the spec's process, reports Ready and waits on the exec fifo for `start`.
//!
//! This runs in a copy of a single-threaded process, so it may allocate; every failure
//! goes back to the parent as a message and ends the process with _exit.

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::unistd::ForkResult;
use oci_spec::runtime::LinuxNamespaceType;

use super::cgroups::Cgroup;
use super::mount_sources::{self, MountSources};
use super::spec::{Config, ProcessConfig};
use super::sync::{Channel, Msg};
use super::{apparmor, hooks, namespaces, process, rootfs, seccomp};
use crate::sys;

type Result<T> = std::result::Result<T, String>;

/// What the init calls just before it parks until `start`: the CLI closes its log
/// descriptor there (a copy of the runtime's stderr, or the --log file), so that a caller
/// reading the runtime's stderr to its end is not held until `start`. runc's init closes
/// its log pipe at the same point.
static BEFORE_PARK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what the init calls before it waits for `start` (see BEFORE_PARK); once.
pub fn set_before_park(f: fn()) {
    let _ = BEFORE_PARK.set(f);
}

/// What the parent hands the child across fork.
pub struct InitArgs<'a> {
    pub cfg: &'a Config,
    pub chan: Channel,
    /// The exec fifo, open read-write so opening it never blocks; `start` writes a byte.
    pub fifo: Option<OwnedFd>,
    pub console: Option<UnixStream>,
    pub preserve_fds: i32,
    pub joins: Vec<(LinuxNamespaceType, OwnedFd)>,
    /// Forked straight into the container's pid namespace: no pid namespace to join or
    /// make, and no second fork.
    pub in_pid_ns: bool,
    /// The container's cgroup, which the child enters itself (cheaper than being moved).
    pub cgroup: &'a dyn Cgroup,
    /// Descriptors to become the process's stdin, stdout and stderr instead of ours.
    pub stdio: Option<[RawFd; 3]>,
    /// The AppArmor profile to start the program under (already checked against the host).
    pub apparmor: Option<&'a str>,
}

/// Whether the init needs the state JSON (for hooks it runs itself).
pub fn wants_state(cfg: &Config) -> bool {
    !cfg.hooks.create_container.is_empty() || !cfg.hooks.start_container.is_empty()
}

/// Runs the child to the container's execve; on failure reports and exits.
pub fn child(args: InitArgs<'_>) -> ! {
    let result = take_stdio(args.stdio).and_then(|()| stage_namespaces(&args));
    let msg = match result {
        Ok(()) => "container init returned without exec".to_string(),
        Err(e) => e,
    };
    // After Ready no one listens on the channel: say it on the container's stderr.
    if args.chan.send(&Msg::Error(msg.clone())).is_err() && msg != RUNTIME_GONE {
        eprintln!("nodectl-runtime: container init: {msg}");
    }
    // SAFETY: _exit is always safe; it skips destructors and atexit handlers that belong
    // to the parent's copy of this process.
    unsafe { libc::_exit(1) }
}

/// Puts the caller's descriptors in place of stdio first, so every error after this point
/// reaches the container's stderr as well.
fn take_stdio(stdio: Option<[RawFd; 3]>) -> Result<()> {
    for (target, fd) in stdio.into_iter().flat_map(|s| s.into_iter().enumerate()) {
        if fd as usize == target {
            continue;
        }
        // SAFETY: dup2 onto 0..2 replaces our stdio; no Rust object owns those fds, and the
        // source stays open in the parent, which owns it.
        if unsafe { libc::dup2(fd, target as RawFd) } < 0 {
            return Err(format!("dup2 stdio {target}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The runtime ended the setup (a failed hook, a failed step of its own, a signal): it
/// reports why, so the init says nothing that would come before the real cause.
pub(super) const RUNTIME_GONE: &str = "the runtime went away during setup";

fn recv_expect(chan: &Channel, want: Msg) -> Result<()> {
    match chan.recv() {
        Ok(Some(m)) if m == want => Ok(()),
        Ok(Some(m)) => Err(format!("setup protocol: expected {want:?}, got {m:?}")),
        Ok(None) => Err(RUNTIME_GONE.into()),
        Err(e) => Err(format!("setup channel: {e}")),
    }
}

fn stage_namespaces(a: &InitArgs<'_>) -> Result<()> {
    let cfg = a.cfg;
    // If `create` dies while we are setting up, so do we.
    sys::process::set_parent_death_signal(libc::SIGKILL).map_err(|e| format!("set parent death signal: {e}"))?;
    recv_expect(&a.chan, Msg::Go)?;
    // runc's debug messages for the same steps (runc's debug.bats and exec.bats look for
    // them): its nsexec does what follows up to the pid namespace's child, its Go init()
    // what comes after.
    tracing::debug!("=> nsexec container setup");
    // First: joining a mount namespace may hide /sys/fs/cgroup.
    a.cgroup.enter().map_err(|e| format!("enter the cgroup: {e}"))?;
    let skip_pid = |k: &LinuxNamespaceType| a.in_pid_ns && *k == LinuxNamespaceType::Pid;
    tracing::debug!("init: in its cgroup");
    namespaces::join(a.joins.iter().filter(|(k, _)| !skip_pid(k)))?;
    tracing::debug!("init: joined namespaces");
    if cfg.new_namespace(LinuxNamespaceType::User) {
        namespaces::unshare_user()?;
        a.chan.send(&Msg::MapUsers).map_err(|e| format!("setup channel: {e}"))?;
        recv_expect(&a.chan, Msg::Mapped)?;
        let root_uid = nix::unistd::Uid::from_raw(0);
        let root_gid = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(root_gid, root_gid, root_gid)
            .map_err(|e| format!("become root in the user namespace: {e}"))?;
        nix::unistd::setresuid(root_uid, root_uid, root_uid)
            .map_err(|e| format!("become root in the user namespace: {e}"))?;
    }
    let new: Vec<LinuxNamespaceType> = cfg
        .namespaces
        .iter()
        .filter(|n| n.path.is_none() && n.kind != LinuxNamespaceType::User && !skip_pid(&n.kind))
        .map(|n| n.kind)
        .collect();
    namespaces::unshare_all(&new)?;
    tracing::debug!("init: new namespaces");
    // Before the pid namespace's fork: the runtime opens them in this process's mount
    // namespace, which the init shares.
    let sources = if mount_sources::wanted(cfg) { mount_sources::receive(&a.chan)? } else { MountSources::default() };
    if a.in_pid_ns {
        a.chan.send(&Msg::Pid { pid: 0 }).map_err(|e| format!("setup channel: {e}"))?;
    } else if cfg.namespace(LinuxNamespaceType::Pid).is_some() {
        // SAFETY: this process is single-threaded (a fork of a single-threaded parent).
        match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork into the pid namespace: {e}"))? {
            ForkResult::Parent { child } => {
                a.chan.send(&Msg::Pid { pid: child.as_raw() }).map_err(|e| format!("setup channel: {e}"))?;
                // SAFETY: see `child`.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Child => {}
        }
    } else {
        a.chan.send(&Msg::Pid { pid: nix::unistd::getpid().as_raw() }).map_err(|e| format!("setup channel: {e}"))?;
    }
    stage_container(a, &sources)
}

fn stage_container(a: &InitArgs<'_>, sources: &MountSources) -> Result<()> {
    tracing::debug!("<= nsexec container setup");
    tracing::debug!("child process in init()");
    let cfg = a.cfg;
    let p = &cfg.process;
    // Device nodes and mount targets get exactly the modes the spec asks for.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    let state_json = if wants_state(cfg) {
        match a.chan.recv() {
            Ok(Some(Msg::State(s))) => s.into_bytes(),
            other => return Err(format!("setup protocol: expected the state, got {other:?}")),
        }
    } else {
        Vec::new()
    };
    rootfs::sysctls(cfg)?;
    // Without a mount namespace of its own the container shares ours: nothing is mounted
    // (it would be mounted on the host) and the root is entered by chroot, as runc does.
    let own_mounts = cfg.namespace(LinuxNamespaceType::Mount).is_some();
    if own_mounts {
        rootfs::prepare(cfg, sources)?;
    }
    tracing::debug!("init: mounts done");
    if !cfg_hooks_empty(cfg) {
        a.chan.send(&Msg::RunHooks).map_err(|e| format!("setup channel: {e}"))?;
        recv_expect(&a.chan, Msg::HooksDone)?;
    }
    // createContainer hooks run in the container's namespaces, before pivot_root, in the
    // root filesystem's directory: runc's prepareRootfs chdirs there before them, and hooks
    // such as hooks.bats' name paths in the rootfs relative to it ("./lib/…").
    if !cfg.hooks.create_container.is_empty() {
        nix::unistd::chdir(&cfg.rootfs).map_err(|e| format!("chdir to {}: {e}", cfg.rootfs.display()))?;
    }
    hooks::run_all_inheriting(&cfg.hooks.create_container, &state_json, &p.env)?;
    if own_mounts {
        rootfs::pivot(cfg)?;
    } else {
        rootfs::chroot(cfg)?;
    }
    if let Some(console) = &a.console {
        setup_console(console, p, own_mounts)?;
    }
    tracing::debug!("init: pivoted");
    if own_mounts {
        rootfs::finish(cfg)?;
    }
    tracing::debug!("init: masked");
    set_names(cfg)?;
    let before_exec = || -> Result<()> {
        // startContainer hooks run in the container, after `start`, before the program.
        hooks::run_all_inheriting(&cfg.hooks.start_container, &state_json, &p.env)
    };
    become_process(p, cfg.seccomp.as_ref(), a.apparmor, &a.chan, a.fifo.as_ref(), a.preserve_fds, before_exec)
}

/// The last steps shared by a container's init and an exec'd process: limits, no_new_privs,
/// seccomp, capabilities and user, cwd; Ready to the parent; wait for `start` if there is
/// a fifo; execve.
fn become_process(
    p: &ProcessConfig,
    seccomp_spec: Option<&oci_spec::runtime::LinuxSeccomp>,
    apparmor_profile: Option<&str>,
    chan: &Channel,
    fifo: Option<&OwnedFd>,
    preserve_fds: i32,
    before_exec: impl FnOnce() -> Result<()>,
) -> Result<()> {
    process::set_rlimits(p)?;
    // Where runc applies it: before no_new_privs and seccomp (which could refuse the write);
    // it takes effect at the execve, so hooks run before the program are confined as well.
    if let Some(profile) = apparmor_profile {
        apparmor::change_on_exec(profile)?;
    }
    if p.no_new_privileges {
        sys::process::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    }
    let filter = seccomp_spec.map(seccomp::build).transpose()?;
    let setgroups = fs::read_to_string("/proc/self/setgroups").map(|s| s.trim() != "deny").unwrap_or(true);
    // The cwd check (getcwd) comes before an early filter, which may well refuse getcwd.
    let in_cwd = process::enter_cwd(p)?;
    if let (Some(f), false) = (&filter, p.no_new_privileges) {
        // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while we
        // still have it.
        hand_over_listener(chan, seccomp::load(f)?)?;
    }
    process::drop_bounding(p)?;
    process::set_user_and_caps(p, setgroups)?;
    if !in_cwd {
        // Only the user may enter it; if it may not either, that is the error, as with
        // runc. (An early seccomp filter that refuses getcwd fails this one: rare.)
        process::enter_cwd_as_user(p)?;
    }
    let program = process::find_executable(p)?;
    // Cleared before Ready, not after: once it has Ready the runtime may exit at once,
    // and if it did before we cleared the signal, we would be killed as a created
    // container. Should the runtime die before Ready, the send fails and we exit.
    sys::process::set_parent_death_signal(0).map_err(|e| format!("clear parent death signal: {e}"))?;
    if let (Some(f), true) = (&filter, p.no_new_privileges) {
        // As late as runc loads it (standard_init_linux.go, setns_init_linux.go): after
        // everything that sets the process up, before Ready, so a failure is still
        // `create`'s error, and so before the wait for `start` and the startContainer
        // hooks, which run under the filter like the program itself (without
        // no_new_privs the filter came earlier still: the hooks were filtered either way).
        hand_over_listener(chan, seccomp::load(f)?)?;
    }
    tracing::debug!("init: closing the pipe to signal completion");
    chan.send(&Msg::Ready).map_err(|e| format!("setup channel: {e}"))?;
    // From here on no one is listening: the parent has gone (or is waiting on us).
    if let Some(fifo) = fifo {
        if let Some(f) = BEFORE_PARK.get() {
            f();
        }
        // Parked until `start`, possibly for long: hold as little memory as we can.
        process::shed_clean_file_pages();
        wait_for_start(fifo)?;
    }
    before_exec()?;
    Err(process::exec(p, &program, preserve_fds))
}

/// Sends the seccomp notify listener (if the profile made one) to the runtime, which
/// passes it to the agent, and waits until it has: a notified syscall of ours blocks until
/// the agent answers, so the agent must have the listener before we go on. Our copy is
/// closed before anything else runs (hooks, the program), as runc closes its copy.
fn hand_over_listener(chan: &Channel, listener: Option<OwnedFd>) -> Result<()> {
    let Some(listener) = listener else { return Ok(()) };
    chan.send_with_fds(&Msg::SeccompFd, &[listener.as_fd()]).map_err(|e| format!("setup channel: {e}"))?;
    recv_expect(chan, Msg::SeccompDone)?;
    drop(listener);
    Ok(())
}

/// What the parent hands an exec'd process's child across fork.
pub struct ExecArgs<'a> {
    pub process: &'a ProcessConfig,
    pub seccomp: Option<&'a oci_spec::runtime::LinuxSeccomp>,
    pub chan: Channel,
    pub console: Option<UnixStream>,
    pub preserve_fds: i32,
    /// The container init's namespaces that differ from ours, user first.
    pub joins: Vec<(LinuxNamespaceType, OwnedFd)>,
    /// The container's cgroup, entered before the namespaces.
    pub cgroup: &'a dyn Cgroup,
    pub stdio: Option<[RawFd; 3]>,
    pub apparmor: Option<&'a str>,
}

/// `exec`'s child: join the container's namespaces, fork into its pid namespace, become
/// the process. On failure reports and exits.
pub fn exec_child(a: ExecArgs<'_>) -> ! {
    let msg = match exec_stages(&a) {
        Ok(()) => "exec returned without running the program".to_string(),
        Err(e) => e,
    };
    if a.chan.send(&Msg::Error(msg.clone())).is_err() && msg != RUNTIME_GONE {
        eprintln!("nodectl-runtime: exec: {msg}");
    }
    // SAFETY: see `child`.
    unsafe { libc::_exit(1) }
}

fn exec_stages(a: &ExecArgs<'_>) -> Result<()> {
    take_stdio(a.stdio)?;
    sys::process::set_parent_death_signal(libc::SIGKILL).map_err(|e| format!("set parent death signal: {e}"))?;
    recv_expect(&a.chan, Msg::Go)?;
    tracing::debug!("=> nsexec container setup");
    a.cgroup.enter().map_err(|e| format!("enter the container's cgroup: {e}"))?;
    namespaces::join(&a.joins)?;
    // SAFETY: single-threaded, as in stage_namespaces.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork into the pid namespace: {e}"))? {
        ForkResult::Parent { child } => {
            a.chan.send(&Msg::Pid { pid: child.as_raw() }).map_err(|e| format!("setup channel: {e}"))?;
            // SAFETY: see `child`.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Child => {}
    }
    tracing::debug!("<= nsexec container setup");
    tracing::debug!("child process in init()");
    if let Some(console) = &a.console {
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
        setup_console(console, a.process, false)?;
    }
    become_process(a.process, a.seccomp, a.apparmor, &a.chan, None, a.preserve_fds, || {
        // runc's setns init says this last (exec.bats looks for it).
        tracing::debug!("setns_init: about to exec");
        Ok(())
    })
}

fn cfg_hooks_empty(cfg: &Config) -> bool {
    cfg.hooks.prestart.is_empty() && cfg.hooks.create_runtime.is_empty()
}

fn wait_for_start(fifo: &OwnedFd) -> Result<()> {
    let mut f = fs::File::from(fifo.try_clone().map_err(|e| format!("exec fifo: {e}"))?);
    let mut byte = [0u8; 1];
    loop {
        match f.read(&mut byte) {
            Ok(1) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("wait for start: {e}")),
        }
    }
}

fn set_names(cfg: &Config) -> Result<()> {
    // A uts namespace joined by path counts: the name is set there, as runc does. Only the
    // runtime's own (inherited) one is refused.
    let own_uts = cfg.namespace(LinuxNamespaceType::Uts).is_some();
    if let Some(h) = &cfg.hostname {
        if !own_uts {
            return Err("hostname: setting it needs a uts namespace in linux.namespaces".into());
        }
        nix::unistd::sethostname(h).map_err(|e| format!("sethostname {h:?}: {e}"))?;
    }
    if let Some(d) = &cfg.domainname {
        if !own_uts {
            return Err("domainname: setting it needs a uts namespace in linux.namespaces".into());
        }
        // SAFETY: d points to d.len() valid bytes.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(format!("setdomainname {d:?}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// A pty made inside the container's devpts: the slave becomes our stdio and controlling
/// terminal (and /dev/console), the master goes to whoever listens on --console-socket.
fn setup_console(console: &UnixStream, p: &ProcessConfig, as_dev_console: bool) -> Result<()> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    let master = open("/dev/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("open /dev/ptmx: {e}"))?;
    sys::tty::unlock_pty(master.as_fd()).map_err(|e| format!("unlock pty: {e}"))?;
    let n = sys::tty::pty_number(master.as_fd()).map_err(|e| format!("pty number: {e}"))?;
    let slave_path = format!("/dev/pts/{n}");
    let slave = open(slave_path.as_str(), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("open {slave_path}: {e}"))?;
    // The process's terminal is its own, as runc leaves it (fixStdioPermissions): owned
    // by its uid, in the group devpts gave the slave (tty, 5, with the default spec's
    // gid=5). A uid the user namespace does not map (EINVAL), an owner it does not map
    // (EPERM) or a read-only devpts (EROFS) leave it as it is, as with runc.
    match nix::unistd::fchown(&slave, Some(nix::unistd::Uid::from_raw(p.uid)), None) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EPERM | nix::errno::Errno::EROFS) => {}
        Err(e) => return Err(format!("chown {slave_path} to uid {}: {e}", p.uid)),
    }
    if let Some((rows, cols)) = p.console_size {
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one winsize struct from the pointer we pass.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    // /dev/console is the pty, as runc and crun make it.
    if as_dev_console && Path::new("/dev").is_dir() {
        let console_path = Path::new("/dev/console");
        if !console_path.exists() {
            let _ = fs::File::create(console_path);
        }
        let _ = nix::mount::mount(
            Some(slave_path.as_str()),
            console_path,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        );
    }
    let iov = [std::io::IoSlice::new(slave_path.as_bytes())];
    let fds = [master.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(console.as_raw_fd(), &iov, &cmsg, nix::sys::socket::MsgFlags::empty(), None)
        .map_err(|e| format!("send pty to the console socket: {e}"))?;
    drop(master);
    for target in 0..3 {
        // SAFETY: dup2 onto 0..2 replaces our stdio; no Rust object owns those fds.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(format!("dup2 pty: {}", std::io::Error::last_os_error()));
        }
    }
    sys::tty::set_controlling_tty(0).map_err(|e| format!("make the pty our controlling terminal: {e}"))?;
    Ok(())
}
