//! `nodectl run`: one pod in the foreground, as `docker run` runs one container. Init
//! containers one at a time in order, then every container; output passed on line by
//! line; restarts as restartPolicy says, with the kubelet's backoff; SIGINT or SIGTERM
//! stops the pod gracefully (SIGTERM to each container, SIGKILL after the grace period, at
//! once on a second signal). The exit code is the first failing container's, or 0.
//!
//! This process is the pod's owner ([`crate::node::owner`]), the same way the daemon is: it
//! holds the pod's lock, its monitor dies with it, and what happens is printed on stderr
//! (here, at the command line's edge: the node library itself prints nothing).

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::model::manifest::Manifest;
use crate::node::PlanError;
use crate::node::owner::{self, Command, Control, Event, Reporter};

pub use crate::node::owner::PodOptions as RunOptions;

/// A message on our stderr. Not eprintln!: it panics when stderr is a closed pipe
/// (`nodectl run pod.yaml 2>&1 | head -1`), and a panic aborts this process, leaving the
/// pod's containers running with no one to supervise or remove them.
fn say(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "nodectl: {msg}");
}

/// What happens, on stderr.
struct Printer {
    /// The pod has more than one container: every exit is said.
    several: bool,
}

impl Reporter for Printer {
    fn report(&mut self, event: Event) {
        match event {
            Event::Warning(w) => say(&format!("warning: {w}")),
            Event::Started { .. } | Event::Pulling { .. } | Event::Pulled { .. } | Event::Created { .. } => {}
            Event::CouldNotStart { name, error } | Event::ConfigError { name, message: error } => {
                say(&format!("container {name}: could not start: {error}"))
            }
            Event::Exited { name, terminated: t } => {
                if t.oom_killed {
                    say(&format!(
                        "container {name} was killed by the OOM killer (OOMKilled), exit code {}",
                        t.exit_code
                    ));
                } else if t.exit_code != 0 || self.several {
                    say(&format!("container {name} exited with code {}", t.exit_code));
                }
            }
            Event::Unhealthy { name, message, .. } => say(&format!("container {name}: {message}")),
            Event::Killing { message, .. } => say(&message),
            Event::HookFailed { name, message } => say(&format!("container {name}: {message}")),
            Event::Restarting { name, delay, restart, policy } => say(&format!(
                "restarting container {name} in {delay:?} (restart {restart}, restartPolicy {})",
                policy.as_str()
            )),
        }
    }
}

/// SIGINT, SIGTERM or SIGHUP: the first stops the pod gracefully, another kills it.
struct Signals {
    fd: SignalFd,
    grace: Duration,
    stopping: bool,
}

impl Control for Signals {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn take(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else { continue };
            if self.stopping {
                say(&format!("{sig} again: killing the pod's containers"));
                out.push(Command::Stop { grace: Some(Duration::ZERO) });
            } else {
                say(&format!("{sig}: stopping the pod (SIGTERM, then SIGKILL after {}s)", self.grace.as_secs()));
                self.stopping = true;
                out.push(Command::Stop { grace: None });
            }
        }
        out
    }
}

/// Runs the pod to its end; returns the exit code for `nodectl run`. Pods a killed run
/// left behind are the caller's to clean first ([`crate::node::sandbox::gc`]).
pub fn run(opts: &RunOptions, manifest: Manifest) -> Result<i32, PlanError> {
    // Blocked before anything exists, so a Ctrl-C during set-up waits in the signalfd
    // and stops the pod the moment it runs, with nothing half-made left behind.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().map_err(PlanError::errno("block signals"))?;
    let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(PlanError::errno("signalfd"))?;
    let several =
        manifest.pod.spec.as_ref().map_or(0, |s| s.containers.len() + s.init_containers.as_ref().map_or(0, Vec::len))
            > 1;
    let mut printer = Printer { several };
    let mut owner = owner::create(opts, manifest, true, &mut printer)?;
    let mut signals = Signals { fd, grace: owner.grace(), stopping: false };
    let result = owner.drive(&mut signals, &mut printer);
    let down = owner.finish();
    let code = result?;
    down?;
    Ok(code)
}
