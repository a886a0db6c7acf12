//! `nodectl run`: one pod in the foreground, as `docker run` runs one container. Init
//! containers one at a time in order, then every container; output passed on line by
//! line; restarts as restartPolicy says, with the kubelet's backoff; SIGINT or SIGTERM
//! stops the pod gracefully (SIGTERM to each container, SIGKILL after the grace period, at
//! once on a second signal). The exit code is the first failing container's, or 0.
//!
//! Pods run one way, here and in the daemon: this process is the pod's owner. It starts the
//! pod's monitor ([`super::monitor`]), which makes the sandbox and is the parent of the
//! containers; it decides with [`super::reconcile`] and carries the decisions out, preparing
//! each container's bundle and asking the monitor to start or signal it. It waits on one
//! poll: a signalfd for the stop signals, the monitor's socket, and the next timer.

use std::fs;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Container;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::crilog::Rotation;
use super::env::{self, EnvSources};
use super::images::{self, Resolved};
use super::monitor::client::{self, Monitor};
use super::monitor::protocol::{Message, Request};
use super::pod_state;
use super::reconcile::{self, Action, ContainerStatus, Desired, RestartPolicy, State, Terminated};
use super::sandbox::{self, NetRecord, PodRecord, Sandbox};
use super::volumes::{self, Volumes};
use super::{PlanError, container_spec};
use crate::image::pull::PullOptions;
use crate::image::store::Store;
use crate::model::manifest::Manifest;
use crate::network::{NetConfig, PortMapping, Protocol};

const DEFAULT_GRACE: i64 = 30;
const SHM_SIZE: u64 = 64 << 20;

pub struct RunOptions {
    /// The state root (images, runtime, pods).
    pub root: PathBuf,
    pub network: NetConfig,
    /// The first restart's delay (the kubelet's is 10 s).
    pub restart_backoff: Duration,
    pub pull: PullOptions,
    pub log_rotation: Rotation,
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

/// One container of the pod, as the owner prepares it.
struct Part<'m> {
    spec: &'m Container,
    field: String,
    image: Rc<Resolved>,
    id: String,
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
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
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
    let mut by_name: Vec<(String, Option<String>, Rc<Resolved>)> = Vec::new();
    let mut resolved = Vec::new();
    for (c, field, _) in &containers {
        let image =
            c.image.as_deref().ok_or_else(|| PlanError::invalid(format!("{field}.image"), "Required value".into()))?;
        let known = by_name.iter().find(|(n, p, _)| n == image && *p == c.image_pull_policy).map(|(_, _, r)| r.clone());
        let r = match known {
            Some(r) => r,
            None => {
                let r = Rc::new(images::resolve(
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
    let uid = pod.metadata.uid.clone().filter(|u| pod_state::uid_is_valid(u)).unwrap_or_else(pod_state::new_uid);
    let key = pod_state::key_for(&name, &uid);
    let host_network = spec.host_network == Some(true);
    let record = PodRecord {
        cgroup_parent: format!("nodectl-pod-{key}"),
        key,
        uid,
        name: name.clone(),
        namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        network: (!host_network).then(|| NetRecord::of(&opts.network)),
        hostname: spec.hostname.clone().unwrap_or_else(|| name.clone()).chars().take(63).collect(),
        ports: port_mappings(manifest),
        shm_size: SHM_SIZE,
    };
    tracing::debug!("images resolved");
    let saved = serde_json::json!({"pod": pod, "configMaps": manifest.config_maps, "secrets": manifest.secrets});
    let saved = serde_json::to_vec(&saved).map_err(|e| PlanError::io("encode the pod")(e.into()))?;
    let lock = sandbox::create_dir(&opts.root, &record, &saved)?;
    let parts: Vec<Part<'_>> = containers
        .iter()
        .zip(resolved)
        .map(|((c, field, _), image)| Part {
            spec: c,
            field: field.clone(),
            image,
            id: format!("{}.{}", record.key, c.name),
        })
        .collect();
    let statuses =
        containers.iter().map(|(c, _, init)| ContainerStatus::new(&c.name, *init, opts.restart_backoff)).collect();

    let mut monitor = None;
    let result = (|| {
        let (m, ready) = client::spawn(&opts.root, &record.uid, true, opts.log_rotation)?;
        let mon = monitor.insert(m);
        tracing::debug!(key = %record.key, "sandbox made");
        let sb = Sandbox::at(&opts.root, &record, ready.ip, &ready.hostname);
        let vols = volumes::prepare(&sb.dir.join("volumes"), pod, &manifest.config_maps, &manifest.secrets)?;
        let grace = spec.termination_grace_period_seconds.unwrap_or(DEFAULT_GRACE);
        let mut owner = Owner {
            opts,
            manifest,
            store: &store,
            sb: &sb,
            vols: &vols,
            mon,
            signals: &signals,
            several: parts.len() > 1,
            parts,
            statuses,
            desired: Desired {
                restart_policy: RestartPolicy::parse(spec.restart_policy.as_deref()),
                initial_backoff: opts.restart_backoff,
                stop_deadline: None,
            },
            grace: Duration::from_secs(grace.max(0) as u64),
        };
        owner.drive()
    })();
    // The monitor kills what runs and removes the sandbox; if it cannot (it is gone, or
    // never made it), we remove what the record says.
    let down = match monitor.as_mut().map(|m| (m.request(&Request::Teardown), m)) {
        Some((Ok(Message::Done { error: None }), m)) => {
            m.wait();
            Ok(())
        }
        Some((reply, m)) => {
            m.wait();
            if let Ok(Message::Done { error: Some(e) }) = reply {
                say(&format!("warning: the pod's monitor: removing the pod: {e}"));
            }
            sandbox::teardown(&opts.root, &record)
        }
        None => sandbox::teardown(&opts.root, &record),
    };
    drop(lock);
    let code = result?;
    down?;
    Ok(code)
}

struct Owner<'a, 'm> {
    opts: &'a RunOptions,
    manifest: &'m Manifest,
    store: &'a Store,
    sb: &'a Sandbox,
    vols: &'a Volumes,
    mon: &'a mut Monitor,
    signals: &'a SignalFd,
    parts: Vec<Part<'m>>,
    statuses: Vec<ContainerStatus>,
    desired: Desired,
    grace: Duration,
    several: bool,
}

impl Owner<'_, '_> {
    fn drive(&mut self) -> Result<i32, PlanError> {
        loop {
            let plan = reconcile::reconcile(&self.desired, &self.statuses, SystemTime::now());
            let acted = !plan.actions.is_empty();
            for action in plan.actions {
                self.apply(action)?;
            }
            if let Some(outcome) = plan.over {
                return Ok(outcome.exit_code());
            }
            if !acted {
                self.wait(plan.wake_at)?;
            }
        }
    }

    fn apply(&mut self, action: Action) -> Result<(), PlanError> {
        match action {
            Action::Start(i) => return self.start(i),
            Action::Signal(i, sig) => {
                let name = self.statuses[i].name.clone();
                if let State::Running { signalled, .. } = &mut self.statuses[i].state {
                    *signalled = Some(sig);
                }
                match self.mon.request(&Request::Signal { name, signal: sig })? {
                    Message::Done { .. } => {}
                    other => tracing::debug!("signal: {other:?}"),
                }
            }
            Action::Restart { index, at, delay, backoff } => {
                let c = &mut self.statuses[index];
                let State::Exited(t) = std::mem::replace(&mut c.state, State::BackOff { until: at }) else {
                    return Ok(());
                };
                c.last = Some(t);
                c.backoff = backoff;
                c.restart_count += 1;
                say(&format!(
                    "restarting container {} in {delay:?} (restart {}, restartPolicy {})",
                    c.name,
                    c.restart_count,
                    self.desired.restart_policy.as_str()
                ));
            }
            Action::Finish(i) => {
                let c = &mut self.statuses[i];
                if let State::Exited(t) = &c.state {
                    c.state = State::Done(t.clone());
                }
            }
        }
        Ok(())
    }

    fn start(&mut self, i: usize) -> Result<(), PlanError> {
        let started = self.prepare(i).and_then(|bundle| {
            let part = &self.parts[i];
            let req = Request::Start {
                name: part.spec.name.clone(),
                id: part.id.clone(),
                bundle,
                restart: self.statuses[i].restart_count,
                echo: Some(if self.several { format!("[{}] ", part.spec.name) } else { String::new() }),
            };
            match self.mon.request(&req)? {
                Message::Started { pid, started_at, .. } => Ok((pid, started_at)),
                Message::Error { error } => Err(PlanError::Monitor(error)),
                other => Err(PlanError::Monitor(format!("unexpected answer {other:?}"))),
            }
        });
        match started {
            Ok((pid, started_at)) => {
                self.statuses[i].state = State::Running { pid, started_at, signalled: None };
                Ok(())
            }
            // The monitor is gone: nothing more can run.
            Err(e @ PlanError::Monitor(_)) if !self.mon_alive() => Err(e),
            Err(e) => {
                let name = &self.parts[i].spec.name;
                say(&format!("container {name}: could not start: {e}"));
                let _ = crate::image::rootfs::remove(self.store, &self.parts[i].id);
                self.exited(
                    i,
                    Terminated {
                        exit_code: reconcile::START_ERROR_CODE,
                        signal: None,
                        oom_killed: false,
                        message: Some(e.to_string()),
                        started_at: None,
                        finished_at: SystemTime::now(),
                    },
                );
                Ok(())
            }
        }
    }

    fn mon_alive(&mut self) -> bool {
        match self.mon.events() {
            Ok(events) => {
                self.heard(events);
                true
            }
            Err(_) => false,
        }
    }

    /// The container's root filesystem, environment and OCI spec, in its bundle.
    fn prepare(&mut self, i: usize) -> Result<PathBuf, PlanError> {
        let part = &self.parts[i];
        // What a previous run of this container left (a restart makes a fresh one).
        crate::image::rootfs::remove(self.store, &part.id).map_err(PlanError::rootfs("remove old root filesystem"))?;
        let rootfs = crate::image::rootfs::prepare(self.store, &part.image.record, &part.id)
            .map_err(PlanError::rootfs("root filesystem"))?;
        tracing::debug!(container = %part.spec.name, "root filesystem mounted");
        let sources = EnvSources {
            pod: &self.manifest.pod,
            config_maps: &self.manifest.config_maps,
            secrets: &self.manifest.secrets,
            pod_ip: self.sb.ip,
        };
        let image_env = part.image.config.as_ref().and_then(|c| c.env().clone()).unwrap_or_default();
        let env = env::build(&sources, part.spec, &part.field, &image_env)?;
        let spec = container_spec::build(&container_spec::Input {
            pod: &self.manifest.pod,
            container: part.spec,
            field: &part.field,
            image: part.image.config.as_ref(),
            rootfs: &rootfs,
            env: &env,
            sandbox: self.sb,
            volumes: self.vols,
            seccomp_dir: &self.opts.root.join("seccomp"),
        })?;
        let bundle = self.sb.dir.join("bundles").join(&part.spec.name);
        fs::create_dir_all(&bundle).map_err(PlanError::io(format!("create {}", bundle.display())))?;
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| PlanError::io("encode config.json")(e.into()))?;
        fs::write(bundle.join("config.json"), json)
            .map_err(PlanError::io(format!("write {}", bundle.join("config.json").display())))?;
        tracing::debug!(container = %part.spec.name, "spec written");
        Ok(bundle)
    }

    /// Waits for a signal, the monitor or the next timer, and takes in what came.
    fn wait(&mut self, until: Option<SystemTime>) -> Result<(), PlanError> {
        let timeout = match until {
            Some(at) => {
                let ms = at.duration_since(SystemTime::now()).unwrap_or_default().as_millis().min(60_000) as i32 + 1;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let (sig_ready, mon_ready) = {
            let mut fds =
                [PollFd::new(self.signals.as_fd(), PollFlags::POLLIN), PollFd::new(self.mon.fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(PlanError::errno("poll")(e)),
            }
            let r = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (r(&fds[0]), r(&fds[1]))
        };
        if sig_ready {
            while let Ok(Some(info)) = self.signals.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    self.stop(sig);
                }
            }
        }
        if mon_ready {
            let events = self.mon.events()?;
            self.heard(events);
        }
        Ok(())
    }

    fn heard(&mut self, events: Vec<Message>) {
        for m in events {
            if let Message::Exited { name, terminated } = m
                && let Some(i) = self.statuses.iter().position(|c| c.name == name)
                && matches!(self.statuses[i].state, State::Running { .. })
            {
                self.exited(i, terminated);
            }
        }
    }

    /// A container ended: report it; the next step decides what comes next for it.
    fn exited(&mut self, i: usize, t: Terminated) {
        let name = &self.statuses[i].name;
        if t.oom_killed {
            say(&format!("container {name} was killed by the OOM killer (OOMKilled), exit code {}", t.exit_code));
        } else if t.exit_code != 0 || self.several {
            say(&format!("container {name} exited with code {}", t.exit_code));
        }
        self.statuses[i].state = State::Exited(t);
    }

    /// SIGINT, SIGTERM or SIGHUP: the first stops the pod gracefully, another kills it.
    fn stop(&mut self, sig: Signal) {
        let now = SystemTime::now();
        if self.desired.stop_deadline.is_some() {
            say(&format!("{sig} again: killing the pod's containers"));
            self.desired.stop_deadline = Some(now);
            return;
        }
        say(&format!("{sig}: stopping the pod (SIGTERM, then SIGKILL after {}s)", self.grace.as_secs()));
        self.desired.stop_deadline = Some(now + self.grace);
    }
}
