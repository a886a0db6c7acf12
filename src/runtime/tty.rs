//! `run` in the foreground with `process.terminal` and no `--console-socket`, as runc
//! does it: we take the pty master ourselves and copy between it and our own stdio (in
//! raw mode when that is a terminal), pass window size changes on, and forward signals,
//! until the container's init exits.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};

/// The master end of the pty the init sent over `sock` (SCM_RIGHTS).
pub fn receive_master(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 256];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in msg.cmsgs()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the fd arrived with SCM_RIGHTS just now and nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(io::Error::other("the container sent no pty"))
}

/// Puts our stdin in raw mode while it lives, if it is a terminal.
struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

fn copy_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes and TIOCSWINSZ reads one winsize struct we own.
    unsafe {
        if libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Copies between our stdio and `master` and handles the signals in `set` (already
/// blocked) until `pid` exits; its exit code.
pub fn proxy_until_exit(pid: i32, set: &SigSet, master: OwnedFd, reap: impl Fn(i32) -> Option<i32>) -> io::Result<i32> {
    let _raw = RawMode::enter();
    let stdin = io::stdin();
    copy_size(stdin.as_fd(), master.as_fd());
    let sfd = SignalFd::with_flags(set, SfdFlags::SFD_CLOEXEC).map_err(io::Error::from)?;
    let mut stdin_open = true;
    let mut master_open = true;
    let mut buf = vec![0u8; 32 * 1024];
    let mut exited: Option<i32> = reap(pid);
    loop {
        if let Some(code) = exited
            && !master_open
        {
            return Ok(code);
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if master_open {
            fds.push(PollFd::new(master.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open && exited.is_none() {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        // Once the init is gone, only drain what the pty still holds.
        let timeout = if exited.is_some() { PollTimeout::from(50u16) } else { PollTimeout::NONE };
        match poll(&mut fds, timeout) {
            Ok(0) => return Ok(exited.unwrap_or(0)),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        if ready[0]
            && let Ok(Some(info)) = sfd.read_signal()
        {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => exited = exited.or_else(|| reap(pid)),
                Ok(Signal::SIGWINCH) => copy_size(stdin.as_fd(), master.as_fd()),
                Ok(sig) => {
                    let _ = crate::sys::process::kill(pid, sig);
                }
                Err(_) => {}
            }
        }
        let mut i = 1;
        if master_open {
            if ready[i] {
                match nix::unistd::read(&master, &mut buf) {
                    Ok(0) | Err(nix::errno::Errno::EIO) => master_open = false,
                    Ok(n) => write_all(io::stdout().as_fd(), &buf[..n]),
                    Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                    Err(_) => master_open = false,
                }
            }
            i += 1;
        }
        if stdin_open && exited.is_none() && ready.get(i).copied().unwrap_or(false) {
            match nix::unistd::read(&stdin, &mut buf) {
                Ok(0) => stdin_open = false,
                Ok(n) => write_all(master.as_fd(), &buf[..n]),
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}
