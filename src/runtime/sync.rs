//! The channel between `create` and the container's init while the container is being
//! set up: a SOCK_SEQPACKET socketpair carrying one JSON message per packet. The init's
//! end closes when it execs or dies, so a silent death reads as end of file, not a hang.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Parent → init: you are in the cgroup, go on.
    Go,
    /// Init → parent: I have a new user namespace; write my id maps.
    MapUsers,
    /// Parent → init: the maps are written.
    Mapped,
    /// Init → parent: the container's init process is this pid (in the parent's pid
    /// namespace); 0 when it is the process the parent forked, which, already PID 1 of
    /// its namespace, cannot know its pid outside.
    Pid { pid: i32 },
    /// Parent → init: the state JSON hooks get on stdin, once the init's pid is known
    /// (sent only when the spec has createContainer or startContainer hooks).
    State(String),
    /// Init → parent: mounts are done and pivot_root is next; run prestart and
    /// createRuntime hooks now.
    RunHooks,
    /// Parent → init: hooks ran.
    HooksDone,
    /// Init → parent: set up and waiting for `start`.
    Ready,
    /// Init → parent: setup failed.
    Error(String),
}

pub struct Channel {
    fd: OwnedFd,
}

pub fn pair() -> io::Result<(Channel, Channel)> {
    let (a, b) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, msg: &Msg) -> io::Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
        nix::sys::socket::send(self.fd.as_raw_fd(), &bytes, nix::sys::socket::MsgFlags::MSG_NOSIGNAL)
            .map_err(io::Error::from)?;
        Ok(())
    }

    /// The next message; `None` when the other end is closed.
    pub fn recv(&self) -> io::Result<Option<Msg>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match nix::sys::socket::recv(self.fd.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => return serde_json::from_slice(&buf[..n]).map(Some).map_err(io::Error::other),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
