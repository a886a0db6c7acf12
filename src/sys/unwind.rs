//! Where a panic may unwind, and where it must end the process.
//!
//! The release profile unwinds (`panic = "unwind"`) so that a bug reached by one API
//! request ends that request with a 500 and not the whole server. Everywhere else a panic
//! still aborts, as with `panic = "abort"`: [`install`] sets a process-wide panic hook
//! that aborts unless the panicking thread is inside a region that opted in
//! ([`Unwinding`] for futures, [`unwinding`] for closures).
//!
//! Why a hook and not a guard around each fork: the runtime forks and clones children
//! (runtime::container, runtime::init, node::namespaces) and runs threads inside other
//! namespaces (network::netns). A child that unwound would run the parent's code paths
//! after the fork (its destructors, its error handling, possibly its `main` loop) in the
//! wrong process, and a namespace thread that unwound would run destructors in the wrong
//! namespace. A hook covers all of them, including any fork added later, without each
//! child body remembering a wrapper: the opt-in is a thread-local flag, which is false on
//! every new thread and, after a fork, is whatever the forking thread had; no API handler
//! forks. The hook runs before any unwinding starts, so nothing of the parent's runs.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// True while this thread runs code whose panic may unwind to a catch_unwind.
    static MAY_UNWIND: Cell<bool> = const { Cell::new(false) };
}

/// Installs the hook: the default report (message and location on stderr), then abort
/// unless the thread is in an opted-in region. Called first thing in `main`.
pub fn install() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        if !may_unwind() {
            std::process::abort();
        }
    }));
}

/// Whether a panic on this thread now would unwind.
pub fn may_unwind() -> bool {
    MAY_UNWIND.with(Cell::get)
}

/// Sets the flag for the life of the value, and puts the previous value back on drop
/// (also when a panic unwinds through it).
struct Region(bool);

impl Region {
    fn enter() -> Region {
        Region(MAY_UNWIND.with(|f| f.replace(true)))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        MAY_UNWIND.with(|f| f.set(self.0));
    }
}

/// Runs `f` in a region where a panic unwinds (to the caller's catch_unwind, or to a
/// spawn_blocking's JoinError).
pub fn unwinding<T>(f: impl FnOnce() -> T) -> T {
    let _region = Region::enter();
    f()
}

/// A future polled in a region where a panic unwinds; its owner catches it
/// (`futures_util::FutureExt::catch_unwind`, or a tokio task's JoinError).
pub struct Unwinding<F>(pub F);

impl<F: Future> Future for Unwinding<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: a projection to the only field, which is never moved out of the pin.
        let inner = unsafe { self.map_unchecked_mut(|u| &mut u.0) };
        let _region = Region::enter();
        inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks; the child installs the hook and runs `body`, then `_exit(0)`s if the body
    /// returned. Answers how the child ended.
    fn in_child(body: fn()) -> nix::sys::wait::WaitStatus {
        // SAFETY: the child only runs `body` and _exits; the test's other threads are not
        // touched (glibc's malloc is fork-safe).
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                std::panic::set_hook(Box::new(|_| {}));
                install();
                body();
                // SAFETY: _exit skips the test harness's destructors, which belong to the parent.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => nix::sys::wait::waitpid(child, None).expect("waitpid"),
        }
    }

    #[test]
    fn a_forked_child_that_panics_aborts_instead_of_returning_into_the_parent() {
        let status = in_child(|| {
            // Were the panic to unwind, catch_unwind would return and the child would
            // go on into code that is the parent's: exit 7 says it did.
            if std::panic::catch_unwind(|| panic!("in the child")).is_err() {
                // SAFETY: as above.
                unsafe { libc::_exit(7) }
            }
        });
        assert!(
            matches!(status, nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGABRT, _)),
            "{status:?}"
        );
    }

    #[test]
    fn a_panic_inside_an_opted_in_region_unwinds_to_its_catcher() {
        let status = in_child(|| {
            let caught = std::panic::catch_unwind(|| unwinding(|| panic!("in a handler")));
            assert!(!may_unwind(), "the region ends with the unwinding");
            // SAFETY: as above.
            unsafe { libc::_exit(if caught.is_err() { 9 } else { 1 }) }
        });
        assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 9)), "{status:?}");
    }
}
