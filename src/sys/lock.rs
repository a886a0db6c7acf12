//! Advisory file locks (flock(2)) between processes that share a directory: the image
//! store, the runtime's state, the pod records and the address pool all use these.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

pub struct FileLock {
    _lock: Flock<File>,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)
}

impl FileLock {
    pub fn shared(path: &Path) -> io::Result<FileLock> {
        Self::take(path, FlockArg::LockShared)
    }

    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        Self::take(path, FlockArg::LockExclusive)
    }

    /// The exclusive lock if no one holds the file locked, else None (without waiting).
    pub fn try_exclusive(path: &Path) -> io::Result<Option<FileLock>> {
        let file = open(path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(FileLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(io::Error::from(e)),
        }
    }

    fn take(path: &Path, arg: FlockArg) -> io::Result<FileLock> {
        let file = open(path)?;
        // flock(2) blocks until granted; EINTR is retried by the caller's next attempt.
        loop {
            match Flock::lock(file.try_clone()?, arg) {
                Ok(lock) => return Ok(FileLock { _lock: lock }),
                Err((_, nix::errno::Errno::EINTR)) => continue,
                Err((_, e)) => return Err(io::Error::from(e)),
            }
        }
    }
}
