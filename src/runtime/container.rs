//! The runtime's side of each verb: create (fork the init and drive its setup), start,
//! kill, delete, state, run, pause, resume, update. Runs in a single-threaded process:
//! the only place a container is forked from (docs/architecture.md, decision 2).

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::LinuxNamespaceType;

use super::cgroups::{self, Cgroup, CgroupError, Resources};
use super::init::{self, ExecArgs, InitArgs};
use super::spec::{self, Config, ProcessConfig, SpecError};
use super::state::{self, HooksRecord, Record, StateError, StateRoot, Status};
use super::sync::{self, Msg};
use super::{apparmor, hooks, mount_sources, namespaces, rootfs, seccomp_agent, tty};
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("{op}: {source}")]
    Io { op: String, source: io::Error },
    #[error("container {id}: {message}")]
    Init { id: String, message: String },
    #[error("container {id} is {status}; {verb} needs it {need}")]
    Status { id: String, status: Status, verb: &'static str, need: &'static str },
    #[error(
        "refusing to {verb}: this process runs from a writable binary (/proc/self/exe is not on a read-only mount), which a process in the container could change (CVE-2019-5736); re-execute from a sealed copy first (runtime::sys::reexec_sealed)"
    )]
    NotSealed { verb: &'static str },
    /// runc's words, which its tests and callers look for.
    #[error(
        "container's cgroup unexpectedly frozen: {} says so, and a process put there would stop until it is thawed; thaw it or use another cgroup",
        .0.display()
    )]
    Frozen(PathBuf),
    #[error("cannot exec in a paused container (use --ignore-paused to override): container {id}, {}", .freezer.display())]
    Paused { id: String, freezer: PathBuf },
    /// runc's words for a signal to a stopped container.
    #[error("container not running: container {id} has stopped")]
    NotRunning { id: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

fn io(op: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let op = op.into();
    move |source| RuntimeError::Io { op, source }
}

/// How `create` is asked to make a container, beyond its bundle.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
    /// Parent cgroup (below our own) when the spec has no cgroupsPath; default "nodectl".
    pub cgroup_parent: Option<String>,
    /// The process's stdin, stdout and stderr, if not ours (the caller keeps them open
    /// until `create` returns).
    pub stdio: Option<[RawFd; 3]>,
}

pub struct Runtime {
    pub root: StateRoot,
}

/// The cgroup a record names.
fn cgroup_of(rec: &Record) -> Result<Box<dyn Cgroup>> {
    Ok(cgroups::open(&rec.cgroup, rec.cgroup_parent.as_deref())?)
}

fn cgroup_name(cfg: &Config, id: &str) -> (String, Option<String>) {
    match &cfg.cgroups_path {
        // systemd's slice:prefix:name becomes slice/prefix-name below our own cgroup.
        Some(p) if p.contains(':') => {
            let parts: Vec<&str> = p.split(':').collect();
            (
                format!("{}-{}", parts[1], parts[2]),
                Some(parts[0].trim_start_matches('/').to_string()).filter(|s| !s.is_empty()),
            )
        }
        // An absolute path is taken from the hierarchy's root, as the spec says, whatever
        // the parent; `open` keeps the leading slash to know it.
        Some(p) => (p.clone(), None),
        None => (id.to_string(), None),
    }
}

/// Undoes a half-made container when `create` fails.
struct CreateGuard<'a> {
    root: &'a StateRoot,
    id: String,
    cgroup: Option<Box<dyn Cgroup>>,
    pids: Vec<i32>,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for &pid in &self.pids {
            let _ = sys::process::kill(pid, Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = &self.cgroup {
            kill_all_and_wait(cg.as_ref(), None);
            let _ = cg.destroy();
        }
        let _ = self.root.remove(&self.id);
    }
}

/// Refuses to fork from a threaded process: after fork only async-signal-safe calls are
/// allowed there, and the init does far more (docs/architecture.md, decision 2).
fn ensure_single_threaded() -> Result<()> {
    let threads = sys::process::thread_count();
    if threads > 1 {
        return Err(RuntimeError::Invalid(format!(
            "refusing to fork a container from a process with {threads} threads"
        )));
    }
    Ok(())
}

/// CVE-2019-5736: everything that forks a process into a container must run from a sealed
/// (read-only, private) copy of our binary, or the container reaches the host's binary
/// through /proc/PID/exe of the fork (before its execve, or after an execve of
/// /proc/self/exe) and can chmod, chown or rewrite what root runs next. Checked here, where
/// containers are made, so that no caller (CLI verb, `nodectl run`, a daemon) can forget.
fn ensure_sealed(verb: &'static str) -> Result<()> {
    match sys::exe::exe_is_sealed() {
        Ok(true) => Ok(()),
        Ok(false) => Err(RuntimeError::NotSealed { verb }),
        Err(e) => Err(io("check that /proc/self/exe is sealed")(e)),
    }
}

pub fn state_json(rec: &Record, status: Status) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": rec.oci_version,
        "id": rec.id,
        "status": status,
        "pid": if status == Status::Stopped { 0 } else { rec.pid },
        "bundle": rec.bundle,
        "rootfs": rec.rootfs,
        "created": rec.created,
        "annotations": rec.annotations,
    })
}

impl Runtime {
    pub fn new(root: &Path) -> Runtime {
        Runtime { root: StateRoot::new(root) }
    }

    pub fn create(&self, id: &str, opts: &CreateOptions) -> Result<Record> {
        ensure_sealed("create a container")?;
        state::validate_id(id)?;
        let cfg = spec::load(&opts.bundle)?;
        let console = console_for(&cfg, opts)?;
        self.create_from(id, &cfg, opts, console)
    }

    /// `create` with a checked config and, for a terminal, the socket the pty master goes to.
    pub fn create_from(
        &self,
        id: &str,
        cfg: &Config,
        opts: &CreateOptions,
        console: Option<UnixStream>,
    ) -> Result<Record> {
        ensure_sealed("create a container")?;
        ensure_single_threaded()?;
        tracing::debug!("create {id}: spec loaded");
        let _lock = self.root.reserve(id)?;
        let mut guard =
            CreateGuard { root: &self.root, id: id.to_string(), cgroup: None, pids: Vec::new(), armed: true };

        let fifo_path = self.root.fifo_path(id);
        nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| io(format!("mkfifo {}", fifo_path.display()))(e.into()))?;
        let fifo = OwnedFd::from(
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo_path)
                .map_err(io(format!("open {}", fifo_path.display())))?,
        );

        let (cg_name, cg_parent) = cgroup_name(cfg, id);
        let cg_parent = if cg_name.starts_with('/') { None } else { cg_parent.or_else(|| opts.cgroup_parent.clone()) };
        let cg = cgroups::open(&cg_name, cg_parent.as_deref())?;
        // A frozen cgroup would stop the init as it enters, and `create` would wait for it
        // for ever (runc refuses too). Checked before anything is made, so that a cgroup
        // someone else froze is left as it was...
        if let Some(freezer) = cg.frozen()? {
            return Err(RuntimeError::Frozen(freezer));
        }
        // Another container's processes in it share its limits, and `kill -a`, `ps` and
        // `delete` reach them too. runc 1.1 warns and goes on (1.2 refuses); so do we.
        // A cgroup that does not exist yet has none (the error is that).
        if let Ok(pids) = cg.processes()
            && !pids.is_empty()
        {
            tracing::warn!("container's cgroup is not empty: {} process(es) found", pids.len());
        }
        cg.create()?;
        guard.cgroup = Some(cgroups::open(&cg_name, cg_parent.as_deref())?);
        // ...and again once it exists: a new v1 cgroup below a frozen one is frozen too.
        if let Some(freezer) = cg.frozen()? {
            return Err(RuntimeError::Frozen(freezer));
        }
        cg.apply(&cfg.resources)?;
        tracing::debug!("create {id}: cgroup made");

        let joins = namespaces::open_joins(&cfg.namespaces).map_err(RuntimeError::Invalid)?;
        let (chan, child_chan) = sync::pair().map_err(io("socketpair"))?;
        let apparmor = apparmor::effective(cfg.process.apparmor_profile.as_deref());

        // Without a user namespace (which must come before the pid namespace it owns) we
        // fork straight into the pid namespace, and the init needs no second fork.
        let in_pid_ns =
            cfg.namespace(LinuxNamespaceType::Pid).is_some() && cfg.namespace(LinuxNamespaceType::User).is_none();
        let pid_ns = if in_pid_ns {
            let join = joins.iter().find(|(k, _)| *k == LinuxNamespaceType::Pid).map(|(_, fd)| fd);
            Some(
                namespaces::pid_for_children(join)
                    .map_err(|message| RuntimeError::Init { id: id.to_string(), message })?,
            )
        } else {
            None
        };
        // SAFETY: ensure_single_threaded checked that no other thread exists, so the child
        // may do anything the parent could.
        let forked = unsafe { nix::unistd::fork() };
        let child = match forked.map_err(|e| io("fork")(e.into()))? {
            ForkResult::Child => {
                drop(chan);
                // Ours to restore, not the init's: it must keep its namespace.
                std::mem::forget(pid_ns);
                init::child(InitArgs {
                    cfg,
                    chan: child_chan,
                    fifo: Some(fifo),
                    console,
                    preserve_fds: opts.preserve_fds,
                    joins,
                    in_pid_ns,
                    cgroup: cg.as_ref(),
                    stdio: opts.stdio,
                    apparmor: apparmor.as_deref(),
                })
            }
            ForkResult::Parent { child } => child.as_raw(),
        };
        drop(pid_ns);
        drop(child_chan);
        drop(console);
        drop(joins);
        drop(fifo);
        guard.pids.push(child);
        tracing::debug!("create {id}: forked");

        let mut rec = Record {
            oci_version: cfg.oci_version.clone(),
            id: id.to_string(),
            pid: 0,
            pid_start_time: 0,
            bundle: cfg.bundle.clone(),
            rootfs: cfg.rootfs.clone(),
            // RFC3339Nano in UTC, as runc records it.
            created: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            annotations: cfg.annotations.clone(),
            cgroup: cg_name,
            cgroup_parent: cg_parent,
            paused: false,
            hooks: HooksRecord::from_hooks(&cfg.hooks),
            seccomp: cfg.seccomp.clone(),
            apparmor_profile: apparmor.clone(),
        };
        let fail = |message: String| RuntimeError::Init { id: id.to_string(), message };
        chan.send(&Msg::Go).map_err(|e| fail(format!("setup channel: {e}")))?;
        let mut ready_early = false;
        // A listener that came before the init's pid (from behind the intermediate process).
        let mut listener: Option<OwnedFd> = None;
        loop {
            let (msg, fd) = match chan.recv_with_fds().map_err(|e| fail(format!("setup channel: {e}")))? {
                Some((m, fds)) => (Some(m), fds.into_iter().next()),
                None => (None, None),
            };
            match msg {
                Some(Msg::SeccompFd) => {
                    let fd = fd.ok_or_else(|| fail("setup protocol: SeccompFd without a descriptor".into()))?;
                    if rec.pid == 0 {
                        listener = Some(fd);
                    } else {
                        let state = with_status(state_json(&rec, Status::Created), "creating");
                        give_listener(cfg.seccomp.as_ref(), &chan, rec.pid, state, fd).map_err(fail)?;
                    }
                }
                Some(Msg::MountSources) => {
                    mount_sources::open_for(child, cfg, &chan).map_err(fail)?;
                    chan.send(&Msg::MountSourcesDone).map_err(|e| fail(format!("setup channel: {e}")))?;
                }
                Some(Msg::MapUsers) => {
                    namespaces::write_id_maps(child, &cfg.uid_maps, &cfg.gid_maps).map_err(fail)?;
                    chan.send(&Msg::Mapped).map_err(|e| fail(format!("setup channel: {e}")))?;
                }
                Some(Msg::Pid { pid }) => {
                    let pid = if pid == 0 { child } else { pid };
                    tracing::debug!("create {id}: init is {pid}");
                    rec.pid = pid;
                    rec.pid_start_time = sys::process::start_time(pid).unwrap_or(0);
                    if pid != child {
                        guard.pids.push(pid);
                    }
                    if let Some(adj) = cfg.process.oom_score_adj {
                        rootfs::write_proc(&format!("{pid}/oom_score_adj"), &adj.to_string()).map_err(fail)?;
                    }
                    if let Some(fd) = listener.take() {
                        let state = with_status(state_json(&rec, Status::Created), "creating");
                        give_listener(cfg.seccomp.as_ref(), &chan, pid, state, fd).map_err(fail)?;
                    }
                    if init::wants_state(cfg) {
                        let s = state_json(&rec, Status::Created).to_string();
                        chan.send(&Msg::State(s)).map_err(|e| fail(format!("setup channel: {e}")))?;
                    }
                    if ready_early {
                        tracing::debug!("create {id}: ready");
                        break;
                    }
                }
                Some(Msg::RunHooks) => {
                    // "created": the spec's state is that after lifecycle step 2 (the
                    // environment is made), which is where these hooks come; crun agrees.
                    let s = state_json(&rec, Status::Created).to_string();
                    hooks::run_all_in(&cfg.hooks.prestart, s.as_bytes(), &rec.bundle).map_err(fail)?;
                    hooks::run_all_in(&cfg.hooks.create_runtime, s.as_bytes(), &rec.bundle).map_err(fail)?;
                    chan.send(&Msg::HooksDone).map_err(|e| fail(format!("setup channel: {e}")))?;
                }
                // With an intermediate process, its Pid may come after the init's Ready.
                Some(Msg::Ready) if rec.pid != 0 => {
                    tracing::debug!("create {id}: ready");
                    break;
                }
                Some(Msg::Ready) => ready_early = true,
                Some(Msg::Error(e)) => return Err(fail(e)),
                Some(other) => return Err(fail(format!("setup protocol: unexpected {other:?}"))),
                None => return Err(fail("the container's init exited during setup".into())),
            }
        }
        if rec.pid != child {
            // The intermediate process exits once it has forked the init.
            let _ = waitpid(Pid::from_raw(child), None);
        }
        self.root.save(&rec)?;
        if let Some(pid_file) = &opts.pid_file {
            write_pid_file(pid_file, rec.pid)?;
        }
        guard.armed = false;
        Ok(rec)
    }

    pub fn load(&self, id: &str) -> Result<(Record, Status)> {
        let rec = self.root.load(id)?;
        let status = self.root.status(&rec);
        Ok((rec, status))
    }

    pub fn state(&self, id: &str) -> Result<serde_json::Value> {
        let (rec, status) = self.load(id)?;
        Ok(state_json(&rec, status))
    }

    pub fn start(&self, id: &str) -> Result<()> {
        let _lock = self.root.lock(id)?;
        let (rec, status) = self.load(id)?;
        if status != Status::Created {
            return Err(RuntimeError::Status { id: id.into(), status, verb: "start", need: "created" });
        }
        let fifo_path = self.root.fifo_path(id);
        let mut fifo = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo_path)
            .map_err(io(format!("open {} (is the container's init alive?)", fifo_path.display())))?;
        fifo.write_all(b"0").map_err(io("signal the container to start"))?;
        fs::remove_file(&fifo_path).map_err(io(format!("remove {}", fifo_path.display())))?;
        let s = state_json(&rec, Status::Running).to_string();
        // The spec: a failing poststart hook is logged, and the rest run as if it had not.
        hooks::run_all_warning(&rec.hooks.poststart, s.as_bytes(), id);
        Ok(())
    }

    /// Sends `signal` (0: only check) to the init, or with `all` to every process in the
    /// container's cgroup. As with runc, `all` on a stopped container is not an error
    /// (there is no one left to signal).
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let (rec, status) = self.load(id)?;
        if status == Status::Stopped && all {
            return Ok(());
        }
        if status == Status::Stopped {
            return Err(RuntimeError::NotRunning { id: id.into() });
        }
        if all {
            let cg = cgroup_of(&rec)?;
            for pid in cg.processes()? {
                let _ = sys::process::kill(pid, Signal::try_from(signal).ok());
            }
            return Ok(());
        }
        signal_init(&rec, signal)
    }

    /// Deletes a stopped or created container, or with `force` any; with `force`, one that
    /// does not exist is not an error (runc's delete --force, which callers use to clean up).
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let _lock = match self.root.lock(id) {
            Err(StateError::NotFound(_)) if force => return Ok(()),
            lock => lock?,
        };
        let rec = match self.root.load(id) {
            Ok(r) => r,
            // A directory without a record is what a `create` killed midway leaves.
            Err(StateError::NotFound(_)) => return Ok(self.root.remove(id)?),
            Err(e) => return Err(e.into()),
        };
        let status = self.root.status(&rec);
        // A running or paused container needs --force. A created one is killed and deleted,
        // as runc does: containerd's shim and podman delete created containers that way.
        // (The runtime spec says delete must fail for it, and runtime-tools' `delete`
        // checks that; runc fails that check as we do. See docs/conformance.md.)
        if !force && !matches!(status, Status::Stopped | Status::Created) {
            return Err(RuntimeError::Status { id: id.into(), status, verb: "delete", need: "stopped (or --force)" });
        }
        let cg = cgroup_of(&rec)?;
        if status != Status::Stopped {
            if status == Status::Paused {
                let _ = cg.freeze(false);
            }
            let _ = signal_init(&rec, libc::SIGKILL);
        }
        kill_all_and_wait(cg.as_ref(), Some(&rec));
        cg.destroy()?;
        let s = state_json(&rec, Status::Stopped).to_string();
        hooks::run_all_warning(&rec.hooks.poststop, s.as_bytes(), id);
        self.root.remove(id)?;
        Ok(())
    }

    pub fn pause(&self, id: &str, paused: bool) -> Result<()> {
        let _lock = self.root.lock(id)?;
        let (mut rec, status) = self.load(id)?;
        let (ok, need) =
            if paused { (status == Status::Running, "running") } else { (status == Status::Paused, "paused") };
        if !ok {
            return Err(RuntimeError::Status {
                id: id.into(),
                status,
                verb: if paused { "pause" } else { "resume" },
                need,
            });
        }
        cgroup_of(&rec)?.freeze(paused)?;
        rec.paused = paused;
        self.root.save(&rec)?;
        Ok(())
    }

    pub fn update(&self, id: &str, resources: &Resources) -> Result<()> {
        let (rec, status) = self.load(id)?;
        if status == Status::Stopped {
            return Err(RuntimeError::Status {
                id: id.into(),
                status,
                verb: "update",
                need: "created, running or paused",
            });
        }
        Ok(cgroup_of(&rec)?.apply(resources)?)
    }

    pub fn processes(&self, id: &str) -> Result<Vec<i32>> {
        let (rec, _) = self.load(id)?;
        Ok(cgroup_of(&rec)?.processes()?)
    }

    pub fn stats(&self, id: &str) -> Result<cgroups::Stats> {
        let (rec, _) = self.load(id)?;
        Ok(cgroup_of(&rec)?.stats()?)
    }

    /// create, start, and wait in the foreground: signals we get go to the container's
    /// init; its exit status becomes ours (128+n for a signal); then delete, unless `keep`
    /// (runc's run --keep: the stopped container stays, cgroup and all, until `delete`).
    pub fn run(&self, id: &str, opts: &CreateOptions, detach: bool, keep: bool) -> Result<i32> {
        state::validate_id(id)?;
        let cfg = spec::load(&opts.bundle)?;
        if detach {
            let console = console_for(&cfg, opts)?;
            self.create_from(id, &cfg, opts, console)?;
            self.start(id)?;
            return Ok(0);
        }
        // A terminal and no console socket: the pty is ours to serve, as runc does.
        let (console, our_end) = if cfg.process.terminal && opts.console_socket.is_none() {
            let (ours, theirs) = UnixStream::pair().map_err(io("socketpair"))?;
            (Some(theirs), Some(ours))
        } else {
            (console_for(&cfg, opts)?, None)
        };
        let forwarded = prepare_to_wait()?;
        let rec = match self.create_from(id, &cfg, opts, console).and_then(|rec| self.start(id).map(|()| rec)) {
            Ok(rec) => rec,
            Err(e) => {
                let _ = self.delete(id, true);
                return Err(e);
            }
        };
        let code = match our_end {
            Some(sock) => {
                let master = tty::receive_master(&sock).map_err(io("receive the pty"))?;
                tty::proxy_until_exit(rec.pid, &forwarded, master, reap).map_err(io("copy to and from the pty"))?
            }
            None => wait_forwarding(rec.pid, &forwarded)?,
        };
        // Read before delete removes the cgroup: did the kernel's OOM killer end it?
        if let Ok(stats) = cgroup_of(&rec).and_then(|cg| Ok(cg.stats()?))
            && stats.oom_kills > 0
        {
            eprintln!(
                "nodectl-runtime: container {id}: killed by the OOM killer ({} OOM kill(s) in its cgroup)",
                stats.oom_kills
            );
        }
        if !keep {
            self.delete(id, true)?;
        }
        Ok(code)
    }

    /// Runs another process in a created or running container: its namespaces and cgroup, the
    /// container's seccomp profile, the process's own user, capabilities and limits.
    /// Returns its exit status, or 0 at once with `detach`.
    pub fn exec(&self, id: &str, process: &ProcessConfig, opts: &ExecOptions) -> Result<i32> {
        ensure_sealed("exec into a container")?;
        let (rec, status) = self.load(id)?;
        // A created container's init waits for `start` in its finished namespaces; runc
        // execs into it too (create.bats "runc create exec").
        if !matches!(status, Status::Created | Status::Running | Status::Paused) {
            return Err(RuntimeError::Status { id: id.into(), status, verb: "exec", need: "created or running" });
        }
        let cg = cgroup_of(&rec)?;
        // Joining a frozen cgroup stops the new process until it is thawed (paused by us
        // or frozen by anyone): refused, as runc refuses, unless the caller means to wait.
        if !opts.ignore_paused
            && let Some(freezer) = cg.frozen()?
        {
            return Err(RuntimeError::Paused { id: id.into(), freezer });
        }
        // The cgroup the process enters: the container's, or a sub-cgroup of it.
        let cg = if opts.sub_cgroups.is_empty() { cg } else { cg.sub(&opts.sub_cgroups)? };
        // runc's checks (checkTerminal): a terminal without a console socket is served by
        // us, so only a detached one needs the socket.
        if process.terminal && opts.detach && opts.console_socket.is_none() {
            return Err(RuntimeError::Invalid(
                "a terminal (process.terminal, --tty) with --detach needs a --console-socket".into(),
            ));
        }
        if !process.terminal && opts.console_socket.is_some() {
            return Err(RuntimeError::Invalid(
                "--console-socket was given but there is no terminal (process.terminal, --tty)".into(),
            ));
        }
        ensure_single_threaded()?;
        let joins = init_namespaces(&rec)?;
        // A terminal and no console socket: the pty is ours to serve, as with `run`.
        let (console, our_end) = match &opts.console_socket {
            Some(p) => {
                (Some(UnixStream::connect(p).map_err(io(format!("connect to console socket {}", p.display())))?), None)
            }
            None if process.terminal => {
                let (ours, theirs) = UnixStream::pair().map_err(io("socketpair"))?;
                (Some(theirs), Some(ours))
            }
            None => (None, None),
        };
        let forwarded = if opts.detach { None } else { Some(prepare_to_wait()?) };
        let (chan, child_chan) = sync::pair().map_err(io("socketpair"))?;
        let apparmor = apparmor::effective(process.apparmor_profile.as_deref().or(rec.apparmor_profile.as_deref()));
        // SAFETY: ensure_single_threaded checked that no other thread exists.
        let child = match unsafe { nix::unistd::fork() }.map_err(|e| io("fork")(e.into()))? {
            ForkResult::Child => {
                drop(chan);
                init::exec_child(ExecArgs {
                    process,
                    seccomp: rec.seccomp.as_ref(),
                    chan: child_chan,
                    console,
                    preserve_fds: opts.preserve_fds,
                    joins,
                    cgroup: cg.as_ref(),
                    stdio: opts.stdio,
                    apparmor: apparmor.as_deref(),
                })
            }
            ForkResult::Parent { child } => child.as_raw(),
        };
        drop(child_chan);
        drop(console);
        drop(joins);
        let fail = |message: String| {
            let _ = sys::process::kill(child, Signal::SIGKILL);
            RuntimeError::Init { id: id.to_string(), message }
        };
        chan.send(&Msg::Go).map_err(|e| fail(format!("setup channel: {e}")))?;
        let mut pid = 0;
        let mut ready = false;
        // The intermediate sends Pid after its fork returns, and the process may run and
        // send Ready before that: both must have come (a fast `exit 5` once hung here).
        let mut listener: Option<OwnedFd> = None;
        // runc's state for an exec'd process's agent: the container's, as running.
        let exec_state = || with_status(state_json(&rec, Status::Running), "running");
        while pid == 0 || !ready {
            let (msg, fd) = match chan.recv_with_fds().map_err(|e| fail(format!("setup channel: {e}")))? {
                Some((m, fds)) => (Some(m), fds.into_iter().next()),
                None => (None, None),
            };
            match msg {
                Some(Msg::SeccompFd) => {
                    let fd = fd.ok_or_else(|| fail("setup protocol: SeccompFd without a descriptor".into()))?;
                    if pid == 0 {
                        listener = Some(fd);
                    } else {
                        give_listener(rec.seccomp.as_ref(), &chan, pid, exec_state(), fd).map_err(&fail)?;
                    }
                }
                Some(Msg::Pid { pid: p }) => {
                    pid = p;
                    if let Some(fd) = listener.take() {
                        give_listener(rec.seccomp.as_ref(), &chan, pid, exec_state(), fd).map_err(&fail)?;
                    }
                }
                Some(Msg::Ready) => ready = true,
                Some(Msg::Error(e)) => {
                    // pid is still 0 if setup failed before the process had one.
                    let _ = sys::process::kill(pid, Signal::SIGKILL);
                    let _ = waitpid(Pid::from_raw(child), None);
                    return Err(fail(e));
                }
                Some(other) => return Err(fail(format!("setup protocol: unexpected {other:?}"))),
                None => return Err(fail("the exec'd process exited during setup".into())),
            }
        }
        let _ = waitpid(Pid::from_raw(child), None);
        if let Some(pid_file) = &opts.pid_file {
            write_pid_file(pid_file, pid)?;
        }
        match (forwarded, our_end) {
            (None, _) => Ok(0),
            (Some(set), Some(sock)) => {
                let master = tty::receive_master(&sock).map_err(io("receive the pty"))?;
                Ok(tty::proxy_until_exit(pid, &set, master, reap).map_err(io("copy to and from the pty"))?)
            }
            (Some(set), None) => wait_forwarding(pid, &set),
        }
    }
}

/// Passes an init's or exec'd process's seccomp listener to the profile's agent and tells
/// the process to go on; `pid` is that process's, `state` the container's.
fn give_listener(
    profile: Option<&oci_spec::runtime::LinuxSeccomp>,
    chan: &sync::Channel,
    pid: i32,
    state: serde_json::Value,
    listener: OwnedFd,
) -> std::result::Result<(), String> {
    let profile = profile.ok_or("setup protocol: a seccomp listener without a seccomp profile")?;
    let path =
        profile.listener_path().as_ref().filter(|p| !p.as_os_str().is_empty()).ok_or("listenerPath is not set")?;
    let version = state["ociVersion"].as_str().unwrap_or_default().to_string();
    let process_state = seccomp_agent::process_state(&version, pid, profile.listener_metadata().as_deref(), state);
    seccomp_agent::send(path, &process_state, listener.as_fd())?;
    // Ours is closed now; the agent's and the process's copies remain (the process closes
    // its own once told).
    drop(listener);
    chan.send(&Msg::SeccompDone).map_err(|e| format!("setup channel: {e}"))
}

fn with_status(mut state: serde_json::Value, status: &str) -> serde_json::Value {
    state["status"] = serde_json::Value::String(status.to_string());
    state
}

/// Checks that a terminal and a console socket go together; connects to the socket.
fn console_for(cfg: &Config, opts: &CreateOptions) -> Result<Option<UnixStream>> {
    if cfg.process.terminal && opts.console_socket.is_none() {
        return Err(RuntimeError::Invalid("process.terminal is true: a --console-socket is required".into()));
    }
    if !cfg.process.terminal && opts.console_socket.is_some() {
        return Err(RuntimeError::Invalid("--console-socket was given but process.terminal is false".into()));
    }
    match &opts.console_socket {
        Some(p) => Ok(Some(UnixStream::connect(p).map_err(io(format!("connect to console socket {}", p.display())))?)),
        None => Ok(None),
    }
}

/// How `exec` runs its process.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
    /// Exec into a paused (frozen) container: the process waits there until it is resumed.
    pub ignore_paused: bool,
    /// Existing sub-cgroups of the container's for the process (`exec --cgroup`):
    /// `("", PATH)` or `(CONTROLLER, PATH)`, as `Cgroup::sub` takes them.
    pub sub_cgroups: Vec<(String, String)>,
    /// The process's stdin, stdout and stderr, if not ours (the caller keeps them open
    /// until `exec` returns).
    pub stdio: Option<[RawFd; 3]>,
}

/// The init's namespaces that are not ours, opened (user first) while the init is
/// checked to still be the process we recorded.
fn init_namespaces(rec: &Record) -> Result<Vec<(LinuxNamespaceType, OwnedFd)>> {
    let pidfd = sys::process::pidfd_open(rec.pid).map_err(io(format!("open pid {}", rec.pid)))?;
    let mut out = Vec::new();
    for kind in [
        LinuxNamespaceType::User,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Time,
        LinuxNamespaceType::Mount,
    ] {
        let path = PathBuf::from(format!("/proc/{}/ns/{}", rec.pid, namespaces::proc_name(kind)));
        if !path.exists() || namespaces::same_as_ours(kind, &path) {
            continue;
        }
        let f = fs::File::open(&path).map_err(io(format!("open {}", path.display())))?;
        out.push((kind, OwnedFd::from(f)));
    }
    // Opened after the pidfd: if the init is still the recorded process now, these
    // namespaces are its own and not a recycled pid's.
    drop(pidfd);
    if !sys::process::alive(rec.pid, rec.pid_start_time) {
        return Err(RuntimeError::Status {
            id: rec.id.clone(),
            status: Status::Stopped,
            verb: "exec",
            need: "running",
        });
    }
    Ok(out)
}

/// Becomes a subreaper and blocks the signals `wait_forwarding` handles: blocked before
/// fork, no SIGCHLD can be lost (the child unblocks them before exec).
fn prepare_to_wait() -> Result<SigSet> {
    sys::process::set_child_subreaper().map_err(io("become a subreaper"))?;
    let mut forwarded = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCONT,
    ] {
        forwarded.add(s);
    }
    forwarded.thread_block().map_err(|e| io("block signals")(e.into()))?;
    Ok(forwarded)
}

/// Waits for `pid` to exit, passing on every other signal we get to it; its exit code,
/// or 128+n if a signal ended it.
fn wait_forwarding(pid: i32, set: &SigSet) -> Result<i32> {
    // kill(0 or less, …) would signal our own process group, which then signals us back.
    if pid <= 0 {
        return Err(RuntimeError::Invalid(format!("no process to wait for (pid {pid})")));
    }
    // It may have exited before we got here: its SIGCHLD is pending then, not lost.
    if let Some(code) = reap(pid) {
        return Ok(code);
    }
    loop {
        let sig = set.wait().map_err(|e| io("wait for signals")(e.into()))?;
        if sig != Signal::SIGCHLD {
            let _ = sys::process::kill(pid, sig);
            continue;
        }
        if let Some(code) = reap(pid) {
            return Ok(code);
        }
    }
}

/// Reaps every exited child (we are a subreaper: orphans come to us); the exit code of
/// `init` once it is among them.
fn reap(init: i32) -> Option<i32> {
    sys::process::reap_exited().fold(None, |code, r| if r.pid == init { Some(r.code) } else { code })
}

/// Signals the init through a pidfd checked against the recorded start time, so a
/// recycled pid is never hit.
fn signal_init(rec: &Record, signal: i32) -> Result<()> {
    let pidfd = sys::process::pidfd_open(rec.pid).map_err(io(format!("open pid {}", rec.pid)))?;
    if !sys::process::alive(rec.pid, rec.pid_start_time) {
        return Err(RuntimeError::Status {
            id: rec.id.clone(),
            status: Status::Stopped,
            verb: "kill",
            need: "running",
        });
    }
    sys::process::pidfd_send_signal(pidfd.as_fd(), signal).map_err(io(format!("signal {signal} to pid {}", rec.pid)))
}

/// SIGKILL to everything left in the container's cgroup, then wait until it is empty
/// (and the recorded init, if any, gone).
fn kill_all_and_wait(cg: &dyn Cgroup, rec: Option<&Record>) {
    let gone = || {
        cg.processes().map(|p| p.is_empty()).unwrap_or(true)
            && rec.is_none_or(|r| !sys::process::alive(r.pid, r.pid_start_time))
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !gone() && Instant::now() < end {
        for pid in cg.processes().unwrap_or_default() {
            let _ = sys::process::kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, pid.to_string()).map_err(io(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io(format!("rename {}", path.display())))
}

use std::os::unix::fs::OpenOptionsExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_running_from_a_writable_binary_refuses_to_create_or_exec() {
        // The test binary is an ordinary file in target/: not sealed.
        assert!(!sys::exe::exe_is_sealed().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(dir.path());
        let create = rt.create("c", &CreateOptions { bundle: dir.path().to_path_buf(), ..Default::default() });
        assert!(matches!(create, Err(RuntimeError::NotSealed { .. })), "{:?}", create.err());
        let process = ProcessConfig {
            args: vec!["true".into()],
            env: Vec::new(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            umask: None,
            rlimits: Vec::new(),
            caps: None,
            no_new_privileges: false,
            oom_score_adj: None,
            terminal: false,
            console_size: None,
            apparmor_profile: None,
        };
        let exec = rt.exec("c", &process, &ExecOptions::default());
        assert!(matches!(exec, Err(RuntimeError::NotSealed { .. })), "{:?}", exec.err());
        assert!(exec.unwrap_err().to_string().contains("CVE-2019-5736"));
        // Nothing was made.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
