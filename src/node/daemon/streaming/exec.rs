//! `kubectl exec`: a command started in the container by the pod's monitor, as `nodectl
//! exec` starts it, its stdio on pipes of ours (or a terminal the monitor makes), never on
//! anything of the daemon's own. The session ends with the command's exit code.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Options, STDERR, STDOUT, Started, Steering, nonblocking, pipe};
use crate::node::monitor::client::Monitor;
use crate::node::monitor::protocol::{ExecIo, Message, Request};

/// Asks the monitor to start the command (blocking: the monitor answers at once), then
/// hands the monitor to a thread that waits for the command's exit.
pub fn start(mut mon: Monitor, container: String, o: &Options) -> Result<Started, String> {
    let command = o.command.clone();
    let (exec, stdin, outputs, steering) = if o.tty {
        let io = ExecIo::Tty { rows: 24, cols: 80 };
        let answer = mon.request(&Request::Exec { name: container, command, io }).map_err(|e| e.to_string())?;
        let exec = started(answer)?;
        let master: OwnedFd = mon.take_fd().ok_or("the pod's monitor sent no terminal")?;
        let master = File::from(master);
        let write_side = master.try_clone().map_err(|e| e.to_string())?;
        let outputs = if o.stdout { vec![(STDOUT, master)] } else { vec![] };
        let terminal = Arc::new(nonblocking(write_side.try_clone().map_err(|e| e.to_string())?)?);
        (exec, o.stdin.then_some(write_side), outputs, Steering::Terminal(terminal))
    } else {
        let (in_r, in_w) = pipe().map_err(|e| e.to_string())?;
        let (out_r, out_w) = pipe().map_err(|e| e.to_string())?;
        let (err_r, err_w) = pipe().map_err(|e| e.to_string())?;
        let fds: [BorrowedFd<'_>; 3] = [in_r.as_fd(), out_w.as_fd(), err_w.as_fd()];
        let answer = mon
            .request_with(&Request::Exec { name: container, command, io: ExecIo::Passed }, &fds)
            .map_err(|e| e.to_string())?;
        drop((in_r, out_w, err_w));
        let exec = started(answer)?;
        // Both outputs are read even when not asked for (the command must not block on a
        // full pipe); what is not asked for is dropped.
        (exec, o.stdin.then_some(in_w), vec![(STDOUT, out_r), (STDERR, err_r)], Steering::None)
    };
    let (exit_tx, exit_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(wait_exit(mon, exec));
    });
    Ok(Started { stdin, outputs, steering, end: Some(exit_rx) })
}

fn started(answer: Message) -> Result<u64, String> {
    match answer {
        Message::ExecStarted { exec, .. } => Ok(exec),
        Message::Error { error } => Err(error),
        other => Err(format!("the pod's monitor answered {other:?}")),
    }
}

/// Blocks until the monitor says exec `exec` ended: its exit code.
fn wait_exit(mut mon: Monitor, exec: u64) -> Result<i32, String> {
    loop {
        let events = mon.events().map_err(|e| e.to_string())?;
        if let Some(code) = events.into_iter().find_map(|m| match m {
            Message::ExecExited { exec: e, code, .. } if e == exec => Some(code),
            _ => None,
        }) {
            return Ok(code);
        }
        if mon.pending() {
            continue;
        }
        let mut fds = [nix::poll::PollFd::new(mon.fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
}
