//! `nodectl exec [-i] [-t] POD [-c CONTAINER] -- COMMAND…`: a command in a running
//! container of a daemon's pod, as `kubectl exec`. The daemon says which pod that is; its
//! monitor (the containers' parent) starts the process, on a terminal it makes in the
//! container with `-t`, else on pipes of ours. Our own terminal and files are never handed
//! to the container (it could reopen them through /proc or push input with TIOCSTI): we
//! copy between them and the pipes or the terminal's master. The exit code is the
//! command's.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Args;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg};

use super::local::{self, SocketArgs};
use crate::node::monitor::client::{self, Monitor};
use crate::node::monitor::protocol::{ExecIo, Message, Request};

/// Which container of which daemon's pod, and how our stdio meets it (exec and attach).
#[derive(Args)]
pub(super) struct ContainerArgs {
    pod: String,
    /// The container (the pod's first if not given).
    #[arg(long, short = 'c')]
    container: Option<String>,
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Pass our stdin on.
    #[arg(long, short = 'i')]
    pub(super) stdin: bool,
    /// A terminal.
    #[arg(long, short = 't')]
    pub(super) tty: bool,
    #[command(flatten)]
    socket: SocketArgs,
}

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    target: ContainerArgs,
    /// The command and its arguments (after --).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn exec(root: &Path, a: ExecArgs) -> Result<i32> {
    let (mut mon, container) = running_container(root, &a.target)?;
    if a.target.tty {
        with_terminal(&mut mon, container, a.command, a.target.stdin)
    } else {
        with_pipes(&mut mon, container, a.command, a.target.stdin)
    }
}

/// A running container of a daemon's pod (the pod's first if `container` is None), and a
/// connection to the pod's monitor.
pub(super) fn running_container(root: &Path, target: &ContainerArgs) -> Result<(Monitor, String)> {
    let (pod_name, container) = (&target.pod, target.container.as_deref());
    let path = format!("/api/v1/namespaces/{}/pods/{pod_name}", target.namespace);
    let pod = local::call(&target.socket.path(root), "GET", &path, None)?.json()?;
    let uid = pod["metadata"]["uid"].as_str().context("the pod has no uid")?;
    let containers: Vec<&str> =
        pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    let container = match container {
        Some(c) if containers.contains(&c) => c.to_string(),
        Some(c) => bail!("container {c} is not valid for pod {pod_name}"),
        None => containers.first().context("the pod has no containers")?.to_string(),
    };
    let running = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["name"] == container.as_str() && s["state"]["running"].is_object());
    if !running {
        bail!("unable to upgrade connection: container not found (\"{container}\")");
    }
    let socket = crate::node::pod_state::pod_dir(root, uid).join("monitor.sock");
    let mon = client::connect(&socket).with_context(|| format!("the monitor of pod {pod_name}"))?;
    Ok((mon, container))
}

/// The exec's id from the monitor's answer.
fn started(answer: Message) -> Result<u64> {
    match answer {
        Message::ExecStarted { exec, .. } => Ok(exec),
        Message::Error { error } => bail!("{error}"),
        other => bail!("the pod's monitor answered {other:?}"),
    }
}

/// The exit code once the monitor says the exec ended, if it did.
fn ended(mon: &mut Monitor, exec: u64) -> Result<Option<i32>> {
    let events = mon.events().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(events.into_iter().find_map(|m| match m {
        Message::ExecExited { exec: e, code, .. } if e == exec => Some(code),
        _ => None,
    }))
}

/// One poll, for 100 ms when `short` (the command ended, or its end was already read)
/// else until something comes: how many descriptors are ready, and which. None when a
/// signal broke in.
pub(super) fn wait(fds: &mut [PollFd<'_>], short: bool) -> Result<Option<(i32, Vec<bool>)>> {
    let timeout = if short { PollTimeout::from(100u16) } else { PollTimeout::NONE };
    match poll(fds, timeout) {
        Ok(n) => Ok(Some((n, fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()))),
        Err(nix::errno::Errno::EINTR) => Ok(None),
        Err(e) => Err(e).context("poll"),
    }
}

/// Copies what each ready pipe (by its index in `ready`) holds to its sink; a pipe that
/// ended is dropped.
pub(super) fn copy_ready(outs: &mut Vec<(File, Box<dyn Write>)>, ready: &[bool], buf: &mut [u8]) {
    let mut closed = Vec::new();
    for (i, (f, sink)) in outs.iter_mut().enumerate() {
        if !ready[i] {
            continue;
        }
        match f.read(buf) {
            Ok(0) | Err(_) => closed.push(i),
            Ok(n) => {
                let _ = sink.write_all(&buf[..n]).and_then(|()| sink.flush());
            }
        }
    }
    for i in closed.into_iter().rev() {
        outs.remove(i);
    }
}

pub(super) fn pipe() -> Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    Ok((File::from(r), File::from(w)))
}

fn with_pipes(mon: &mut Monitor, container: String, command: Vec<String>, stdin: bool) -> Result<i32> {
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let fds: [BorrowedFd<'_>; 3] = [in_r.as_fd(), out_w.as_fd(), err_w.as_fd()];
    let answer = mon
        .request_with(&Request::Exec { name: container, command, io: ExecIo::Passed }, &fds)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    drop((in_r, out_w, err_w));
    let exec = started(answer)?;
    let mut to_stdin = stdin.then_some(in_w);
    let mut outs: Vec<(File, Box<dyn Write>)> = vec![(out_r, Box::new(io::stdout())), (err_r, Box::new(io::stderr()))];
    let mut code = None;
    let mut buf = [0u8; 16 * 1024];
    // Until the command ended and its output is read to the end.
    while code.is_none() || !outs.is_empty() {
        let mut fds: Vec<PollFd<'_>> = outs.iter().map(|(f, _)| PollFd::new(f.as_fd(), PollFlags::POLLIN)).collect();
        let n_outs = fds.len();
        fds.push(PollFd::new(mon.fd(), PollFlags::POLLIN));
        let stdin_fd = io::stdin();
        if to_stdin.is_some() {
            fds.push(PollFd::new(stdin_fd.as_fd(), PollFlags::POLLIN));
        }
        // Once the command ended, what it left in the pipes is read; a child of its that
        // keeps them open is not waited for.
        let Some((n, ready)) = wait(&mut fds, code.is_some() || mon.pending())? else { continue };
        drop(fds);
        if n == 0 && code.is_some() {
            break;
        }
        copy_ready(&mut outs, &ready, &mut buf);
        if ready.get(n_outs + 1).copied().unwrap_or(false)
            && let Some(w) = to_stdin.as_mut()
        {
            match io::stdin().lock().read(&mut buf) {
                // End of our input: the command's stdin closes.
                Ok(0) | Err(_) => to_stdin = None,
                Ok(n) => {
                    if w.write_all(&buf[..n]).is_err() {
                        to_stdin = None;
                    }
                }
            }
        }
        if (ready[n_outs] || mon.pending()) && code.is_none() {
            code = ended(mon, exec)?;
        }
    }
    Ok(code.unwrap_or(1))
}

/// Our stdin in raw mode while it lives, if it is a terminal.
pub(super) struct Raw(Option<termios::Termios>);

impl Raw {
    pub(super) fn enter() -> Raw {
        let saved = termios::tcgetattr(io::stdin().as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &raw);
        }
        Raw(saved)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

pub(super) fn window_size(fd: BorrowedFd<'_>) -> Option<libc::winsize> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize struct, which we own.
    (unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0).then_some(ws)
}

pub(super) fn set_window_size(fd: BorrowedFd<'_>, ws: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads one winsize struct, which we own.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws) };
}

fn with_terminal(mon: &mut Monitor, container: String, command: Vec<String>, stdin: bool) -> Result<i32> {
    let ws = window_size(io::stdout().as_fd()).unwrap_or(libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let terminal = ExecIo::Tty { rows: ws.ws_row, cols: ws.ws_col };
    let answer =
        mon.request(&Request::Exec { name: container, command, io: terminal }).map_err(|e| anyhow::anyhow!("{e}"))?;
    let exec = started(answer)?;
    let master: OwnedFd = mon.take_fd().context("the pod's monitor sent no terminal")?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGWINCH);
    mask.thread_block().context("block SIGWINCH")?;
    let winch = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    let _raw = stdin.then(Raw::enter);
    let mut m = File::from(master);
    let mut stdin_open = stdin;
    let mut master_open = true;
    let mut code = None;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let stdin = io::stdin();
        // A terminal that gave EIO is polled no more (the monitor's socket stands in).
        let master_fd = if master_open { m.as_fd() } else { mon.fd() };
        let mut fds = vec![
            PollFd::new(master_fd, PollFlags::POLLIN),
            PollFd::new(mon.fd(), PollFlags::POLLIN),
            PollFd::new(winch.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        let Some((n, ready)) = wait(&mut fds, code.is_some() || mon.pending())? else { continue };
        drop(fds);
        if n == 0 && code.is_some() {
            break;
        }
        if ready[0] && master_open {
            match m.read(&mut buf) {
                // EIO: every holder of the terminal's other end is gone.
                Ok(0) | Err(_) if code.is_some() => break,
                Ok(0) | Err(_) => master_open = false,
                Ok(n) => {
                    let mut out = io::stdout().lock();
                    let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
                }
            }
        }
        if ready[2] {
            while winch.read_signal().ok().flatten().is_some() {}
            if let Some(ws) = window_size(io::stdout().as_fd()) {
                set_window_size(m.as_fd(), &ws);
            }
        }
        if ready.get(3).copied().unwrap_or(false) {
            match io::stdin().lock().read(&mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let _ = m.write_all(&buf[..n]);
                }
            }
        }
        if (ready[1] || mon.pending()) && code.is_none() {
            code = ended(mon, exec)?;
        }
    }
    Ok(code.unwrap_or(1))
}
