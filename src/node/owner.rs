//! A pod's owner: the one way pods run, for the foreground `nodectl run` and the daemon.
//! [`create`] resolves the images, makes the pod's directory and record, starts its
//! monitor (which makes the sandbox) and prepares the volumes; [`Owner::drive`] asks
//! [`super::reconcile`] what to do, does it (preparing each container's bundle and asking
//! the monitor to start or signal it), and waits on one poll for the monitor, the owner's
//! control (signals, a delete) and the next timer; [`Owner::finish`] has the monitor remove
//! everything. What happens is told to a [`Reporter`]; nothing here prints.

use std::fs;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, PodSpec};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::{Deserialize, Serialize};

use super::crilog::Rotation;
use super::env::{self, EnvSources};
use super::images::{self, Resolved};
use super::monitor::client::{self, Monitor};
use super::monitor::protocol::{ExecIo, Message, Request};
use super::pod_state;
use super::probe::{self, ContainerChecks, Handler};
use super::reconcile::{self, Action, ContainerStatus, Desired, Hook, ProbeKind, RestartPolicy, State, Terminated};
use super::sandbox::{self, NetRecord, PodRecord, Sandbox};
use super::volumes::{self, Volumes};
use super::{PlanError, container_spec};
use crate::image::pull::PullOptions;
use crate::image::store::Store;
use crate::model::manifest::Manifest;
use crate::network::{NetConfig, PortMapping, Protocol};
use crate::node::resolv::{self, ClusterDns};
use crate::sys::lock::FileLock;

const DEFAULT_GRACE: i64 = 30;
const SHM_SIZE: u64 = 64 << 20;

/// What every pod of an owner shares.
#[derive(Clone, Debug)]
pub struct PodOptions {
    /// The state root (images, runtime, pods).
    pub root: PathBuf,
    pub network: NetConfig,
    /// The first restart's delay (the kubelet's is 10 s).
    pub restart_backoff: Duration,
    pub pull: PullOptions,
    pub log_rotation: Rotation,
    /// Sysctls pods may set beyond the safe set (`node::sysctls`).
    pub allowed_unsafe_sysctls: Vec<String>,
    /// The cluster's DNS once a joined daemon serves it (`agent::dns`); None for
    /// `nodectl run` and a standalone daemon, whose ClusterFirst pods get the host's DNS.
    pub cluster_dns: Arc<std::sync::RwLock<Option<ClusterDns>>>,
}

/// What happened, for the owner's user: printed by `nodectl run`, kept as the pod's events
/// by the daemon.
#[derive(Clone, Debug)]
pub enum Event {
    Warning(String),
    /// The container's image is being pulled (the kubelet's Pulling event).
    Pulling {
        name: String,
        message: String,
    },
    /// The container's image is there: pulled now, or already present (the kubelet's
    /// Pulled event, with its wording).
    Pulled {
        name: String,
        message: String,
    },
    Created {
        name: String,
    },
    Started {
        name: String,
    },
    CouldNotStart {
        name: String,
        error: String,
    },
    Exited {
        name: String,
        terminated: Terminated,
    },
    /// Its configuration could not be made into a container; tried again later (the
    /// kubelet's CreateContainerConfigError).
    ConfigError {
        name: String,
        message: String,
    },
    Restarting {
        name: String,
        delay: Duration,
        restart: u32,
        policy: RestartPolicy,
    },
    /// A probe failed (the kubelet's Unhealthy event: "Liveness probe failed: …").
    Unhealthy {
        name: String,
        message: String,
    },
    /// A container is killed for a reason of the kubelet's (a failed liveness probe).
    Killing {
        name: String,
        message: String,
    },
    /// A preStop hook failed (the kubelet's FailedPreStopHook).
    HookFailed {
        name: String,
        message: String,
    },
}

pub trait Reporter {
    fn report(&mut self, event: Event);
    /// The containers' statuses changed.
    fn changed(&mut self, _statuses: &[ContainerStatus]) {}
}

/// Asked of the owner from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Stop the pod: SIGTERM now, SIGKILL after `grace` (the pod's own when None).
    Stop { grace: Option<Duration> },
}

/// Where the owner's commands come from: a descriptor to poll, and what it brought.
pub trait Control {
    fn fd(&self) -> BorrowedFd<'_>;
    fn take(&mut self) -> Vec<Command>;
}

/// What the owner keeps on disk (`status.json`) of its decisions.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub containers: Vec<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_deadline: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<std::net::Ipv4Addr>,
}

impl Status {
    pub fn path(dir: &std::path::Path) -> PathBuf {
        dir.join("status.json")
    }
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
struct Part {
    spec: Container,
    field: String,
    image: Arc<Resolved>,
    id: String,
    checks: ContainerChecks,
}

/// What a check that runs belongs to: a probe of one run of a container, or its hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Probe { index: usize, kind: ProbeKind, run: SystemTime },
    PreStop { index: usize },
}

pub struct Owner {
    opts: PodOptions,
    manifest: Manifest,
    store: Store,
    record: PodRecord,
    sb: Sandbox,
    vols: Volumes,
    mon: Monitor,
    parts: Vec<Part>,
    statuses: Vec<ContainerStatus>,
    desired: Desired,
    grace: Duration,
    several: bool,
    /// Network checks run on threads; exec checks in the monitor, by its exec id.
    checks: probe::Runner<Purpose>,
    execs: Vec<(u64, Purpose)>,
    /// The monitor dies with us (`nodectl run`).
    foreground: bool,
    /// Held for the pod's life by its owner (docs/architecture.md, decision 11).
    _lock: FileLock,
}

/// A pod whose directory and record exist (and whose lock is held), the rest to be made:
/// what the daemon has before it answers, so an accepted pod survives its death.
pub struct Accepted {
    record: PodRecord,
    lock: FileLock,
}

impl Accepted {
    pub fn uid(&self) -> &str {
        &self.record.uid
    }
}

/// Makes the pod's directory, with its record and the manifest.
pub fn accept(opts: &PodOptions, manifest: &Manifest, foreground: bool) -> Result<Accepted, PlanError> {
    let pod = &manifest.pod;
    let spec = pod.spec.as_ref().ok_or_else(|| PlanError::invalid("spec".into(), "Required value".into()))?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().filter(|u| pod_state::uid_is_valid(u)).unwrap_or_else(pod_state::new_uid);
    let key = pod_state::key_for(&name, &uid);
    let host_network = spec.host_network == Some(true);
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let resolv_conf = resolv_conf_of(opts, spec, &namespace, &name);
    let record = PodRecord {
        cgroup_parent: format!("nodectl-pod-{key}"),
        key,
        uid,
        name: name.clone(),
        namespace,
        network: (!host_network).then(|| NetRecord::of(&opts.network)),
        hostname: spec.hostname.clone().unwrap_or_else(|| name.clone()).chars().take(63).collect(),
        ports: port_mappings(manifest),
        shm_size: SHM_SIZE,
        daemon: !foreground,
        resolv_conf,
    };
    let saved = serde_json::json!({
        "pod": pod, "configMaps": manifest.config_maps, "secrets": manifest.secrets, "serviceEnv": manifest.service_env,
    });
    let saved = serde_json::to_vec(&saved).map_err(|e| PlanError::io("encode the pod")(e.into()))?;
    let lock = sandbox::create_dir(&opts.root, &record, &saved)?;
    Ok(Accepted { record, lock })
}

/// The pod's resolv.conf by its dnsPolicy and dnsConfig ([`resolv`]); None where it is
/// the host's as the sandbox has always written it (no cluster DNS, no dnsConfig).
fn resolv_conf_of(opts: &PodOptions, spec: &PodSpec, namespace: &str, name: &str) -> Option<String> {
    let cluster = opts.cluster_dns.read().unwrap_or_else(|p| p.into_inner()).clone();
    let (kind, fallback) = resolv::kind(spec, cluster.is_some());
    if let Some(f) = fallback {
        // Every pod of `nodectl run` would say it: not worth a warning.
        tracing::debug!(pod = %name, "{f}");
    }
    if kind == resolv::Kind::Host && spec.dns_config.is_none() {
        return None;
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let own_network = spec.host_network != Some(true);
    let (text, warnings) = resolv::pod_resolv_conf(spec, namespace, &host, cluster.as_ref(), own_network);
    for w in &warnings {
        tracing::warn!(pod = %name, %namespace, "DNSConfigForming: {w}");
    }
    Some(text)
}

/// Makes the pod: images resolved, its directory and record, its monitor and sandbox, its
/// volumes. With `foreground`, its monitor dies with this process. On failure, whatever was
/// made is removed.
pub fn create(
    opts: &PodOptions,
    manifest: Manifest,
    foreground: bool,
    reporter: &mut dyn Reporter,
) -> Result<Owner, PlanError> {
    // Images first: a pod whose image is missing leaves nothing at all.
    let (store, resolved) = images_of(opts, &manifest, reporter)?;
    let accepted = accept(opts, &manifest, foreground)?;
    make(opts, manifest, accepted, store, resolved, foreground)
}

/// Makes the rest of an accepted pod (the daemon's) once its images are there; on
/// failure, removes it all.
pub fn create_accepted(
    opts: &PodOptions,
    manifest: Manifest,
    accepted: Accepted,
    images: Images,
) -> Result<Owner, PlanError> {
    let (store, resolved) = images;
    make(opts, manifest, accepted, store, resolved, false)
}

/// Removes an accepted pod that will not be made (deleted while it waited for an image).
pub fn abandon(opts: &PodOptions, accepted: Accepted) -> Result<(), PlanError> {
    let Accepted { record, lock } = accepted;
    let r = sandbox::teardown(&opts.root, &record);
    drop(lock);
    r
}

/// The pod's containers as they are before anything is made: waiting.
pub fn initial_statuses(manifest: &Manifest, initial_backoff: Duration) -> Vec<ContainerStatus> {
    let containers = manifest.pod.spec.as_ref().map(containers_of).unwrap_or_default();
    waiting(&containers, initial_backoff)
}

fn waiting(containers: &[(&Container, String, bool)], initial_backoff: Duration) -> Vec<ContainerStatus> {
    containers.iter().map(|(c, _, init)| ContainerStatus::new(&c.name, *init, initial_backoff)).collect()
}

/// The name of the container at `field` (`spec.containers[0]`).
pub fn container_at(manifest: &Manifest, field: &str) -> Option<String> {
    let spec = manifest.pod.spec.as_ref()?;
    containers_of(spec).into_iter().find(|(_, f, _)| f == field).map(|(c, _, _)| c.name.clone())
}

/// A pod's images, found in (or pulled into) the store.
pub type Images = (Store, Vec<Arc<Resolved>>);

/// Each container's image, pulled if its policy says so.
pub fn images_of(opts: &PodOptions, manifest: &Manifest, reporter: &mut dyn Reporter) -> Result<Images, PlanError> {
    for w in &manifest.warnings {
        reporter.report(Event::Warning(w.clone()));
    }
    let spec = manifest.pod.spec.as_ref().ok_or_else(|| PlanError::invalid("spec".into(), "Required value".into()))?;
    let store = Store::open(&opts.root).map_err(|source| PlanError::Store {
        what: format!("opening the image store under {}", opts.root.display()),
        source,
    })?;
    let resolved = resolve_images(opts, &store, &containers_of(spec), None, reporter)?;
    tracing::debug!("images resolved");
    Ok((store, resolved))
}

fn make(
    opts: &PodOptions,
    manifest: Manifest,
    accepted: Accepted,
    store: Store,
    resolved: Vec<Arc<Resolved>>,
    foreground: bool,
) -> Result<Owner, PlanError> {
    let Accepted { record, lock } = accepted;
    let pod = &manifest.pod;
    let spec = pod.spec.as_ref().ok_or_else(|| PlanError::invalid("spec".into(), "Required value".into()))?;
    let containers = containers_of(spec);
    let grace = grace_of(spec);
    let parts = match parts_of(&containers, resolved, &record.key, grace) {
        Ok(p) => p,
        Err(e) => {
            let _ = remove(&opts.root, &record, None);
            return Err(e);
        }
    };
    let statuses = waiting(&containers, opts.restart_backoff);
    let desired = desired_of(spec, opts, &parts, None);
    let checks = probe::Runner::new().map_err(PlanError::io("a pipe for probe results"))?;

    let mut monitor = None;
    let made = (|| {
        let (m, ready) = client::spawn(&opts.root, &record.uid, foreground, opts.log_rotation)?;
        monitor = Some(m);
        tracing::debug!(key = %record.key, "sandbox made");
        let sb = Sandbox::at(&opts.root, &record, ready.ip, &ready.hostname);
        let vols = volumes::prepare(&sb.dir.join("volumes"), &manifest)?;
        Ok::<_, PlanError>((sb, vols))
    })();
    match (made, monitor) {
        (Ok((sb, vols)), Some(mon)) => Ok(Owner {
            opts: opts.clone(),
            several: parts.len() > 1,
            manifest,
            store,
            record,
            sb,
            vols,
            mon,
            parts,
            statuses,
            desired,
            grace,
            checks,
            execs: Vec::new(),
            foreground,
            _lock: lock,
        }),
        (made, monitor) => {
            let e = made.err().unwrap_or_else(|| PlanError::Monitor("no monitor".into()));
            let _ = remove(&opts.root, &record, monitor);
            Err(e)
        }
    }
}

/// Each container's image from the store (pulled if its policy says so), each image once
/// however many containers use it. `policy` overrides the containers' own.
fn resolve_images(
    opts: &PodOptions,
    store: &Store,
    containers: &[(&Container, String, bool)],
    policy: Option<&str>,
    reporter: &mut dyn Reporter,
) -> Result<Vec<Arc<Resolved>>, PlanError> {
    let mut by_name: Vec<(String, Option<String>, Arc<Resolved>)> = Vec::new();
    let mut resolved = Vec::new();
    for (c, field, _) in containers {
        let image =
            c.image.as_deref().ok_or_else(|| PlanError::invalid(format!("{field}.image"), "Required value".into()))?;
        let known = by_name.iter().find(|(n, p, _)| n == image && *p == c.image_pull_policy).map(|(_, _, r)| r.clone());
        let r = match known {
            Some(r) => r,
            None => {
                let r = Arc::new(images::resolve(
                    store,
                    image,
                    policy.or(c.image_pull_policy.as_deref()),
                    field,
                    &opts.pull,
                    &mut |note| match note {
                        images::Note::Pulling => reporter.report(Event::Pulling {
                            name: c.name.clone(),
                            message: format!("Pulling image \"{image}\""),
                        }),
                        images::Note::Warning(w) => reporter.report(Event::Warning(w)),
                    },
                )?);
                by_name.push((image.to_string(), c.image_pull_policy.clone(), r.clone()));
                r
            }
        };
        resolved.push(r);
    }
    Ok(resolved)
}

/// The containers of a pod in the order they start: init containers, then the others; each
/// with its field path.
fn containers_of(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<(&Container, String, bool)> {
    spec.init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (c, format!("spec.initContainers[{i}]"), true))
        .chain(spec.containers.iter().enumerate().map(|(i, c)| (c, format!("spec.containers[{i}]"), false)))
        .collect()
}

/// Each container with its image, runtime id (KEY.NAME) and checks.
fn parts_of(
    containers: &[(&Container, String, bool)],
    resolved: Vec<Arc<Resolved>>,
    key: &str,
    grace: Duration,
) -> Result<Vec<Part>, PlanError> {
    containers
        .iter()
        .zip(resolved)
        .map(|((c, field, _), image)| {
            let checks = probe::of_container(c, grace).map_err(|e| {
                let (what, why) = e.split_once(": ").unwrap_or((&e, ""));
                PlanError::invalid(format!("{field}.{what}"), format!("Invalid value: {why}"))
            })?;
            Ok(Part { spec: (*c).clone(), field: field.clone(), image, id: format!("{key}.{}", c.name), checks })
        })
        .collect()
}

fn grace_of(spec: &k8s_openapi::api::core::v1::PodSpec) -> Duration {
    Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(DEFAULT_GRACE).max(0) as u64)
}

fn desired_of(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    opts: &PodOptions,
    parts: &[Part],
    stop_deadline: Option<SystemTime>,
) -> Desired {
    Desired {
        restart_policy: RestartPolicy::parse(spec.restart_policy.as_deref()),
        initial_backoff: opts.restart_backoff,
        stop_deadline,
        probes: parts.iter().map(|p| p.checks.timings).collect(),
        pre_stop: parts.iter().map(|p| p.checks.pre_stop.is_some()).collect(),
    }
}

/// Takes over a pod a daemon made and then died (or was restarted) without removing:
/// its record, manifest and status from disk, its monitor found again (or started again,
/// adopting the sandbox, when it died too), each container as its monitor recorded it.
pub fn resume(opts: &PodOptions, uid: &str, reporter: &mut dyn Reporter) -> Result<Owner, PlanError> {
    let dir = pod_state::pod_dir(&opts.root, uid);
    let bad = |what: &str, e: std::io::Error| PlanError::io(format!("{what} in {}", dir.display()))(e);
    let record: PodRecord = pod_state::read_json(&dir.join("pod.json"))
        .map_err(|e| bad("pod.json", e))?
        .ok_or_else(|| PlanError::Monitor(format!("{}: no pod.json", dir.display())))?;
    let lock = FileLock::try_exclusive(&dir.join("lock"))
        .map_err(|e| bad("lock", e))?
        .ok_or_else(|| PlanError::Monitor(format!("pod {}: another owner holds it", record.name)))?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Saved {
        pod: k8s_openapi::api::core::v1::Pod,
        #[serde(default)]
        config_maps: std::collections::BTreeMap<String, k8s_openapi::api::core::v1::ConfigMap>,
        #[serde(default)]
        secrets: std::collections::BTreeMap<String, k8s_openapi::api::core::v1::Secret>,
        #[serde(default)]
        service_env: Vec<(String, String)>,
    }
    let saved: Saved = pod_state::read_json(&dir.join("manifest.json"))
        .map_err(|e| bad("manifest.json", e))?
        .ok_or_else(|| PlanError::Monitor(format!("{}: no manifest.json", dir.display())))?;
    let manifest = Manifest {
        pod: saved.pod,
        config_maps: saved.config_maps,
        secrets: saved.secrets,
        warnings: Vec::new(),
        tokens: Default::default(),
        service_env: saved.service_env,
    };
    let status: Status = pod_state::read_json(&Status::path(&dir))
        .map_err(|e| bad("status.json", e))?
        .ok_or_else(|| PlanError::Monitor(format!("pod {}: it was still being made", record.name)))?;
    let store = Store::open(&opts.root).map_err(|source| PlanError::Store {
        what: format!("opening the image store under {}", opts.root.display()),
        source,
    })?;
    let spec = manifest.pod.spec.as_ref().ok_or_else(|| PlanError::invalid("spec".into(), "Required value".into()))?;
    let containers = containers_of(spec);
    // Its images were in the store when it was made: no pull now.
    let resolved = resolve_images(opts, &store, &containers, Some("IfNotPresent"), reporter)?;
    let grace = grace_of(spec);
    let parts = parts_of(&containers, resolved, &record.key, grace)?;
    let desired = desired_of(spec, opts, &parts, status.stop_deadline);
    let checks = probe::Runner::new().map_err(PlanError::io("a pipe for probe results"))?;

    // Its monitor: still there, or started again (then it kills what the dead one ran).
    let alive = pod_state::read_json::<pod_state::MonitorRecord>(&pod_state::MonitorRecord::path(&dir))
        .ok()
        .flatten()
        .filter(|m| m.alive());
    let connected = alive.as_ref().and_then(|_| client::connect(&dir.join("monitor.sock")).ok());
    let (mon, ip, hostname) = match connected {
        Some(m) => {
            let ready: Option<pod_state::SandboxReady> =
                pod_state::read_json(&pod_state::SandboxReady::path(&dir)).ok().flatten();
            let (ip, hostname) = ready.map_or((status.pod_ip, record.hostname.clone()), |r| (r.ip, r.hostname));
            (m, ip, hostname)
        }
        None => {
            if let Some(m) = alive {
                // Alive but unreachable: it cannot be asked anything, so it goes.
                let _ = crate::sys::process::kill(m.pid, nix::sys::signal::Signal::SIGKILL);
            }
            let (m, ready) = client::spawn(&opts.root, uid, false, opts.log_rotation)?;
            (m, ready.ip, ready.hostname)
        }
    };
    let sb = Sandbox::at(&opts.root, &record, ip, &hostname);
    let vols = volumes::existing(&sb.dir.join("volumes"), &manifest.pod);
    let mut statuses = status.containers;
    // What the monitor saw while no one listened.
    for (i, c) in statuses.iter_mut().enumerate() {
        let rec: Option<pod_state::ContainerRecord> =
            pod_state::read_json(&pod_state::ContainerRecord::path(&dir, &c.name)).ok().flatten();
        match (rec, &c.state) {
            (Some(r), State::Running { started_at, .. }) if r.started_at >= *started_at => {
                if let Some(t) = r.terminated {
                    reporter.report(Event::Exited { name: c.name.clone(), terminated: t.clone() });
                    c.state = State::Exited(t);
                }
            }
            // Started by the monitor as the owner died, before the owner wrote it down.
            (Some(r), State::Waiting | State::BackOff { .. }) if r.terminated.is_none() => {
                c.now_running(r.pid, r.started_at, &desired.probes_of(i));
            }
            _ => {}
        }
        // Checks that were running died with the daemon: run again.
        for p in &mut c.probes {
            p.in_flight = false;
        }
        if c.pre_stop == Hook::Running {
            c.pre_stop = Hook::NotRun;
        }
    }
    Ok(Owner {
        opts: opts.clone(),
        several: parts.len() > 1,
        manifest,
        store,
        record,
        sb,
        vols,
        mon,
        parts,
        statuses,
        desired,
        grace,
        checks,
        execs: Vec::new(),
        foreground: false,
        _lock: lock,
    })
}

/// Has the monitor kill what runs and remove the sandbox; if it cannot (it is gone, or
/// never made it), removes what the record says.
fn remove(root: &std::path::Path, record: &PodRecord, monitor: Option<Monitor>) -> Result<(), PlanError> {
    match monitor {
        Some(mut m) => {
            let reply = m.request(&Request::Teardown);
            m.wait();
            match reply {
                Ok(Message::Done { error: None }) => Ok(()),
                Ok(Message::Done { error: Some(e) }) => {
                    tracing::warn!("the pod's monitor: removing the pod: {e}");
                    sandbox::teardown(root, record)
                }
                _ => sandbox::teardown(root, record),
            }
        }
        None => sandbox::teardown(root, record),
    }
}

impl Owner {
    pub fn record(&self) -> &PodRecord {
        &self.record
    }

    pub fn statuses(&self) -> &[ContainerStatus] {
        &self.statuses
    }

    pub fn pod_ip(&self) -> Option<std::net::Ipv4Addr> {
        self.sb.ip
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// A stop was asked for (the pod was being deleted).
    pub fn stopping(&self) -> bool {
        self.desired.stop_deadline.is_some()
    }

    /// The pod's own grace period (terminationGracePeriodSeconds).
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Keeps the pod as desired until it is over; returns its exit code.
    pub fn drive(&mut self, control: &mut dyn Control, reporter: &mut dyn Reporter) -> Result<i32, PlanError> {
        self.changed(reporter);
        loop {
            let plan = reconcile::reconcile(&self.desired, &self.statuses, SystemTime::now());
            let acted = !plan.actions.is_empty();
            for action in plan.actions {
                self.apply(action, reporter)?;
            }
            if acted {
                self.changed(reporter);
            }
            if let Some(outcome) = plan.over {
                return Ok(outcome.exit_code());
            }
            if !acted {
                self.wait(plan.wake_at, control, reporter)?;
            }
        }
    }

    /// Removes the pod: its containers, sandbox and directory.
    pub fn finish(self) -> Result<(), PlanError> {
        let Owner { opts, record, mon, _lock, .. } = self;
        let r = remove(&opts.root, &record, Some(mon));
        drop(_lock);
        r
    }

    fn changed(&mut self, reporter: &mut dyn Reporter) {
        let status =
            Status { containers: self.statuses.clone(), stop_deadline: self.desired.stop_deadline, pod_ip: self.sb.ip };
        if let Err(e) = pod_state::write_json(&Status::path(&self.sb.dir), &status) {
            tracing::warn!("pod {}: writing its status: {e}", self.record.name);
        }
        reporter.changed(&self.statuses);
    }

    fn apply(&mut self, action: Action, reporter: &mut dyn Reporter) -> Result<(), PlanError> {
        match action {
            Action::Start(i) => return self.start(i, reporter),
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
                reporter.report(Event::Restarting {
                    name: c.name.clone(),
                    delay,
                    restart: c.restart_count,
                    policy: self.desired.restart_policy,
                });
            }
            Action::Finish(i) => {
                let c = &mut self.statuses[i];
                if let State::Exited(t) = &c.state {
                    c.state = State::Done(t.clone());
                }
            }
            Action::Probe(index, kind) => {
                let State::Running { started_at: run, .. } = self.statuses[index].state else { return Ok(()) };
                let Some(check) = self.parts[index].checks.probe(kind).cloned() else { return Ok(()) };
                let r = &mut self.statuses[index].probes[kind as usize];
                r.in_flight = true;
                r.last_run = Some(SystemTime::now());
                self.run_check(Purpose::Probe { index, kind, run }, &check, reporter)?;
            }
            Action::PreStop(index) => {
                self.statuses[index].pre_stop = Hook::Running;
                let Some(mut check) = self.parts[index].checks.pre_stop.clone() else { return Ok(()) };
                // The hook may take what is left of the grace period, no more.
                if let Some(deadline) = self.desired.stop_deadline {
                    check.timeout = deadline.duration_since(SystemTime::now()).unwrap_or_default();
                }
                self.run_check(Purpose::PreStop { index }, &check, reporter)?;
            }
        }
        Ok(())
    }

    /// Starts a check: in the container through the monitor, or on a thread.
    fn run_check(
        &mut self,
        purpose: Purpose,
        check: &probe::Check,
        reporter: &mut dyn Reporter,
    ) -> Result<(), PlanError> {
        let Handler::Exec(command) = &check.handler else {
            if let Err(e) = self.checks.spawn(purpose, check, self.sb.ip) {
                self.checked(purpose, Err(format!("start a thread: {e}")), reporter);
            }
            return Ok(());
        };
        let name = match purpose {
            Purpose::Probe { index, .. } | Purpose::PreStop { index } => self.statuses[index].name.clone(),
        };
        let io = ExecIo::Capture { timeout_ms: check.timeout.as_millis() as u64 };
        let req = Request::Exec { name, command: command.clone(), io };
        match self.mon.request(&req) {
            Ok(Message::ExecStarted { exec, .. }) => self.execs.push((exec, purpose)),
            Ok(Message::Error { error }) => self.checked(purpose, Err(error), reporter),
            Ok(other) => self.checked(purpose, Err(format!("unexpected answer {other:?}")), reporter),
            Err(e) if !self.mon_alive(reporter) => return Err(e),
            Err(e) => self.checked(purpose, Err(e.to_string()), reporter),
        }
        Ok(())
    }

    /// A check's result came.
    fn checked(&mut self, purpose: Purpose, result: Result<(), String>, reporter: &mut dyn Reporter) {
        match purpose {
            Purpose::Probe { index, kind, run } => {
                let c = &mut self.statuses[index];
                // A result of an earlier run of the container says nothing of this one.
                if !matches!(c.state, State::Running { started_at, .. } if started_at == run) {
                    return;
                }
                let name = c.name.clone();
                let verdict = c.probed(kind, result.is_ok(), &self.desired.probes_of(index), SystemTime::now());
                if let Err(message) = result {
                    let message = format!("{} probe failed: {}", kind.as_str(), message.trim_end());
                    reporter.report(Event::Unhealthy { name: name.clone(), message });
                }
                if verdict.kill {
                    let message =
                        format!("Container {name} failed {} probe, will be restarted", kind.as_str().to_lowercase());
                    reporter.report(Event::Killing { name, message });
                }
            }
            Purpose::PreStop { index } => {
                self.statuses[index].pre_stop = Hook::Done;
                if let Err(message) = result {
                    let name = self.statuses[index].name.clone();
                    reporter.report(Event::HookFailed { name, message: format!("PreStopHook failed: {message}") });
                }
            }
        }
        self.changed(reporter);
    }

    fn start(&mut self, i: usize, reporter: &mut dyn Reporter) -> Result<(), PlanError> {
        let started = self.prepare(i).and_then(|bundle| {
            let part = &self.parts[i];
            let req = Request::Start {
                name: part.spec.name.clone(),
                id: part.id.clone(),
                bundle,
                restart: self.statuses[i].restart_count,
                echo: Some(if self.several { format!("[{}] ", part.spec.name) } else { String::new() }),
                stdin: part.spec.stdin == Some(true),
                stdin_once: part.spec.stdin_once == Some(true),
            };
            match self.mon.request(&req)? {
                Message::Started { pid, started_at, .. } => Ok((pid, started_at)),
                Message::Error { error } => Err(PlanError::Monitor(error)),
                other => Err(PlanError::Monitor(format!("unexpected answer {other:?}"))),
            }
        });
        match started {
            Ok((pid, started_at)) => {
                // Created and started in one step by the monitor.
                let name = self.statuses[i].name.clone();
                let image = self.parts[i].spec.image.clone().unwrap_or_default();
                let message = match self.parts[i].image.pulled {
                    // Told once: the first run is the one that waited for it.
                    Some(took) if self.statuses[i].restart_count == 0 => {
                        format!("Successfully pulled image \"{image}\" in {:.3}s", took.as_secs_f64())
                    }
                    _ => format!("Container image \"{image}\" already present on machine"),
                };
                reporter.report(Event::Pulled { name: name.clone(), message });
                reporter.report(Event::Created { name });
                let probes = self.desired.probes_of(i);
                self.statuses[i].now_running(pid, started_at, &probes);
                reporter.report(Event::Started { name: self.statuses[i].name.clone() });
                Ok(())
            }
            // The monitor is gone: nothing more can run.
            Err(e @ PlanError::Monitor(_)) if !self.mon_alive(reporter) => Err(e),
            // The pod's own configuration is at fault: a kept pod waits and tries again,
            // as the kubelet does; `nodectl run` reports it as a start that failed.
            Err(e @ PlanError::Invalid { .. }) if !self.foreground => {
                let _ = crate::image::rootfs::remove(&self.store, &self.parts[i].id);
                let c = &mut self.statuses[i];
                let delay = c.backoff;
                c.backoff = (delay * 2).min(reconcile::MAX_BACKOFF);
                let message = e.to_string();
                c.state = State::ConfigError { message: message.clone(), retry_at: SystemTime::now() + delay };
                reporter.report(Event::ConfigError { name: c.name.clone(), message });
                self.changed(reporter);
                Ok(())
            }
            Err(e) => {
                let name = self.parts[i].spec.name.clone();
                reporter.report(Event::CouldNotStart { name, error: e.to_string() });
                let _ = crate::image::rootfs::remove(&self.store, &self.parts[i].id);
                self.exited(
                    i,
                    Terminated {
                        exit_code: reconcile::START_ERROR_CODE,
                        signal: None,
                        oom_killed: false,
                        message: Some(e.to_string()),
                        started_at: None,
                        finished_at: SystemTime::now(),
                        unknown: false,
                    },
                    reporter,
                );
                Ok(())
            }
        }
    }

    fn mon_alive(&mut self, reporter: &mut dyn Reporter) -> bool {
        match self.mon.events() {
            Ok(events) => {
                self.heard(events, reporter);
                true
            }
            Err(_) => false,
        }
    }

    /// The container's root filesystem, environment and OCI spec, in its bundle.
    fn prepare(&mut self, i: usize) -> Result<PathBuf, PlanError> {
        let part = &self.parts[i];
        // What a previous run of this container left (a restart makes a fresh one).
        crate::image::rootfs::remove(&self.store, &part.id).map_err(PlanError::rootfs("remove old root filesystem"))?;
        let rootfs = crate::image::rootfs::prepare(&self.store, &part.image.record, &part.id)
            .map_err(PlanError::rootfs("root filesystem"))?;
        tracing::debug!(container = %part.spec.name, "root filesystem mounted");
        let sources = EnvSources {
            pod: &self.manifest.pod,
            config_maps: &self.manifest.config_maps,
            secrets: &self.manifest.secrets,
            pod_ip: self.sb.ip,
            service_env: &self.manifest.service_env,
        };
        let image_env = part.image.config.as_ref().and_then(|c| c.env().clone()).unwrap_or_default();
        let env = env::build(&sources, &part.spec, &part.field, &image_env)?;
        let spec = container_spec::build(&container_spec::Input {
            pod: &self.manifest.pod,
            container: &part.spec,
            field: &part.field,
            image: part.image.config.as_ref(),
            rootfs: &rootfs,
            env: &env,
            sandbox: &self.sb,
            volumes: &self.vols,
            seccomp_dir: &self.opts.root.join("seccomp"),
            allowed_unsafe_sysctls: &self.opts.allowed_unsafe_sysctls,
        })?;
        let bundle = self.sb.dir.join("bundles").join(&part.spec.name);
        fs::create_dir_all(&bundle).map_err(PlanError::io(format!("create {}", bundle.display())))?;
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| PlanError::io("encode config.json")(e.into()))?;
        fs::write(bundle.join("config.json"), json)
            .map_err(PlanError::io(format!("write {}", bundle.join("config.json").display())))?;
        tracing::debug!(container = %part.spec.name, "spec written");
        Ok(bundle)
    }

    /// Waits for the monitor, a command or the next timer, and takes in what came.
    fn wait(
        &mut self,
        until: Option<SystemTime>,
        control: &mut dyn Control,
        reporter: &mut dyn Reporter,
    ) -> Result<(), PlanError> {
        // What a request read past its answer is not on the socket any more.
        let timeout = match until {
            _ if self.mon.pending() => PollTimeout::ZERO,
            Some(at) => {
                let ms = at.duration_since(SystemTime::now()).unwrap_or_default().as_millis().min(60_000) as i32 + 1;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let (control_ready, mon_ready, checks_ready) = {
            let mut fds = [
                PollFd::new(control.fd(), PollFlags::POLLIN),
                PollFd::new(self.mon.fd(), PollFlags::POLLIN),
                PollFd::new(self.checks.fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(PlanError::errno("poll")(e)),
            }
            let r = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (r(&fds[0]), r(&fds[1]), r(&fds[2]))
        };
        if checks_ready {
            for (purpose, result) in self.checks.take() {
                self.checked(purpose, result, reporter);
            }
        }
        if control_ready {
            for Command::Stop { grace } in control.take() {
                let deadline = SystemTime::now() + grace.unwrap_or(self.grace);
                self.desired.stop_deadline = Some(self.desired.stop_deadline.map_or(deadline, |d| d.min(deadline)));
                self.changed(reporter);
            }
        }
        if mon_ready || self.mon.pending() {
            match self.mon.events() {
                Ok(events) => self.heard(events, reporter),
                Err(_) => self.replace_monitor(reporter)?,
            }
        }
        Ok(())
    }

    /// The monitor died: a new one adopts the sandbox and kills what the old one ran; each
    /// container that was running ended with its status unknown, and the next step restarts
    /// it as its policy says (the kubelet's ContainerStatusUnknown).
    fn replace_monitor(&mut self, reporter: &mut dyn Reporter) -> Result<(), PlanError> {
        self.mon.wait();
        reporter.report(Event::Warning(format!("pod {}: its monitor died; starting another", self.record.name)));
        let (m, _) = client::spawn(&self.opts.root, &self.record.uid, self.foreground, self.opts.log_rotation)?;
        self.mon = m;
        for i in 0..self.statuses.len() {
            if !matches!(self.statuses[i].state, State::Running { .. }) {
                continue;
            }
            let rec: Option<pod_state::ContainerRecord> =
                pod_state::read_json(&pod_state::ContainerRecord::path(&self.sb.dir, &self.statuses[i].name))
                    .ok()
                    .flatten();
            let t = rec.and_then(|r| r.terminated).unwrap_or(Terminated {
                exit_code: 137,
                signal: Some(libc::SIGKILL),
                oom_killed: false,
                message: Some("its monitor died".into()),
                started_at: None,
                finished_at: SystemTime::now(),
                unknown: true,
            });
            self.exited(i, t, reporter);
        }
        self.changed(reporter);
        Ok(())
    }

    fn heard(&mut self, events: Vec<Message>, reporter: &mut dyn Reporter) {
        for m in events {
            match m {
                Message::Exited { name, terminated } => {
                    if let Some(i) = self.statuses.iter().position(|c| c.name == name)
                        && matches!(self.statuses[i].state, State::Running { .. })
                    {
                        self.exited(i, terminated, reporter);
                        self.changed(reporter);
                    }
                }
                Message::ExecExited { exec, code, timed_out, output } => {
                    let Some(at) = self.execs.iter().position(|(e, _)| *e == exec) else { continue };
                    let (_, purpose) = self.execs.remove(at);
                    let result = match (timed_out, code) {
                        (true, _) => Err("command timed out".to_string()),
                        (false, 0) => Ok(()),
                        (false, _) if output.trim().is_empty() => Err(format!("command exited with code {code}")),
                        (false, _) => Err(output),
                    };
                    self.checked(purpose, result, reporter);
                }
                _ => {}
            }
        }
    }

    /// A container ended; the next step decides what comes next for it.
    fn exited(&mut self, i: usize, t: Terminated, reporter: &mut dyn Reporter) {
        reporter.report(Event::Exited { name: self.statuses[i].name.clone(), terminated: t.clone() });
        self.statuses[i].now_ended(t);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_owner_can_move_to_the_thread_that_drives_it() {
        fn is_send<T: Send>() {}
        is_send::<super::Owner>();
    }
}
