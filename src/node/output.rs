//! A container's output stream (its stdout or its stderr): a pipe the container writes into
//! and the monitor reads without blocking, cut into lines (pieces of at most MAX_LINE), so
//! that lines of different containers are never mixed mid-line wherever they go.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Lines longer than this are passed on in pieces rather than held without bound (the
/// kubelet's CRI logs split at 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// One pipe from a container to its monitor.
pub struct Stream {
    read: OwnedFd,
    /// Kept open for the container's life, across restarts, so a restarted container writes
    /// into the same pipe and we never see end-of-file while the pod lives.
    pub write: OwnedFd,
    partial: Vec<u8>,
}

/// A piece of output: a whole line without its newline (`complete`), or a part of one.
pub type Sink<'a> = dyn FnMut(&[u8], bool) + 'a;

impl Stream {
    pub fn new() -> io::Result<Stream> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        // Only our end is non-blocking: a container writing into a full pipe waits for us.
        let flags = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Stream { read, write, partial: Vec::new() })
    }

    /// A terminal's master as the stream (a container with `tty: true`): what the container
    /// writes to its terminal is read here; `write` is the master too, for its input.
    pub fn terminal(master: OwnedFd) -> io::Result<Stream> {
        let write = master.try_clone()?;
        let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Stream { read: master, write, partial: Vec::new() })
    }

    pub fn read_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Reads what is there and passes complete lines (and over-long pieces) on.
    pub fn pump(&mut self, sink: &mut Sink<'_>) {
        self.pump_tapped(&mut |_| {}, sink)
    }

    /// As [`Stream::pump`], and each piece read goes to `tap` as it came (an attached
    /// client sees a prompt that ends no line).
    pub fn pump_tapped(&mut self, tap: &mut dyn FnMut(&[u8]), sink: &mut Sink<'_>) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    tap(&buf[..n]);
                    self.partial.extend_from_slice(&buf[..n]);
                    self.emit(false, sink);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }

    /// Passes on what is left of an unfinished line too (the container exited mid-line).
    pub fn flush_tapped(&mut self, tap: &mut dyn FnMut(&[u8]), sink: &mut Sink<'_>) {
        self.pump_tapped(tap, sink);
        self.emit(true, sink);
    }

    pub fn flush(&mut self, sink: &mut Sink<'_>) {
        self.flush_tapped(&mut |_| {}, sink)
    }

    fn emit(&mut self, all: bool, sink: &mut Sink<'_>) {
        let mut start = 0;
        while start < self.partial.len() {
            let rest = &self.partial[start..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i <= MAX_LINE => {
                    sink(&rest[..i], true);
                    start += i + 1;
                }
                _ if rest.len() >= MAX_LINE => {
                    sink(&rest[..MAX_LINE], false);
                    start += MAX_LINE;
                }
                _ if all => {
                    sink(rest, true);
                    start = self.partial.len();
                }
                _ => break,
            }
        }
        self.partial.drain(..start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_into_lines_and_long_lines_into_pieces() {
        let mut s = Stream::new().unwrap();
        let long = vec![b'x'; MAX_LINE + 10];
        let mut input = b"one\ntw".to_vec();
        nix::unistd::write(&s.write, &input).unwrap();
        let mut got: Vec<(Vec<u8>, bool)> = Vec::new();
        s.pump(&mut |l, c| got.push((l.to_vec(), c)));
        assert_eq!(got, [(b"one".to_vec(), true)]);
        input = b"o\n".to_vec();
        input.extend_from_slice(&long);
        nix::unistd::write(&s.write, &input).unwrap();
        got.clear();
        s.flush(&mut |l, c| got.push((l.to_vec(), c)));
        assert_eq!(got, [(b"two".to_vec(), true), (vec![b'x'; MAX_LINE], false), (vec![b'x'; 10], true)]);
    }
}
