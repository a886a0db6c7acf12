//! `nodectl run`: one pod in the foreground, as `docker run` runs one container. Init
//! containers one at a time in order, then every container; output passed on line by
//! line; restarts as restartPolicy says, with the kubelet's backoff; SIGINT or SIGTERM
//! stops the pod gracefully (SIGTERM to each container, SIGKILL after the grace period, at
//! once on a second signal). The exit code is the first failing container's, or 0.
//!
//! This process stays single-threaded: it forks the containers' inits itself (through the
//! runtime, docs/architecture.md decision 2), and waits for everything on one poll: a signalfd for
//! SIGCHLD and the stop signals, the containers' output pipes, and the next timer.

use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::env::{self, EnvSources};
use super::images::{self, Resolved};
use super::output::Stream;
use super::sandbox::{self, Sandbox, SandboxSpec};
use super::volumes::{self, Volumes};
use super::{PlanError, container_spec};
use crate::image::pull::PullOptions;
use crate::image::store::Store;
use crate::model::manifest::Manifest;
use crate::network::{NetConfig, PortMapping, Protocol};
use crate::runtime::{CreateOptions, Runtime};

/// The kubelet's container restart backoff: doubling from the initial delay up to 5
/// minutes, back to the start after 10 minutes of running.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);
const DEFAULT_GRACE: i64 = 30;
const SHM_SIZE: u64 = 64 << 20;

/// Whether a container that exited with `code` runs again, as the kubelet decides it: an
/// init container that fails is tried again unless the pod never restarts; a regular
/// container follows restartPolicy.
pub fn should_restart(init: bool, policy: &str, code: i32) -> bool {
    match (init, policy) {
        (true, "Never") => false,
        (true, _) => code != 0,
        (false, "Always") => true,
        (false, "OnFailure") => code != 0,
        _ => false,
    }
}

/// The delay before the next restart and the backoff after it: doubling from `initial`
/// up to MAX_BACKOFF, back to `initial` once the container ran for BACKOFF_RESET.
pub fn backoff(current: Duration, initial: Duration, ran: Duration) -> (Duration, Duration) {
    let delay = if ran >= BACKOFF_RESET { initial } else { current };
    (delay, (delay * 2).min(MAX_BACKOFF))
}

pub struct RunOptions {
    /// The state root (images, runtime, pods).
    pub root: PathBuf,
    pub network: NetConfig,
    /// The first restart's delay (the kubelet's is 10 s).
    pub restart_backoff: Duration,
    pub pull: PullOptions,
}

/// Why a container stopped.
#[derive(Clone, Copy, Debug)]
struct Exit {
    code: i32,
    oom: bool,
}

enum State {
    /// Not started yet (a container waiting for the init containers).
    Waiting,
    /// To be started (again) at this instant.
    Pending(Instant),
    Running {
        pid: i32,
        since: Instant,
    },
    Done,
}

struct Slot<'m> {
    spec: &'m Container,
    field: String,
    init: bool,
    image: std::rc::Rc<Resolved>,
    id: String,
    out: Stream,
    err: Stream,
    state: State,
    restarts: u32,
    backoff: Duration,
}

fn host(what: String) -> impl FnOnce(std::io::Error) -> PlanError {
    PlanError::io(what)
}

/// A message on our stderr. Not eprintln!: it panics when stderr is a closed pipe
/// (`nodectl run pod.yaml 2>&1 | head -1`), and a panic aborts this process, leaving the
/// pod's containers running with no one to supervise or remove them.
fn say(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "nodectl: {msg}");
}

fn port_mappings(manifest: &Manifest) -> Vec<PortMapping> {
    let mut out = Vec::new();
    for c in manifest.pod.spec.iter().flat_map(|s| &s.containers) {
        for p in c.ports.iter().flatten() {
            if let Some(host_port) = p.host_port.filter(|&h| h > 0) {
                out.push(PortMapping {
                    host_port: host_port as u16,
                    container_port: p.container_port as u16,
                    protocol: match p.protocol.as_deref() {
                        Some("UDP") => Protocol::Udp,
                        Some("SCTP") => Protocol::Sctp,
                        _ => Protocol::Tcp,
                    },
                    host_ip: p.host_ip.as_deref().and_then(|ip| ip.parse().ok()),
                });
            }
        }
    }
    out
}

/// Runs the pod to its end; returns the exit code for `nodectl run`. Pods a killed run
/// left behind are the caller's to clean first ([`sandbox::gc`]).
pub fn run(opts: &RunOptions, manifest: &Manifest) -> Result<i32, PlanError> {
    for w in &manifest.warnings {
        say(&format!("warning: {w}"));
    }
    // Blocked before anything exists, so a Ctrl-C during set-up waits in the signalfd
    // and stops the pod the moment it runs, with nothing half-made left behind.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().map_err(PlanError::errno("block signals"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(PlanError::errno("signalfd"))?;

    let pod = &manifest.pod;
    let spec = pod.spec.as_ref().ok_or_else(|| PlanError::invalid("spec".into(), "Required value".into()))?;
    let store = Store::open(&opts.root).map_err(|source| PlanError::Store {
        what: format!("opening the image store under {}", opts.root.display()),
        source,
    })?;
    let containers: Vec<(&Container, String, bool)> = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (c, format!("spec.initContainers[{i}]"), true))
        .chain(spec.containers.iter().enumerate().map(|(i, c)| (c, format!("spec.containers[{i}]"), false)))
        .collect();
    // Each image once, however many containers use it.
    let mut by_name: Vec<(String, Option<String>, std::rc::Rc<Resolved>)> = Vec::new();
    let mut resolved = Vec::new();
    for (c, field, _) in &containers {
        let image =
            c.image.as_deref().ok_or_else(|| PlanError::invalid(format!("{field}.image"), "Required value".into()))?;
        let known = by_name.iter().find(|(n, p, _)| n == image && *p == c.image_pull_policy).map(|(_, _, r)| r.clone());
        let r = match known {
            Some(r) => r,
            None => {
                let r = std::rc::Rc::new(images::resolve(
                    &store,
                    image,
                    c.image_pull_policy.as_deref(),
                    field,
                    &opts.pull,
                    &mut |w| say(&format!("warning: {w}")),
                )?);
                by_name.push((image.to_string(), c.image_pull_policy.clone(), r.clone()));
                r
            }
        };
        resolved.push(r);
    }

    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let host_network = spec.host_network == Some(true);
    let hostname: String = spec.hostname.clone().unwrap_or_else(|| name.clone()).chars().take(63).collect();
    let ports = port_mappings(manifest);
    tracing::debug!("images resolved");
    let sb = sandbox::create(
        &opts.root,
        &SandboxSpec {
            name: &name,
            namespace: &namespace,
            hostname: &hostname,
            network: (!host_network).then_some(&opts.network),
            ports: &ports,
            shm_size: SHM_SIZE,
        },
    )?;
    let result = (|| {
        tracing::debug!(key = %sb.record.key, "sandbox made");
        let vols = volumes::prepare(&sb.dir.join("volumes"), pod, &manifest.config_maps, &manifest.secrets)?;
        let several = containers.len() > 1;
        let mut slots = Vec::new();
        for ((c, field, init), image) in containers.iter().zip(resolved) {
            let prefix = several.then_some(c.name.as_str());
            slots.push(Slot {
                spec: c,
                field: field.clone(),
                init: *init,
                image,
                id: format!("{}.{}", sb.record.key, c.name),
                out: Stream::new(prefix, false).map_err(host("pipe".into()))?,
                err: Stream::new(prefix, true).map_err(host("pipe".into()))?,
                state: State::Waiting,
                restarts: 0,
                backoff: opts.restart_backoff,
            });
        }
        let mut sup = Supervisor {
            opts,
            manifest,
            store: &store,
            rt: Runtime::new(&opts.root.join("runtime")),
            sb: &sb,
            vols: &vols,
            slots,
            signals: &signals,
            failure: None,
            stopping: None,
        };
        sup.drive()
    })();
    let down = sandbox::teardown(&opts.root, &sb.record);
    drop(sb);
    let code = result?;
    down?;
    Ok(code)
}

struct Supervisor<'a, 'm> {
    opts: &'a RunOptions,
    manifest: &'m Manifest,
    store: &'a Store,
    rt: Runtime,
    sb: &'a Sandbox,
    vols: &'a Volumes,
    slots: Vec<Slot<'m>>,
    signals: &'a SignalFd,
    /// The first container that failed for good: its name and exit code.
    failure: Option<(String, i32)>,
    /// Set once the pod is stopping: when SIGKILL follows.
    stopping: Option<Instant>,
}

impl Supervisor<'_, '_> {
    fn restart_policy(&self) -> &str {
        self.manifest.pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
    }

    fn grace(&self) -> Duration {
        let secs =
            self.manifest.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(DEFAULT_GRACE);
        Duration::from_secs(secs.max(0) as u64)
    }

    fn drive(&mut self) -> Result<i32, PlanError> {
        self.advance();
        loop {
            if self.finished() {
                break;
            }
            self.wait_once()?;
            self.advance();
        }
        for s in &mut self.slots {
            s.out.flush();
            s.err.flush();
        }
        Ok(match &self.failure {
            Some((_, code)) => *code,
            None => 0,
        })
    }

    /// The pod is over: nothing runs, nothing waits for a restart, and no container is
    /// left to start (after a failure for good or a stop, none is).
    fn finished(&self) -> bool {
        let starts_over = self.stopping.is_some() || self.failure.is_some();
        self.slots.iter().all(|s| match s.state {
            State::Done => true,
            State::Waiting => starts_over,
            _ => false,
        })
    }

    /// Starts what is due: the next init container once those before it succeeded, every
    /// container once all init containers did, restarts whose delay is over.
    fn advance(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        let next_init = self.slots.iter().position(|s| s.init && !matches!(s.state, State::Done));
        for i in 0..self.slots.len() {
            let due = match self.slots[i].state {
                State::Pending(at) => at <= now,
                State::Waiting => self.failure.is_none() && next_init.map_or(!self.slots[i].init, |j| j == i),
                _ => false,
            };
            if due {
                self.start(i);
            }
        }
    }

    fn start(&mut self, i: usize) {
        match self.create_and_start(i) {
            Ok(pid) => self.slots[i].state = State::Running { pid, since: Instant::now() },
            Err(e) => {
                say(&format!("container {}: could not start: {e}", self.slots[i].spec.name));
                let _ = self.rt.delete(&self.slots[i].id, true);
                let _ = crate::image::rootfs::remove(self.store, &self.slots[i].id);
                // containerd's StartError code: the process never ran.
                self.exited(i, Exit { code: 128, oom: false }, Duration::ZERO);
            }
        }
    }

    fn create_and_start(&mut self, i: usize) -> Result<i32, PlanError> {
        let slot = &self.slots[i];
        // What a previous run of this container left (a restart makes a fresh one).
        let _ = self.rt.delete(&slot.id, true);
        crate::image::rootfs::remove(self.store, &slot.id).map_err(PlanError::rootfs("remove old root filesystem"))?;
        let rootfs = crate::image::rootfs::prepare(self.store, &slot.image.record, &slot.id)
            .map_err(PlanError::rootfs("root filesystem"))?;
        tracing::debug!(container = %slot.spec.name, "root filesystem mounted");
        let sources = EnvSources {
            pod: &self.manifest.pod,
            config_maps: &self.manifest.config_maps,
            secrets: &self.manifest.secrets,
            pod_ip: self.sb.ip,
        };
        let image_env = slot.image.config.as_ref().and_then(|c| c.env().clone()).unwrap_or_default();
        let env = env::build(&sources, slot.spec, &slot.field, &image_env)?;
        let spec = container_spec::build(&container_spec::Input {
            pod: &self.manifest.pod,
            container: slot.spec,
            field: &slot.field,
            image: slot.image.config.as_ref(),
            rootfs: &rootfs,
            env: &env,
            sandbox: self.sb,
            volumes: self.vols,
            seccomp_dir: &self.opts.root.join("seccomp"),
        })?;
        let bundle = self.sb.dir.join("bundles").join(&slot.spec.name);
        fs::create_dir_all(&bundle).map_err(host(format!("create {}", bundle.display())))?;
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| PlanError::io("encode config.json")(e.into()))?;
        fs::write(bundle.join("config.json"), json)
            .map_err(host(format!("write {}", bundle.join("config.json").display())))?;
        let cfg = crate::runtime::spec::load(&bundle)
            .map_err(|source| PlanError::Spec { what: format!("container {}", slot.spec.name), source })?;
        tracing::debug!(container = %slot.spec.name, "spec written and loaded");
        let null = fs::File::open("/dev/null").map_err(host("open /dev/null".into()))?;
        let create = CreateOptions {
            bundle: bundle.clone(),
            cgroup_parent: Some(self.sb.record.cgroup_parent.clone()),
            stdio: Some([null.as_raw_fd(), slot.out.write.as_raw_fd(), slot.err.write.as_raw_fd()]),
            ..Default::default()
        };
        let rec = self
            .rt
            .create_from(&slot.id, &cfg, &create, None)
            .map_err(PlanError::runtime(format!("create container {}", slot.spec.name)))?;
        self.rt.start(&slot.id).map_err(PlanError::runtime(format!("start container {}", slot.spec.name)))?;
        tracing::debug!(container = %slot.spec.name, pid = rec.pid, "started");
        Ok(rec.pid)
    }

    /// Waits for a signal, output or the next timer, and handles what came.
    fn wait_once(&mut self) -> Result<(), PlanError> {
        let now = Instant::now();
        let mut next: Option<Instant> = self.stopping;
        for s in &self.slots {
            if let State::Pending(at) = s.state {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        let timeout = match next {
            Some(at) => PollTimeout::try_from(at.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1)
                .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let ready: Vec<bool> = {
            let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            for s in &self.slots {
                fds.push(PollFd::new(s.out.read_fd(), PollFlags::POLLIN));
                fds.push(PollFd::new(s.err.read_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(PlanError::errno("poll")(e)),
            }
            fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
        };
        for (i, s) in self.slots.iter_mut().enumerate() {
            if ready[1 + 2 * i] {
                s.out.pump();
            }
            if ready[2 + 2 * i] {
                s.err.pump();
            }
        }
        if ready[0] {
            while let Ok(Some(info)) = self.signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => self.reap(),
                    Ok(sig) => self.stop(sig),
                    Err(_) => {}
                }
            }
        }
        if let Some(deadline) = self.stopping
            && Instant::now() >= deadline
        {
            self.kill_all();
        }
        Ok(())
    }

    fn reap(&mut self) {
        for crate::sys::process::Reaped { pid, code } in crate::sys::process::reap_exited() {
            let Some(i) = self.slots.iter().position(|s| matches!(s.state, State::Running { pid: p, .. } if p == pid))
            else {
                continue;
            };
            let State::Running { since, .. } = self.slots[i].state else { continue };
            let slot = &mut self.slots[i];
            slot.out.flush();
            slot.err.flush();
            // Read before delete removes the cgroup: did the kernel's OOM killer end it?
            let oom = self.rt.stats(&slot.id).is_ok_and(|s| s.oom_kills > 0);
            if let Err(e) = self.rt.delete(&slot.id, true) {
                say(&format!("warning: container {}: delete: {e}", slot.spec.name));
            }
            if let Err(e) = crate::image::rootfs::remove(self.store, &slot.id) {
                say(&format!("warning: container {}: remove root filesystem: {e}", slot.spec.name));
            }
            self.exited(i, Exit { code, oom }, since.elapsed());
        }
    }

    /// A container ended: report it and decide what comes next for it.
    fn exited(&mut self, i: usize, exit: Exit, ran: Duration) {
        let policy = self.restart_policy().to_string();
        let several = self.slots.len() > 1;
        let slot = &mut self.slots[i];
        let name = slot.spec.name.clone();
        if exit.oom {
            say(&format!("container {name} was killed by the OOM killer (OOMKilled), exit code {}", exit.code));
        } else if exit.code != 0 || several {
            say(&format!("container {name} exited with code {}", exit.code));
        }
        if self.stopping.is_none() && should_restart(slot.init, &policy, exit.code) {
            let (delay, next) = backoff(slot.backoff, self.opts.restart_backoff, ran);
            slot.backoff = next;
            slot.restarts += 1;
            say(&format!(
                "restarting container {name} in {:?} (restart {}, restartPolicy {policy})",
                delay, slot.restarts
            ));
            slot.state = State::Pending(Instant::now() + delay);
            return;
        }
        slot.state = State::Done;
        if exit.code != 0 && self.failure.is_none() {
            self.failure = Some((name, if exit.oom { 137 } else { exit.code }));
        }
    }

    /// SIGINT, SIGTERM or SIGHUP: the first stops the pod gracefully, another kills it.
    fn stop(&mut self, sig: Signal) {
        if self.stopping.is_some() {
            say(&format!("{sig} again: killing the pod's containers"));
            self.kill_all();
            return;
        }
        let grace = self.grace();
        say(&format!("{sig}: stopping the pod (SIGTERM, then SIGKILL after {}s)", grace.as_secs()));
        self.stopping = Some(Instant::now() + grace);
        for s in &mut self.slots {
            match s.state {
                State::Running { .. } => {
                    let _ = self.rt.kill(&s.id, libc::SIGTERM, false);
                }
                State::Pending(_) => s.state = State::Done,
                _ => {}
            }
        }
    }

    fn kill_all(&mut self) {
        for s in &self.slots {
            if let State::Running { .. } = s.state {
                let _ = self.rt.kill(&s.id, libc::SIGKILL, true);
            }
        }
        // Nothing left to wait for but the exits: no further deadline.
        self.stopping = Some(Instant::now() + Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_decide_as_the_kubelet_does() {
        for (init, policy, code, restart) in [
            (false, "Always", 0, true),
            (false, "Always", 1, true),
            (false, "OnFailure", 0, false),
            (false, "OnFailure", 2, true),
            (false, "Never", 1, false),
            (true, "Always", 0, false),
            (true, "Always", 1, true),
            (true, "OnFailure", 1, true),
            (true, "Never", 1, false),
        ] {
            assert_eq!(should_restart(init, policy, code), restart, "init {init}, {policy}, exit {code}");
        }
    }

    #[test]
    fn backoff_doubles_to_five_minutes_and_resets_after_ten_minutes_running() {
        let s = Duration::from_secs;
        let mut current = s(10);
        let mut delays = Vec::new();
        for _ in 0..7 {
            let (delay, next) = backoff(current, s(10), s(1));
            delays.push(delay.as_secs());
            current = next;
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(s(300), s(10), s(600)), (s(10), s(20)));
    }
}
