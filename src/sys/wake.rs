//! A queue whose receiver can be polled: each send also writes a byte to a pipe, so a
//! thread that waits in poll(2) on other descriptors (a pod's owner: its monitor, its
//! control, its probes) wakes when something is queued for it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, mpsc};

/// The sending end; cloned for each thread that sends.
pub struct Sender<T> {
    tx: mpsc::Sender<T>,
    write: Arc<OwnedFd>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender { tx: self.tx.clone(), write: self.write.clone() }
    }
}

impl<T> Sender<T> {
    /// Queues `value` and wakes the receiver. A receiver that is gone loses it.
    pub fn send(&self, value: T) {
        if self.tx.send(value).is_ok() {
            // Non-blocking: a full pipe already says there is something to take.
            let _ = nix::unistd::write(self.write.as_fd(), b"!");
        }
    }
}

/// The receiving end: poll [`Receiver::fd`], then [`Receiver::take`]. Once every sender
/// is gone the descriptor stays readable (the pipe hung up).
pub struct Receiver<T> {
    rx: mpsc::Receiver<T>,
    read: OwnedFd,
}

impl<T> Receiver<T> {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// What was queued, oldest first, without waiting.
    pub fn take(&mut self) -> Vec<T> {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(&self.read, &mut buf), Ok(n) if n > 0) {}
        self.rx.try_iter().collect()
    }
}

pub fn channel<T>() -> io::Result<(Sender<T>, Receiver<T>)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    let (tx, rx) = mpsc::channel();
    Ok((Sender { tx, write: Arc::new(write) }, Receiver { rx, read }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_from_another_thread_makes_the_receiver_readable_and_arrives_in_order() {
        let (tx, mut rx) = channel().unwrap();
        // Kept: once every sender is gone the pipe reads as hung up, always readable.
        let _kept = tx.clone();
        std::thread::spawn(move || {
            tx.send(1);
            tx.send(2);
        })
        .join()
        .unwrap();
        let mut fds = [nix::poll::PollFd::new(rx.fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap(), 1);
        assert_eq!(rx.take(), [1, 2]);
        let mut fds = [nix::poll::PollFd::new(rx.fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap(), 0, "drained");
    }
}
