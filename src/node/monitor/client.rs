//! The owner's side of a monitor: starting one, asking it things, and hearing of exits.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::protocol::{self, Message, Request};
use crate::node::PlanError;
use crate::node::crilog::Rotation;

/// A pod's monitor, as its owner holds it.
pub struct Monitor {
    conn: UnixStream,
    buf: Vec<u8>,
    /// Descriptors that came with messages (a terminal's master with ExecStarted).
    fds: VecDeque<std::os::fd::OwnedFd>,
    events: VecDeque<Message>,
    child: Option<Child>,
}

/// What a new monitor said once it made the sandbox.
#[derive(Clone, Debug)]
pub struct Ready {
    pub ip: Option<Ipv4Addr>,
    pub hostname: String,
}

fn lost(what: &str) -> impl FnOnce(io::Error) -> PlanError + '_ {
    move |e| PlanError::Monitor(format!("{what}: {e}"))
}

/// Starts the monitor of the pod `uid` (its directory and record exist) and waits until it
/// made the pod's sandbox. With `owner`, the monitor dies with this process (the foreground
/// `nodectl run`) and shares its stdout and stderr, for containers' echoed output.
pub fn spawn(root: &Path, uid: &str, owner: bool, rotation: Rotation) -> Result<(Monitor, Ready), PlanError> {
    let (ours, theirs) = UnixStream::pair().map_err(PlanError::io("socketpair for the pod's monitor"))?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("--root").arg(root).arg("monitor").arg(uid);
    cmd.arg("--log-max-size").arg(rotation.max_size.to_string());
    cmd.arg("--log-max-files").arg(rotation.max_files.to_string());
    if owner {
        cmd.arg("--owner").arg(std::process::id().to_string());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    cmd.stdin(Stdio::null());
    let fd = theirs.as_raw_fd();
    // SAFETY: between fork and exec only dup2 runs, which is async-signal-safe; it puts
    // the control socket on fd 3 (without close-on-exec) where the monitor expects it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(PlanError::io("start the pod's monitor"))?;
    drop(theirs);
    let mut m =
        Monitor { conn: ours, buf: Vec::new(), fds: VecDeque::new(), events: VecDeque::new(), child: Some(child) };
    match m.next(true).map_err(lost("the pod's monitor"))? {
        Some(Message::Ready { ip, hostname }) => Ok((m, Ready { ip, hostname })),
        Some(Message::Failed { error }) => {
            m.wait();
            Err(PlanError::Monitor(error))
        }
        Some(other) => Err(PlanError::Monitor(format!("the pod's monitor said {other:?} first"))),
        None => {
            m.wait();
            Err(PlanError::Monitor("the pod's monitor exited before making the sandbox".into()))
        }
    }
}

/// Connects to the running monitor of a pod (a daemon that restarted finds its pods' monitors).
pub fn connect(socket: &Path) -> Result<Monitor, PlanError> {
    let conn = UnixStream::connect(socket).map_err(lost("connect to the pod's monitor"))?;
    Ok(Monitor { conn, buf: Vec::new(), fds: VecDeque::new(), events: VecDeque::new(), child: None })
}

impl Monitor {
    /// The socket to poll for messages.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.conn.as_fd()
    }

    /// Asks, and waits for the answer (exits heard meanwhile are kept for [`Monitor::events`]).
    pub fn request(&mut self, req: &Request) -> Result<Message, PlanError> {
        self.request_with(req, &[])
    }

    /// Asks with descriptors attached (an exec's stdio), and waits for the answer.
    pub fn request_with(&mut self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<Message, PlanError> {
        let line = protocol::encode(req);
        let sent = if fds.is_empty() {
            0
        } else {
            crate::sys::fdpass::send(self.conn.as_fd(), &line, fds).map_err(lost("asking the pod's monitor"))?
        };
        self.conn.write_all(&line[sent..]).map_err(lost("asking the pod's monitor"))?;
        loop {
            match self.next(true).map_err(lost("the pod's monitor"))? {
                Some(m) if m.is_reply() => return Ok(m),
                Some(m) => self.events.push_back(m),
                None => return Err(PlanError::Monitor("the pod's monitor exited".into())),
            }
        }
    }

    /// A descriptor that came with the last answers (a terminal's master).
    pub fn take_fd(&mut self) -> Option<std::os::fd::OwnedFd> {
        self.fds.pop_front()
    }

    /// Whether messages were already read from the socket and not yet taken: a request
    /// reads past its answer, so polling the socket alone would miss them.
    pub fn pending(&self) -> bool {
        !self.events.is_empty() || self.buf.contains(&b'\n')
    }

    /// What the monitor said without being asked, without waiting. Err once it is gone.
    pub fn events(&mut self) -> Result<Vec<Message>, PlanError> {
        loop {
            match self.next(false) {
                Ok(Some(m)) => self.events.push_back(m),
                Ok(None) if self.events.is_empty() => {
                    return Err(PlanError::Monitor("the pod's monitor exited".into()));
                }
                Ok(None) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(lost("the pod's monitor")(e)),
            }
        }
        Ok(self.events.drain(..).collect())
    }

    /// The next message: Ok(None) at end of file; WouldBlock if `wait` is false and none
    /// is there yet.
    fn next(&mut self, wait: bool) -> io::Result<Option<Message>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return serde_json::from_slice(&line[..i])
                    .map(Some)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if self.buf.len() > protocol::MAX_LINE {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "a line longer than 64 KiB"));
            }
            let mut chunk = [0u8; 4096];
            let (n, fds) = crate::sys::fdpass::recv(self.conn.as_fd(), &mut chunk, wait)?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
            self.fds.extend(fds);
        }
    }

    /// Waits for the monitor process to end (after a Teardown, or a failure).
    pub fn wait(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::reconcile::Terminated;
    use std::time::SystemTime;

    fn exited() -> Message {
        let t = Terminated {
            exit_code: 2,
            signal: None,
            oom_killed: false,
            message: None,
            started_at: None,
            finished_at: SystemTime::now(),
            unknown: false,
        };
        Message::Exited { name: "c".into(), terminated: t }
    }

    #[test]
    fn an_exit_read_along_with_an_answer_is_pending_not_lost() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut m = Monitor { conn: ours, buf: Vec::new(), fds: VecDeque::new(), events: VecDeque::new(), child: None };
        // The container exits before, and right after, the monitor answers: one write
        // carries both, so the socket has nothing left to poll for.
        let mut bytes = protocol::encode(&exited());
        bytes.extend(protocol::encode(&Message::Done { error: None }));
        bytes.extend(protocol::encode(&exited()));
        theirs.write_all(&bytes).unwrap();
        let answer = m.request(&Request::Signal { name: "c".into(), signal: 9 }).unwrap();
        assert!(matches!(answer, Message::Done { .. }), "{answer:?}");
        assert!(m.pending());
        assert_eq!(m.events().unwrap().len(), 2);
        assert!(!m.pending());
    }
}
