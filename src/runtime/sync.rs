//! The channel between `create` and the container's init while the container is being
//! set up: a SOCK_SEQPACKET socketpair carrying one JSON message per packet. The init's
//! end closes when it execs or dies, so a silent death reads as end of file, not a hang.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, socketpair};
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
    /// Init → parent: the seccomp filter has a notify listener; its descriptor comes
    /// with this message (SCM_RIGHTS), for the agent at the profile's listenerPath.
    SeccompFd,
    /// Parent → init: the agent has the listener; close yours and go on.
    SeccompDone,
    /// Init → parent: my mount namespace is made but, in a user namespace, I may not be
    /// able to reach the bind sources: open them for me (as runc's nsexec asks).
    MountSources,
    /// Parent's helper → init: the sources of these `mounts` indexes, open O_PATH in the
    /// init's mount namespace, come with this message in the same order.
    MountFds { indexes: Vec<usize> },
    /// Parent → init: every source that could be opened was sent.
    MountSourcesDone,
    /// Init → parent: set up and waiting for `start`.
    Ready,
    /// Init → parent: setup failed.
    Error(String),
}

/// The most descriptors one message carries (the kernel's limit is 253).
pub const MAX_FDS: usize = 64;

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

    /// Sends `msg` with `fds` attached (SCM_RIGHTS, at most MAX_FDS); the receiver gets
    /// its own copies.
    pub fn send_with_fds(&self, msg: &Msg, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::other(format!("{} descriptors in one message, at most {MAX_FDS}", fds.len())));
        }
        let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        nix::sys::socket::sendmsg::<()>(
            self.fd.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(io::Error::from)?;
        Ok(())
    }

    /// The next message; `None` when the other end is closed. Descriptors sent with it
    /// are closed: see `recv_with_fds`.
    pub fn recv(&self) -> io::Result<Option<Msg>> {
        Ok(self.recv_with_fds()?.map(|(m, _)| m))
    }

    /// The next message and the descriptors that came with it, in the order sent.
    pub fn recv_with_fds(&self) -> io::Result<Option<(Msg, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let r = nix::sys::socket::recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let (n, fds) = match r {
                Ok(m) => {
                    let mut fds = Vec::new();
                    for c in m.cmsgs().map_err(io::Error::from)? {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            // SAFETY: SCM_RIGHTS gave us these descriptors: each is new in
                            // this process and owned by nothing else.
                            fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                        }
                    }
                    (m.bytes, fds)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Ok(None);
            }
            return serde_json::from_slice(&buf[..n]).map(|m| Some((m, fds))).map_err(io::Error::other);
        }
    }
}
