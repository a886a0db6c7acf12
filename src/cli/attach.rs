//! `nodectl attach [-i] [-t] POD [-c CONTAINER]`: the output of a running container of a
//! daemon's pod from now on, and with `-i` our input to its stdin, as `kubectl attach`.
//! The pod's monitor copies what the container writes to pipes of ours and hands us its
//! end of the container's stdin (a pipe, or the master of its terminal); our own terminal
//! and files never go to the container. We end when the container does, or on ^C.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Args;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::exec::{ContainerArgs, Raw, copy_ready, pipe, running_container, wait, window_size};
use crate::node::monitor::client::Monitor;
use crate::node::monitor::protocol::{Message, Request};

/// `-i` passes our stdin to the container's (it must have `stdin: true`); `-t` makes ours
/// its terminal's (it must have `tty: true`).
#[derive(Args)]
pub struct AttachArgs {
    #[command(flatten)]
    target: ContainerArgs,
}

fn monitor_error(e: crate::node::PlanError) -> anyhow::Error {
    anyhow::anyhow!("the pod's monitor: {e}")
}

pub fn attach(root: &Path, a: AttachArgs) -> Result<i32> {
    let a = a.target;
    let (mut mon, container) = running_container(root, &a)?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let answer = mon
        .request_with(&Request::Attach { name: container.clone() }, &[out_w.as_fd(), err_w.as_fd()])
        .map_err(monitor_error)?;
    drop((out_w, err_w));
    let (tty, has_stdin) = match answer {
        Message::Attached { tty, stdin } => (tty, stdin),
        Message::Error { error } => bail!("{error}"),
        other => bail!("the pod's monitor answered {other:?}"),
    };
    let their_stdin: Option<File> = match has_stdin {
        true => Some(File::from(mon.take_fd().context("the pod's monitor sent no stdin")?)),
        false => None,
    };
    if a.stdin && their_stdin.is_none() {
        eprintln!("warning: container {container} keeps no stdin open (stdin: true); attaching to its output only");
    }
    if a.tty && !tty {
        // kubectl's words.
        eprintln!("Unable to use a TTY - container {container} did not allocate one");
    }
    let use_tty = a.tty && tty;
    let mut input = if a.stdin { their_stdin } else { None };
    let winch = if use_tty { Some(resize_on_winch(&mut mon, &container)?) } else { None };
    let _raw = (use_tty && input.is_some()).then(Raw::enter);
    if use_tty && input.is_some() {
        eprint!("If you don't see a command prompt, try pressing enter.\r\n");
    }
    copy(
        &mut mon,
        &container,
        vec![(out_r, Box::new(io::stdout())), (err_r, Box::new(io::stderr()))],
        &mut input,
        winch,
    )
}

/// Sends our terminal's size now and returns the signalfd that tells of each change.
fn resize_on_winch(mon: &mut Monitor, container: &str) -> Result<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGWINCH);
    mask.thread_block().context("block SIGWINCH")?;
    let winch = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    resize(mon, container)?;
    Ok(winch)
}

fn resize(mon: &mut Monitor, container: &str) -> Result<()> {
    if let Some(ws) = window_size(io::stdout().as_fd()) {
        let req = Request::Resize { name: container.to_string(), rows: ws.ws_row, cols: ws.ws_col };
        mon.request(&req).map_err(monitor_error)?;
    }
    Ok(())
}

/// Copies the container's output to ours and our input to its stdin until its output
/// ends (it exited, or the monitor let us go).
fn copy(
    mon: &mut Monitor,
    container: &str,
    mut outs: Vec<(File, Box<dyn Write>)>,
    input: &mut Option<File>,
    winch: Option<SignalFd>,
) -> Result<i32> {
    let mut buf = [0u8; 16 * 1024];
    while !outs.is_empty() {
        let stdin = io::stdin();
        let mut fds: Vec<PollFd<'_>> = outs.iter().map(|(f, _)| PollFd::new(f.as_fd(), PollFlags::POLLIN)).collect();
        let n_outs = fds.len();
        fds.push(PollFd::new(mon.fd(), PollFlags::POLLIN));
        let winch_at = winch.as_ref().map(|w| {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let stdin_at = input.is_some().then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let Some((_, ready)) = wait(&mut fds, mon.pending())? else { continue };
        drop(fds);
        copy_ready(&mut outs, &ready, &mut buf);
        if ready[n_outs] || mon.pending() {
            // Other containers' exits and the like: not ours to show. A monitor that is
            // gone closed our pipes too.
            if mon.events().is_err() {
                break;
            }
        }
        if let (Some(w), Some(at)) = (&winch, winch_at)
            && ready[at]
        {
            while w.read_signal().ok().flatten().is_some() {}
            resize(mon, container)?;
        }
        if let Some(at) = stdin_at
            && ready[at]
        {
            let read = io::stdin().lock().read(&mut buf);
            let forwarded = match (read, input.as_mut()) {
                (Ok(n), Some(w)) if n > 0 => w.write_all(&buf[..n]).is_ok(),
                _ => false,
            };
            if !forwarded {
                // Our input ended: so does the container's, if it has stdinOnce.
                *input = None;
                mon.request(&Request::CloseStdin { name: container.to_string() }).map_err(monitor_error)?;
            }
        }
    }
    Ok(0)
}
