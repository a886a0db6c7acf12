//! Descriptors passed over unix sockets (SCM_RIGHTS) along with bytes: a pod's monitor
//! and its clients hand each other the ends of an exec's pipes and terminals this way.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most descriptors one message carries (stdin, stdout, stderr).
pub const MAX_FDS: usize = 3;

/// Sends `bytes` with `fds` attached to the first byte. Returns how much of `bytes` went.
pub fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [io::IoSlice::new(bytes)];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
    let cmsgs: &[nix::sys::socket::ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    loop {
        match nix::sys::socket::sendmsg::<()>(
            sock.as_raw_fd(),
            &iov,
            cmsgs,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives bytes into `buf`, and the descriptors that came with them (close-on-exec).
/// `wait` false: WouldBlock when nothing is there.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8], wait: bool) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut flags = nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC;
    if !wait {
        flags |= nix::sys::socket::MsgFlags::MSG_DONTWAIT;
    }
    loop {
        let mut iov = [io::IoSliceMut::new(buf)];
        let msg = match nix::sys::socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: each fd arrived with SCM_RIGHTS just now; nothing else owns it.
                fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        return Ok((msg.bytes, fds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_pipe_end_sent_with_a_line_arrives_with_it_and_works() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        assert_eq!(send(a.as_fd(), b"line\n", &[w.as_fd()]).unwrap(), 5);
        drop(w);
        let mut buf = [0u8; 16];
        let (n, fds) = recv(b.as_fd(), &mut buf, true).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"line\n"[..], 1));
        std::fs::File::from(fds.into_iter().next().unwrap()).write_all(b"through").unwrap();
        let mut got = String::new();
        std::fs::File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "through");
        assert_eq!(recv(b.as_fd(), &mut buf, false).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}
