//! Processes: pidfds, the prctls we use, what /proc says of a process (start time,
//! state, threads), and reaping exited children.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::check;

/// A pidfd for `pid`: signals sent through it cannot reach a recycled pid.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; the fd returned is ours.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: a null siginfo is allowed and means "as kill(2) would send it".
    check(unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, std::ptr::null::<libc::siginfo_t>(), 0)
    })?;
    Ok(())
}

/// kill(2) of one process. A pid of 0 or less is refused (ESRCH): kill(2) would take it
/// as our own process group, or every process we may signal, and a pid not yet known is
/// often 0 (an exec whose setup failed before its process had a pid once SIGKILLed the
/// caller's whole process group: a test suite and the shell that ran it).
pub fn kill(pid: i32, signal: impl Into<Option<nix::sys::signal::Signal>>) -> nix::Result<()> {
    if pid <= 0 {
        return Err(nix::errno::Errno::ESRCH);
    }
    nix::sys::signal::kill(Pid::from_raw(pid), signal.into())
}

/// prctl(2) with one integer argument.
fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(option, arg, 0, 0, 0) } as libc::c_long)?;
    Ok(())
}

/// Makes this process a subreaper, so orphaned descendants (a container's init after
/// its intermediate parent exits) become our children and we can wait for them.
pub fn set_child_subreaper() -> io::Result<()> {
    prctl(libc::PR_SET_CHILD_SUBREAPER, 1)
}

/// Asks for `signal` when our parent dies (a container init whose `create` was killed).
pub fn set_parent_death_signal(signal: i32) -> io::Result<()> {
    prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong)
}

pub fn set_no_new_privs() -> io::Result<()> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
}

pub fn set_keep_caps(keep: bool) -> io::Result<()> {
    prctl(libc::PR_SET_KEEPCAPS, keep as libc::c_ulong)
}

/// Field 22 (starttime, in clock ticks since boot) and field 3 (state) of /proc/PID/stat.
pub fn stat_of(pid: i32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// When `pid` started; with the pid, it names a process that a recycled pid cannot fake.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_of(pid).map(|(s, _)| s)
}

/// Whether `pid` is still the process that started at `start` (and not a zombie).
pub fn alive(pid: i32, start: u64) -> bool {
    matches!(stat_of(pid), Some((s, state)) if s == start && state != 'Z' && state != 'X')
}

/// How many threads this process has now.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1)
}

/// Waits (up to about 200 ms) for threads that have been joined to leave
/// /proc/self/task: a joined thread's task may linger a moment, and a process that is
/// about to fork must see itself single-threaded.
pub fn wait_single_threaded() {
    for _ in 0..1000 {
        if thread_count() <= 1 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// A child that ended, as a shell reports it: its exit code, or 128+n for signal n.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reaped {
    pub pid: i32,
    pub code: i32,
    /// The signal that ended it, if one did (`code` is then 128 + it).
    pub signal: Option<i32>,
}

/// Reaps every child that has ended, without blocking (a subreaper gets orphans too).
/// The one reaping loop: stopped and continued children are passed over.
pub fn reap_exited() -> impl Iterator<Item = Reaped> {
    std::iter::from_fn(|| {
        loop {
            return match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => Some(Reaped { pid: pid.as_raw(), code, signal: None }),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    Some(Reaped { pid: pid.as_raw(), code: 128 + sig as i32, signal: Some(sig as i32) })
                }
                Ok(WaitStatus::StillAlive) | Err(_) => None,
                Ok(_) => continue,
            };
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_of_zero_or_less_is_never_signalled() {
        // SIGCONT: were the guard gone, our process group would only be woken.
        for pid in [0, -1, -(std::process::id() as i32)] {
            assert_eq!(kill(pid, nix::sys::signal::Signal::SIGCONT), Err(nix::errno::Errno::ESRCH), "{pid}");
        }
        assert_eq!(kill(std::process::id() as i32, None), Ok(()));
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let start = start_time(me).unwrap();
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
        assert!(!alive(i32::MAX, 0));
    }
}
