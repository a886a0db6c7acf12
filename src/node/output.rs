//! Containers' output on our stdout and stderr: each container writes into pipes of ours,
//! read without blocking; whole lines are passed on, prefixed by the container's name when
//! the pod has several, so lines of different containers never interleave mid-line.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Lines longer than this are passed on in pieces rather than held without bound.
const MAX_LINE: usize = 64 * 1024;

/// One pipe from a container (its stdout or its stderr) to ours.
pub struct Stream {
    read: OwnedFd,
    /// Kept open for the container's life, across restarts, so a restarted container writes
    /// into the same pipe and we never see end-of-file while the pod lives.
    pub write: OwnedFd,
    prefix: String,
    to_stderr: bool,
    partial: Vec<u8>,
}

impl Stream {
    pub fn new(prefix: Option<&str>, to_stderr: bool) -> io::Result<Stream> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        // Only our end is non-blocking: a container writing into a full pipe waits for us.
        let flags = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Stream {
            read,
            write,
            prefix: prefix.map(|p| format!("[{p}] ")).unwrap_or_default(),
            to_stderr,
            partial: Vec::new(),
        })
    }

    pub fn read_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Reads what is there and passes complete lines on.
    pub fn pump(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.partial.extend_from_slice(&buf[..n]);
                    self.emit(false);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }

    /// Passes on what is left of an unfinished line (the container exited mid-line).
    pub fn flush(&mut self) {
        self.pump();
        self.emit(true);
    }

    fn emit(&mut self, all: bool) {
        let end = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if all || self.partial.len() >= MAX_LINE => self.partial.len(),
            None => return,
        };
        if end == 0 {
            return;
        }
        let chunk: Vec<u8> = self.partial.drain(..end).collect();
        let mut out = Vec::with_capacity(chunk.len() + 16);
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend_from_slice(line);
            if line.last() != Some(&b'\n') {
                out.push(b'\n');
            }
        }
        // A closed stdout (a pipe to `head`) must not stop the pod.
        let _ = if self.to_stderr {
            io::stderr().lock().write_all(&out)
        } else {
            io::stdout().lock().write_all(&out).and_then(|()| io::stdout().flush())
        };
    }
}
