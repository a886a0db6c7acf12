//! `kubectl attach`: a running container's own stdio, as `nodectl attach` has it. The pod's
//! monitor copies what the container writes from now on to pipes of ours and hands back
//! its end of the container's stdin (a pipe, or its terminal's master), for as long as our
//! connection to it stays open. Resizes and the end of our input go to the monitor, which
//! owns the terminal and knows whether the container's stdin is closed with it (stdinOnce).
//! The session ends when the container's output does (it exited), or when the client goes.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use super::{Options, STDERR, STDOUT, Started, Steer, Steering, pipe};
use crate::node::monitor::client::Monitor;
use crate::node::monitor::protocol::{Message, Request};

/// How often the steering thread reads what the monitor says unasked, so that its
/// messages never fill our socket.
const DRAIN_EVERY: Duration = Duration::from_millis(200);

/// Attaches (blocking: the monitor answers at once) and hands the monitor to a thread
/// that steers the container for the session.
pub fn start(mut mon: Monitor, container: String, o: &Options) -> Result<Started, String> {
    let (out_r, out_w) = pipe().map_err(|e| e.to_string())?;
    let (err_r, err_w) = pipe().map_err(|e| e.to_string())?;
    let answer = mon
        .request_with(&Request::Attach { name: container.clone() }, &[out_w.as_fd(), err_w.as_fd()])
        .map_err(|e| e.to_string())?;
    drop((out_w, err_w));
    let has_stdin = match answer {
        Message::Attached { stdin, .. } => stdin,
        Message::Error { error } => return Err(error),
        other => return Err(format!("the pod's monitor answered {other:?}")),
    };
    let stdin: Option<File> = match has_stdin {
        true => Some(File::from(mon.take_fd().ok_or("the pod's monitor sent no stdin")?)),
        false => None,
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || steer(mon, &container, &rx));
    Ok(Started {
        stdin: if o.stdin { stdin } else { None },
        outputs: vec![(STDOUT, out_r), (STDERR, err_r)],
        steering: Steering::Monitor(tx),
        end: None,
    })
}

/// Passes resizes and the end of input on until the session drops its sender; dropping
/// the monitor then ends the attachment, which closes our output pipes.
fn steer(mut mon: Monitor, container: &str, rx: &mpsc::Receiver<Steer>) {
    loop {
        let req = match rx.recv_timeout(DRAIN_EVERY) {
            Ok(Steer::Resize { rows, cols }) => Some(Request::Resize { name: container.to_string(), rows, cols }),
            Ok(Steer::InputEnded) => Some(Request::CloseStdin { name: container.to_string() }),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // A resize of a container without a terminal is refused; nothing to tell the client.
        if let Some(req) = req
            && mon.request(&req).is_err()
        {
            return;
        }
        if mon.events().is_err() {
            return;
        }
    }
}
