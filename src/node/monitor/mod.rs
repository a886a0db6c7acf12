//! A pod's monitor: the small process that is the parent of the pod's containers, as
//! conmon and containerd's shim are. It makes the pod's sandbox, creates and starts each
//! container when its owner asks, reaps them and records each exit in
//! `containers/NAME.json` (written atomically), and writes their output to CRI log files,
//! so a slow or dead owner never blocks a container and never loses an exit.
//!
//! It is single-threaded (the runtime forks the containers' inits from it), runs from our
//! sealed binary (CVE-2019-5736), lives in a session of its own, and is a child subreaper.
//! Started by `nodectl run`, it dies with it (the next run's gc removes the pod); started
//! by the daemon, it outlives it. It makes no decision: restarts, probes and stops are the
//! owner's ([`super::reconcile`]).

pub mod client;
pub mod protocol;

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use self::protocol::{ExecIo, Message, Request};
use super::crilog::{self, Rotation};
use super::output::Stream;
use super::pod_state::{self, ContainerRecord, MonitorRecord, SandboxReady};
use super::reconcile::Terminated;
use super::sandbox::{self, PodRecord};
use crate::image::store::Store;
use crate::runtime::{CreateOptions, Runtime};

/// How the monitor is started (`nodectl monitor`).
pub struct Options {
    pub root: PathBuf,
    pub uid: String,
    /// The owner's end of the control connection, if it made one (fd 3 of a new monitor).
    pub control: Option<OwnedFd>,
    /// Die with this process (the foreground `nodectl run` that started us).
    pub owner: Option<i32>,
    pub rotation: Rotation,
}

struct Slot {
    name: String,
    id: String,
    bundle: PathBuf,
    pid: Option<i32>,
    started_at: SystemTime,
    out: Stream,
    err: Stream,
    log: Option<crilog::Writer>,
    echo: Option<String>,
    /// The container has a terminal: `out` is its master, `err` unused.
    tty: bool,
    /// Our end of its stdin (a pipe's write end, or the master), while it keeps one.
    stdin: Option<OwnedFd>,
    /// Its stdin closes when the first attached client is done with it.
    stdin_once: bool,
}

/// A client attached to a container's output (and perhaps its input).
struct Attachment {
    client: u64,
    name: String,
    out: OwnedFd,
    err: OwnedFd,
}

/// A command run in a container for its owner (a probe, a hook).
struct ExecRun {
    exec: u64,
    pid: i32,
    /// Its stdout and stderr, read as they come, when captured.
    out: Option<fs::File>,
    output: Vec<u8>,
    /// Killed then, if it still runs (a probe's timeout).
    deadline: Option<std::time::Instant>,
    timed_out: bool,
}

/// What one poll found ready: each slot's stdout and stderr, the listener, each client,
/// each exec's output.
struct Woken {
    slots: Vec<(bool, bool)>,
    listener: bool,
    clients: Vec<bool>,
    execs: Vec<bool>,
}

struct Client {
    id: u64,
    sock: UnixStream,
    buf: Vec<u8>,
    /// Descriptors that came with its requests, for the next Exec that takes them.
    fds: std::collections::VecDeque<OwnedFd>,
    gone: bool,
}

impl Client {
    fn new(id: u64, sock: UnixStream) -> Client {
        Client { id, sock, buf: Vec::new(), fds: Default::default(), gone: false }
    }
}

struct Monitor {
    root: PathBuf,
    dir: PathBuf,
    record: PodRecord,
    rt: Runtime,
    store: Option<Store>,
    rotation: Rotation,
    slots: Vec<Slot>,
    execs: Vec<ExecRun>,
    next_exec: u64,
    clients: Vec<Client>,
    next_client: u64,
    attached: Vec<Attachment>,
    listener: Option<UnixListener>,
    /// Set once a Teardown was done: reply, then exit.
    finished: bool,
    /// A container was started: give the heap it left back before sleeping.
    trim: bool,
}

/// Runs the monitor to its end; the process's exit code.
pub fn main(opts: Options) -> i32 {
    match run(opts) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(io::stderr(), "nodectl monitor: {e}");
            1
        }
    }
}

fn run(opts: Options) -> io::Result<()> {
    if let Some(owner) = opts.owner {
        crate::sys::process::set_parent_death_signal(libc::SIGKILL)?;
        // The owner may have died before the line above: then no signal comes.
        if nix::unistd::getppid().as_raw() != owner {
            return Err(io::Error::other("the owner exited before the monitor started"));
        }
    }
    // Not in the owner's process group: a Ctrl-C at the terminal is for the owner, which
    // stops the pod gracefully.
    let _ = nix::unistd::setsid();
    crate::sys::process::set_child_subreaper()?;
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().map_err(io::Error::from)?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;

    let dir = pod_state::pod_dir(&opts.root, &opts.uid);
    let me = std::process::id() as i32;
    let start_time = crate::sys::process::start_time(me).unwrap_or_default();
    pod_state::write_json(&MonitorRecord::path(&dir), &MonitorRecord { pid: me, start_time })?;
    let record: PodRecord = pod_state::read_json(&dir.join("pod.json"))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{}: no pod.json", dir.display())))?;

    let mut m = Monitor {
        rt: Runtime::new(&opts.root.join("runtime")),
        store: Store::open(&opts.root).ok(),
        root: opts.root,
        dir,
        record,
        rotation: opts.rotation,
        slots: Vec::new(),
        execs: Vec::new(),
        next_exec: 1,
        clients: Vec::new(),
        next_client: 1,
        attached: Vec::new(),
        listener: None,
        finished: false,
        trim: false,
    };
    if let Some(fd) = opts.control {
        let sock = UnixStream::from(fd);
        sock.set_nonblocking(true)?;
        m.clients.push(Client::new(0, sock));
    }
    let ready_path = SandboxReady::path(&m.dir);
    let first = match pod_state::read_json::<SandboxReady>(&ready_path) {
        // The monitor before us made the sandbox and died: what it ran is unknown now.
        Ok(Some(ready)) => {
            m.adopt();
            Message::Ready { ip: ready.ip, hostname: ready.hostname }
        }
        _ => match sandbox::create(&m.root, &m.record) {
            Ok(sb) => {
                let ready = SandboxReady { ip: sb.ip, hostname: sb.hostname };
                pod_state::write_json(&ready_path, &ready)?;
                Message::Ready { ip: ready.ip, hostname: ready.hostname }
            }
            Err(e) => {
                m.broadcast(&Message::Failed { error: e.to_string() });
                return Ok(());
            }
        },
    };
    m.listener = listen(&m.dir.join("monitor.sock"));
    m.broadcast(&first);
    m.serve(&signals)
}

/// The socket later clients (a restarted daemon) connect to; without it (a state root so
/// deep that the path passes the 108-byte limit of unix socket addresses) only the owner's
/// connection is served.
fn listen(path: &Path) -> Option<UnixListener> {
    let _ = fs::remove_file(path);
    let l = UnixListener::bind(path).ok()?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).ok()?;
    l.set_nonblocking(true).ok()?;
    Some(l)
}

impl Monitor {
    fn serve(&mut self, signals: &SignalFd) -> io::Result<()> {
        while !self.finished {
            if std::mem::take(&mut self.trim) {
                trim_heap();
            }
            let timeout = self.execs.iter().filter_map(|e| e.deadline).min().map_or(PollTimeout::NONE, |d| {
                let ms = d.saturating_duration_since(std::time::Instant::now()).as_millis().min(60_000) as i32 + 1;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            });
            let Woken { slots: ready, listener: listener_ready, clients: clients_ready, execs: execs_ready } = {
                let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
                for s in &self.slots {
                    fds.push(PollFd::new(s.out.read_fd(), PollFlags::POLLIN));
                    fds.push(PollFd::new(s.err.read_fd(), PollFlags::POLLIN));
                }
                if let Some(l) = &self.listener {
                    fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                }
                for c in &self.clients {
                    fds.push(PollFd::new(c.sock.as_fd(), PollFlags::POLLIN));
                }
                // Only captured output is ours to read; the rest end when reaped.
                for out in self.execs.iter().filter_map(|e| e.out.as_ref()) {
                    fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                let r: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
                let n = self.slots.len();
                let slots = (0..n).map(|i| (r[1 + 2 * i], r[2 + 2 * i])).collect();
                let mut at = 1 + 2 * n;
                let l = self.listener.is_some() && r[at];
                if self.listener.is_some() {
                    at += 1;
                }
                let clients = r[at..at + self.clients.len()].to_vec();
                let mut captured = r[at + self.clients.len()..].iter();
                let execs = self.execs.iter().map(|e| e.out.is_some() && *captured.next().unwrap_or(&false)).collect();
                Woken { slots, listener: l, clients, execs }
            };
            for (i, ready) in execs_ready.into_iter().enumerate() {
                if ready {
                    self.read_exec(i);
                }
            }
            self.expire_execs();
            for (i, (out, err)) in ready.into_iter().enumerate() {
                if out || err {
                    self.pump(i, false);
                }
            }
            if listener_ready && let Some(l) = &self.listener {
                while let Ok((sock, _)) = l.accept() {
                    if sock.set_nonblocking(true).is_ok() {
                        self.next_client += 1;
                        self.clients.push(Client::new(self.next_client, sock));
                    }
                }
            }
            if signals.read_signal().ok().flatten().is_some() {
                while signals.read_signal().ok().flatten().is_some() {}
                self.reap();
            }
            for (i, ready) in clients_ready.into_iter().enumerate() {
                if ready {
                    self.read_client(i);
                }
            }
            for c in self.clients.iter().filter(|c| c.gone) {
                self.attached.retain(|a| a.client != c.id);
            }
            self.clients.retain(|c| !c.gone);
        }
        Ok(())
    }

    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 4096];
        loop {
            match crate::sys::fdpass::recv(self.clients[i].sock.as_fd(), &mut buf, false) {
                Ok((0, _)) => {
                    self.clients[i].gone = true;
                    break;
                }
                Ok((n, fds)) => {
                    let c = &mut self.clients[i];
                    c.buf.extend_from_slice(&buf[..n]);
                    c.fds.extend(fds);
                    // Descriptors no request takes are not hoarded.
                    while c.fds.len() > crate::sys::fdpass::MAX_FDS {
                        c.fds.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.clients[i].gone = true;
                    break;
                }
            }
        }
        let lines = protocol::take_lines(&mut self.clients[i].buf);
        if self.clients[i].buf.len() > protocol::MAX_LINE {
            self.clients[i].gone = true;
            return;
        }
        for line in lines {
            let (reply, fd) = match serde_json::from_slice::<Request>(&line) {
                Ok(req) => self.handle(req, i),
                Err(e) => (Message::Error { error: format!("not a request: {e}") }, None),
            };
            send_with(&mut self.clients[i], &reply, fd.as_ref().map(|f| f.as_fd()));
            if self.finished {
                return;
            }
        }
    }

    /// The answer to client `client`'s request, with a descriptor for it if there is one.
    fn handle(&mut self, req: Request, client: usize) -> (Message, Option<OwnedFd>) {
        let reply = match req {
            Request::Start { name, id, bundle, restart, echo, stdin, stdin_once } => {
                self.trim = true;
                match self.start(&name, &id, &bundle, restart, echo, (stdin, stdin_once)) {
                    Ok((pid, started_at)) => Message::Started { name, pid, started_at },
                    Err(error) => Message::Error { error },
                }
            }
            Request::Signal { name, signal } => {
                let error = match self.slots.iter().find(|s| s.name == name && s.pid.is_some()) {
                    None => Some(format!("container {name} is not running")),
                    Some(slot) => self.rt.kill(&slot.id, signal, signal == libc::SIGKILL).err().map(|e| e.to_string()),
                };
                Message::Done { error }
            }
            Request::Exec { name, command, io } => {
                let passed: Vec<OwnedFd> = match io {
                    ExecIo::Passed => self.clients[client].fds.drain(..).collect(),
                    _ => Vec::new(),
                };
                return match self.exec(&name, command, io, passed) {
                    Ok((exec, pid, master)) => (Message::ExecStarted { exec, pid }, master),
                    Err(error) => (Message::Error { error }, None),
                };
            }
            Request::Attach { name } => {
                let passed: Vec<OwnedFd> = self.clients[client].fds.drain(..).collect();
                let id = self.clients[client].id;
                return match self.attach(&name, id, passed) {
                    Ok((tty, stdin)) => (Message::Attached { tty, stdin: stdin.is_some() }, stdin),
                    Err(error) => (Message::Error { error }, None),
                };
            }
            Request::CloseStdin { name } => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.name == name)
                    && slot.stdin_once
                {
                    slot.stdin = None;
                }
                Message::Done { error: None }
            }
            Request::Resize { name, rows, cols } => {
                let error = match self.slots.iter().find(|s| s.name == name && s.tty && s.pid.is_some()) {
                    Some(slot) => set_window_size(slot.out.read_fd(), rows, cols).err().map(|e| e.to_string()),
                    None => Some(format!("container {name} has no terminal running")),
                };
                Message::Done { error }
            }
            Request::Teardown => {
                let error = self.teardown().err().map(|e| e.to_string());
                self.finished = true;
                Message::Done { error }
            }
        };
        (reply, None)
    }

    fn start(
        &mut self,
        name: &str,
        id: &str,
        bundle: &Path,
        restart: u32,
        echo: Option<String>,
        (keep_stdin, stdin_once): (bool, bool),
    ) -> Result<(i32, SystemTime), String> {
        let i = match self.slots.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                let pipe = |e: io::Error| format!("pipe: {e}");
                self.slots.push(Slot {
                    name: name.to_string(),
                    id: id.to_string(),
                    bundle: bundle.to_path_buf(),
                    pid: None,
                    started_at: SystemTime::now(),
                    out: Stream::new().map_err(pipe)?,
                    err: Stream::new().map_err(pipe)?,
                    log: None,
                    echo: None,
                    tty: false,
                    stdin: None,
                    stdin_once: false,
                });
                self.slots.len() - 1
            }
        };
        if self.slots[i].pid.is_some() {
            return Err(format!("container {name} is running"));
        }
        let log_dir = pod_state::log_dir(&self.dir, name);
        let log = crilog::Writer::open(&log_dir, restart, self.rotation)
            .map_err(|e| format!("open the log of container {name} in {}: {e}", log_dir.display()))?;
        let slot = &mut self.slots[i];
        slot.id = id.to_string();
        slot.bundle = bundle.to_path_buf();
        slot.log = Some(log);
        slot.echo = echo;
        let cfg = crate::runtime::spec::load(bundle).map_err(|e| format!("container {name}: {e}"))?;
        let null: OwnedFd = fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?.into();
        slot.tty = cfg.process.terminal;
        slot.stdin_once = stdin_once;
        slot.stdin = None;
        // The container's stdin: a pipe we keep the other end of (for attach), or nothing.
        let mut stdin_read = None;
        if keep_stdin && !slot.tty {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
            stdin_read = Some(r);
            slot.stdin = Some(w);
        }
        // A terminal is made in the container; its master comes back on this pair.
        let console = if slot.tty {
            Some(UnixStream::pair().map_err(|e| format!("socket pair for the terminal: {e}"))?)
        } else {
            None
        };
        let stdio = match (&stdin_read, slot.tty) {
            (_, true) => [null.as_raw_fd(), null.as_raw_fd(), null.as_raw_fd()],
            (Some(r), false) => [r.as_raw_fd(), slot.out.write.as_raw_fd(), slot.err.write.as_raw_fd()],
            (None, false) => [null.as_raw_fd(), slot.out.write.as_raw_fd(), slot.err.write.as_raw_fd()],
        };
        let create = CreateOptions {
            bundle: bundle.to_path_buf(),
            cgroup_parent: Some(self.record.cgroup_parent.clone()),
            stdio: Some(stdio),
            ..Default::default()
        };
        // What a previous run of this container left (a restart makes a fresh one).
        let _ = self.rt.delete(id, true);
        let (ours, theirs) = console.map_or((None, None), |(a, b)| (Some(a), Some(b)));
        let created = self.rt.create_from(id, &cfg, &create, theirs);
        drop(stdin_read);
        let created = created.map_err(|e| format!("create container {name}: {e}")).and_then(|rec| {
            // The runtime sent the terminal's master before its create returned.
            if let Some(sock) = &ours {
                let master = crate::runtime::receive_master(sock)
                    .and_then(Stream::terminal)
                    .map_err(|e| format!("create container {name}: its terminal: {e}"))?;
                if keep_stdin {
                    slot.stdin = Some(master.write.try_clone().map_err(|e| format!("dup: {e}"))?);
                }
                slot.out = master;
            }
            Ok(rec)
        });
        let started = created
            .and_then(|rec| self.rt.start(id).map(|()| rec.pid).map_err(|e| format!("start container {name}: {e}")));
        let pid = match started {
            Ok(pid) => pid,
            Err(e) => {
                let _ = self.rt.delete(id, true);
                slot.stdin = None;
                return Err(e);
            }
        };
        let started_at = SystemTime::now();
        slot.pid = Some(pid);
        slot.started_at = started_at;
        let record = ContainerRecord { id: id.to_string(), pid, started_at, terminated: None };
        if let Err(e) = pod_state::write_json(&ContainerRecord::path(&self.dir, name), &record) {
            tracing::warn!("container {name}: writing its record: {e}");
        }
        Ok((pid, started_at))
    }

    /// Starts `command` in the running container `name` as its own process runs; the
    /// process is ours to reap (we are the subreaper it is handed to).
    /// A terminal's master comes back for the caller (ExecIo::Tty).
    fn exec(
        &mut self,
        name: &str,
        command: Vec<String>,
        io: ExecIo,
        passed: Vec<OwnedFd>,
    ) -> Result<(u64, i32, Option<OwnedFd>), String> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.name == name && s.pid.is_some())
            .ok_or_else(|| format!("container {name} is not running"))?;
        if command.is_empty() {
            return Err("no command to run".into());
        }
        let cfg = crate::runtime::spec::load(&slot.bundle).map_err(|e| format!("container {name}: {e}"))?;
        let mut process = cfg.process.clone();
        process.args = command;
        process.terminal = false;
        process.console_size = None;
        let exec = self.next_exec;
        self.next_exec += 1;
        let pid_file = self.dir.join(format!("exec-{exec}.pid"));
        let mut opts =
            crate::runtime::ExecOptions { detach: true, pid_file: Some(pid_file.clone()), ..Default::default() };
        // What the process gets, and what we keep: a capture pipe's read end, or the
        // socket the runtime sends a terminal's master to.
        let mut capture = None;
        let mut console = None;
        let mut held: Vec<OwnedFd> = Vec::new();
        let mut deadline = None;
        match io {
            ExecIo::Capture { timeout_ms } => {
                let (read, write) =
                    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
                let null: OwnedFd = fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?.into();
                opts.stdio = Some([null.as_raw_fd(), write.as_raw_fd(), write.as_raw_fd()]);
                held.extend([null, write]);
                capture = Some(read);
                deadline = Some(std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms));
            }
            ExecIo::Passed => {
                let [i, o, e] = <[OwnedFd; 3]>::try_from(passed)
                    .map_err(|p| format!("an exec with passed stdio needs 3 descriptors, {} came", p.len()))?;
                opts.stdio = Some([i.as_raw_fd(), o.as_raw_fd(), e.as_raw_fd()]);
                held.extend([i, o, e]);
            }
            ExecIo::Tty { rows, cols } => {
                let path = self.dir.join(format!("exec-{exec}.console"));
                let _ = fs::remove_file(&path);
                let l = UnixListener::bind(&path).map_err(|e| format!("console socket {}: {e}", path.display()))?;
                process.terminal = true;
                process.console_size = Some((rows, cols));
                opts.console_socket = Some(path.clone());
                console = Some((l, path));
            }
        }
        let r = self.rt.exec(&slot.id, &process, &opts);
        drop(held);
        let pid = fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok());
        let _ = fs::remove_file(&pid_file);
        let master = match &console {
            Some((l, path)) => {
                let _ = fs::remove_file(path);
                match r {
                    // The runtime connected and sent the master before the process ran.
                    Ok(_) => Some(
                        l.accept()
                            .and_then(|(sock, _)| crate::runtime::receive_master(&sock))
                            .map_err(|e| format!("exec in container {name}: its terminal: {e}"))?,
                    ),
                    Err(_) => None,
                }
            }
            None => None,
        };
        r.map_err(|e| format!("exec in container {name}: {e}"))?;
        let pid = pid.ok_or_else(|| format!("exec in container {name}: no pid"))?;
        let out = capture.map(fs::File::from);
        if let Some(out) = &out {
            let _ = nix::fcntl::fcntl(out, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
        }
        self.execs.push(ExecRun { exec, pid, out, output: Vec::new(), deadline, timed_out: false });
        Ok((exec, pid, master))
    }

    /// Attaches client `client` to the running container `name`: its output from now on
    /// goes to the two descriptors passed; its stdin (if it keeps one) comes back.
    fn attach(&mut self, name: &str, client: u64, passed: Vec<OwnedFd>) -> Result<(bool, Option<OwnedFd>), String> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.name == name && s.pid.is_some())
            .ok_or_else(|| format!("container {name} is not running"))?;
        let [out, err] = <[OwnedFd; 2]>::try_from(passed)
            .map_err(|p| format!("an attach needs 2 descriptors (stdout, stderr), {} came", p.len()))?;
        // A client that does not read loses output rather than stopping the container's.
        for fd in [&out, &err] {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| format!("fcntl: {e}"))?;
            let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| format!("fcntl: {e}"))?;
        }
        let stdin = slot.stdin.as_ref().map(|f| f.try_clone()).transpose().map_err(|e| format!("dup: {e}"))?;
        let tty = slot.tty;
        self.attached.push(Attachment { client, name: name.to_string(), out, err });
        Ok((tty, stdin))
    }

    /// Takes what an exec wrote, keeping the first probe::MAX_OUTPUT bytes.
    fn read_exec(&mut self, i: usize) {
        let e = &mut self.execs[i];
        let Some(out) = e.out.as_mut() else { return };
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = super::probe::MAX_OUTPUT.saturating_sub(e.output.len());
                    e.output.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    /// Kills the execs whose time is up (their end is reported when they are reaped).
    fn expire_execs(&mut self) {
        let now = std::time::Instant::now();
        for e in &mut self.execs {
            if !e.timed_out && e.deadline.is_some_and(|d| d <= now) {
                e.timed_out = true;
                let _ = crate::sys::process::kill(e.pid, Signal::SIGKILL);
            }
        }
    }

    /// Passes a container's output on: to its log, and to our stdout or stderr if echoed.
    fn pump(&mut self, i: usize, flush: bool) {
        let slot = &mut self.slots[i];
        let attached = &self.attached;
        for (stream, which) in [(&mut slot.out, crilog::Stream::Stdout), (&mut slot.err, crilog::Stream::Stderr)] {
            let log = &mut slot.log;
            let echo = slot.echo.as_deref();
            let name = slot.name.as_str();
            // Written as it came; a full pipe (a client that does not read) drops it.
            let mut tap = |chunk: &[u8]| {
                for a in attached.iter().filter(|a| a.name == name) {
                    let fd = if which == crilog::Stream::Stderr { &a.err } else { &a.out };
                    let _ = nix::unistd::write(fd, chunk);
                }
            };
            let mut sink = |line: &[u8], complete: bool| {
                if let Some(l) = log.as_mut() {
                    let _ = l.write(which, line, !complete);
                }
                if let Some(prefix) = echo {
                    echo_line(which, prefix, line);
                }
            };
            if flush { stream.flush_tapped(&mut tap, &mut sink) } else { stream.pump_tapped(&mut tap, &mut sink) }
        }
    }

    fn reap(&mut self) {
        for crate::sys::process::Reaped { pid, code, signal } in crate::sys::process::reap_exited() {
            if let Some(i) = self.slots.iter().position(|s| s.pid == Some(pid)) {
                self.ended(i, code, signal);
            } else if let Some(i) = self.execs.iter().position(|e| e.pid == pid) {
                self.read_exec(i);
                let e = self.execs.remove(i);
                let code = if e.timed_out { -1 } else { code };
                let output = String::from_utf8_lossy(&e.output).into_owned();
                self.broadcast(&Message::ExecExited { exec: e.exec, code, timed_out: e.timed_out, output });
            }
        }
    }

    /// A container's init was reaped: record how it ended and remove what is left of it.
    fn ended(&mut self, i: usize, code: i32, signal: Option<i32>) {
        self.pump(i, true);
        let slot = &mut self.slots[i];
        slot.pid = None;
        slot.log = None;
        slot.stdin = None;
        // Attached clients see the end of its output.
        self.attached.retain(|a| a.name != slot.name);
        if slot.tty {
            // A master whose terminal has no one left hangs up for ever (poll would spin):
            // a quiet pipe stands in until the next run makes a terminal again.
            match Stream::new() {
                Ok(quiet) => slot.out = quiet,
                Err(e) => tracing::warn!("container {}: pipe: {e}", slot.name),
            }
        }
        let (name, id) = (slot.name.clone(), slot.id.clone());
        // Read before delete removes the cgroup: did the kernel's OOM killer end it?
        let oom = self.rt.stats(&id).is_ok_and(|s| s.oom_kills > 0);
        if let Err(e) = self.rt.delete(&id, true) {
            tracing::warn!("container {name}: delete: {e}");
        }
        if let Some(store) = &self.store
            && let Err(e) = crate::image::rootfs::remove(store, &id)
        {
            tracing::warn!("container {name}: remove root filesystem: {e}");
        }
        let terminated = Terminated {
            exit_code: code,
            signal,
            oom_killed: oom,
            message: None,
            started_at: Some(slot.started_at),
            finished_at: SystemTime::now(),
            unknown: false,
        };
        let record = ContainerRecord { id, pid: 0, started_at: slot.started_at, terminated: Some(terminated.clone()) };
        if let Err(e) = pod_state::write_json(&ContainerRecord::path(&self.dir, &name), &record) {
            tracing::warn!("container {name}: writing its record: {e}");
        }
        self.broadcast(&Message::Exited { name, terminated });
    }

    /// Containers the monitor before us started and no one saw end: killed and removed,
    /// each recorded as ended with its status unknown, as the kubelet records them.
    fn adopt(&mut self) {
        let prefix = format!("{}.", self.record.key);
        for id in self.rt.root.list().unwrap_or_default() {
            let Some(name) = id.strip_prefix(&prefix).map(String::from) else { continue };
            if let Err(e) = self.rt.delete(&id, true) {
                tracing::warn!("container {name}: delete: {e}");
            }
            if let Some(store) = &self.store {
                let _ = crate::image::rootfs::remove(store, &id);
            }
            let path = ContainerRecord::path(&self.dir, &name);
            if let Ok(Some(mut rec)) = pod_state::read_json::<ContainerRecord>(&path)
                && rec.terminated.is_none()
            {
                rec.terminated = Some(Terminated {
                    exit_code: 137,
                    signal: Some(libc::SIGKILL),
                    oom_killed: false,
                    message: Some("its monitor died: the container was killed when found".into()),
                    started_at: Some(rec.started_at),
                    finished_at: SystemTime::now(),
                    unknown: true,
                });
                let _ = pod_state::write_json(&path, &rec);
            }
        }
    }

    /// Kills every container, waits for each, and removes the sandbox and the directory.
    fn teardown(&mut self) -> Result<(), super::PlanError> {
        for s in &self.slots {
            if s.pid.is_some() {
                let _ = self.rt.kill(&s.id, libc::SIGKILL, true);
            }
        }
        for i in 0..self.slots.len() {
            if let Some(pid) = self.slots[i].pid {
                let (code, signal) = match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => (c, None),
                    Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => (128 + s as i32, Some(s as i32)),
                    _ => (137, Some(libc::SIGKILL)),
                };
                self.ended(i, code, signal);
            }
        }
        sandbox::teardown(&self.root, &self.record)
    }

    fn broadcast(&mut self, msg: &Message) {
        for c in &mut self.clients {
            send(c, msg);
        }
    }
}

/// Returns the free pages of the heap to the kernel. Making the sandbox and a container's
/// bundle (spec, seccomp profile as JSON) leaves about 220 KiB of freed heap that glibc
/// keeps below its trim threshold; a monitor lives as long as its pod (`make bench`: Pss
/// per monitor, p50 of 100, 1.43 -> 1.25 MiB).
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator; no pointer changes.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sends one message; a client that cannot take it now (its buffer is full: it does not
/// read) is dropped rather than waited for. It can read the records and connect again.
fn send(c: &mut Client, msg: &Message) {
    send_with(c, msg, None)
}

/// Sends one message, with a descriptor attached to its first byte.
fn send_with(c: &mut Client, msg: &Message, fd: Option<std::os::fd::BorrowedFd<'_>>) {
    if c.gone {
        return;
    }
    let line = protocol::encode(msg);
    let mut at = 0;
    if let Some(fd) = fd {
        match crate::sys::fdpass::send(c.sock.as_fd(), &line, &[fd]) {
            Ok(n) => at = n,
            Err(_) => {
                c.gone = true;
                return;
            }
        }
    }
    while at < line.len() {
        match c.sock.write(&line[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                c.gone = true;
                return;
            }
        }
    }
}

/// Sets the size of the terminal whose master is `fd`.
fn set_window_size(fd: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize struct, which we own, from the pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A line of output on our stdout or stderr (the foreground `nodectl run` shares them).
/// Write errors are ignored: a closed stdout (a pipe to `head`) must not stop the pod.
fn echo_line(stream: crilog::Stream, prefix: &str, line: &[u8]) {
    let mut out = Vec::with_capacity(prefix.len() + line.len() + 1);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(line);
    out.push(b'\n');
    let _ = match stream {
        crilog::Stream::Stderr => io::stderr().lock().write_all(&out),
        crilog::Stream::Stdout => io::stdout().lock().write_all(&out).and_then(|()| io::stdout().flush()),
    };
}
