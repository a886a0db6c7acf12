//! Advisory file locks between nodectl processes that share a state root.

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
