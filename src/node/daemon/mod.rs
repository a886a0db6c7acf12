//! `nodectl daemon`: keeps every pod it is given in its desired state, what kubelet,
//! containerd and conmon are together, in one small process. Each pod has an owner
//! ([`crate::node::owner`], the same code `nodectl run` uses) driven on a thread of its own
//! (its work is blocking: mounts, files, the monitor's socket); the local API
//! ([`api`]) is served by tokio on a unix socket under the state root. Pods' monitors are
//! not the daemon's children in any way that matters: they live in sessions of their own
//! and outlive it.

pub mod api;
pub mod logs;
pub mod metrics;
pub mod status;
pub mod streaming;

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;

use self::status::Facts;
use super::PlanError;
use super::owner::{self, Command, Control, Event, PodOptions, Reporter};
use super::reconcile::ContainerStatus;
use crate::model::manifest::Manifest;
use crate::sys::lock::FileLock;

/// How many events a pod keeps (the oldest go first).
const MAX_EVENTS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another nodectl daemon holds {0} (one daemon per state root)")]
    Busy(PathBuf),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// One event of a pod, as `kubectl describe` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    /// Normal or Warning.
    pub kind: &'static str,
    pub reason: &'static str,
    pub message: String,
    pub count: u32,
    pub first: SystemTime,
    pub last: SystemTime,
}

/// What is known of a pod now.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// The pod's short key (container ids are KEY.NAME).
    pub key: String,
    pub statuses: Vec<ContainerStatus>,
    pub facts: Facts,
    pub events: Vec<PodEvent>,
    /// Nothing runs or will run again; the pod waits to be deleted.
    pub over: bool,
}

/// A pod the daemon keeps.
pub struct Entry {
    pub uid: String,
    /// The pod as given, with its uid, namespace and creation time set.
    pub pod: Pod,
    view: Mutex<View>,
    control: Mutex<Option<Waker>>,
    /// Set by a delete: the owner removes the pod once it has stopped.
    deleting: Mutex<bool>,
}

impl Entry {
    pub fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The pod with its status now.
    pub fn pod_with_status(&self) -> Pod {
        let view = self.view();
        let mut pod = self.pod.clone();
        let mut facts = view.facts.clone();
        facts.terminating = self.deleting();
        pod.status = Some(status::pod_status(&pod, &view.key, &view.statuses, &facts));
        if facts.terminating {
            pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                chrono::DateTime::<chrono::Utc>::from(SystemTime::now()),
            ));
        }
        pod
    }

    fn event(&self, kind: &'static str, reason: &'static str, message: String) {
        let now = SystemTime::now();
        let mut view = self.view();
        if let Some(e) = view.events.iter_mut().find(|e| e.reason == reason && e.message == message) {
            e.count += 1;
            e.last = now;
            return;
        }
        if view.events.len() >= MAX_EVENTS {
            view.events.remove(0);
        }
        view.events.push(PodEvent { kind, reason, message, count: 1, first: now, last: now });
    }

    pub fn deleting(&self) -> bool {
        self.deleting.lock().map(|d| *d).unwrap_or(true)
    }

    /// Asks the pod's owner to stop it (SIGKILL after `grace`, the pod's own if None) and
    /// remove it. A second delete may shorten the grace period, never lengthen it.
    pub fn delete(&self, grace: Option<Duration>) {
        if let Ok(mut d) = self.deleting.lock() {
            *d = true;
        }
        if let Ok(w) = self.control.lock()
            && let Some(w) = w.as_ref()
        {
            w.send(Command::Stop { grace });
        }
    }
}

/// Wakes a pod's owner thread with commands.
type Waker = crate::sys::wake::Sender<Command>;

/// The owner's end: a queue it polls.
struct Wakeable(crate::sys::wake::Receiver<Command>);

impl Control for Wakeable {
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.fd()
    }

    fn take(&mut self) -> Vec<Command> {
        self.0.take()
    }
}

fn wake_pair() -> std::io::Result<(Waker, Wakeable)> {
    let (tx, rx) = crate::sys::wake::channel()?;
    Ok((tx, Wakeable(rx)))
}

/// Turns the owner's events into the pod's events and view.
struct EntryReporter(Arc<Entry>);

impl Reporter for EntryReporter {
    fn report(&mut self, event: Event) {
        let e = &self.0;
        match event {
            Event::Warning(w) => e.event("Warning", "Warning", w),
            Event::Pulling { message, .. } => e.event("Normal", "Pulling", message),
            Event::Pulled { message, .. } => e.event("Normal", "Pulled", message),
            Event::Created { name } => e.event("Normal", "Created", format!("Created container {name}")),
            Event::Started { name } => e.event("Normal", "Started", format!("Started container {name}")),
            Event::CouldNotStart { name, error } => {
                e.event("Warning", "Failed", format!("Error: container {name}: {error}"))
            }
            Event::Exited { name, terminated } => {
                if terminated.oom_killed {
                    e.event("Warning", "OOMKilling", format!("Container {name} was killed by the OOM killer"));
                }
            }
            Event::ConfigError { message, .. } => e.event("Warning", "Failed", format!("Error: {message}")),
            Event::Unhealthy { message, .. } => e.event("Warning", "Unhealthy", message),
            Event::Killing { message, .. } => e.event("Normal", "Killing", message),
            Event::HookFailed { message, .. } => e.event("Warning", "FailedPreStopHook", message),
            Event::Restarting { name, delay, .. } => {
                e.event("Warning", "BackOff", format!("Back-off {delay:?} restarting failed container {name}"))
            }
        }
    }

    fn changed(&mut self, statuses: &[ContainerStatus]) {
        self.0.view().statuses = statuses.to_vec();
    }
}

/// The daemon: its pods, and how it makes new ones.
pub struct Daemon {
    pub opts: PodOptions,
    pods: Mutex<BTreeMap<(String, String), Arc<Entry>>>,
    /// Image garbage collection's policy, once [`super::image_gc::start`] turned it on.
    pub image_gc: std::sync::OnceLock<super::image_gc::Policy>,
    _lock: FileLock,
}

/// Why a pod was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("pods \"{0}\" already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
}

impl Daemon {
    /// Takes the state root for this daemon (one per root).
    pub fn open(opts: PodOptions) -> Result<Arc<Daemon>, DaemonError> {
        std::fs::create_dir_all(&opts.root).map_err(io(format!("create {}", opts.root.display())))?;
        let path = opts.root.join("daemon.lock");
        let lock = FileLock::try_exclusive(&path)
            .map_err(io(format!("lock {}", path.display())))?
            .ok_or_else(|| DaemonError::Busy(path.clone()))?;
        Ok(Arc::new(Daemon { opts, pods: Mutex::new(BTreeMap::new()), image_gc: Default::default(), _lock: lock }))
    }

    fn pods(&self) -> MutexGuard<'_, BTreeMap<(String, String), Arc<Entry>>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<Arc<Entry>> {
        self.pods().values().cloned().collect()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Entry>> {
        self.pods().get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// Accepts a checked manifest: the pod is made and kept by a thread of its own.
    pub fn admit(self: &Arc<Daemon>, mut manifest: Manifest) -> Result<Arc<Entry>, AdmitError> {
        let name = manifest.pod.metadata.name.clone().unwrap_or_default();
        let namespace = manifest.pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let uid = manifest
            .pod
            .metadata
            .uid
            .clone()
            .filter(|u| super::pod_state::uid_is_valid(u))
            .unwrap_or_else(super::pod_state::new_uid);
        let meta = &mut manifest.pod.metadata;
        meta.uid = Some(uid.clone());
        meta.namespace = Some(namespace.clone());
        meta.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(chrono::DateTime::<chrono::Utc>::from(
                SystemTime::now(),
            )));
        let (waker, control) = wake_pair().map_err(|e| AdmitError::Invalid(format!("pipe: {e}")))?;
        let entry = Arc::new(Entry {
            uid,
            pod: manifest.pod.clone(),
            view: Mutex::new(View {
                facts: Facts { creating: true, start_time: Some(SystemTime::now()), ..Default::default() },
                ..Default::default()
            }),
            control: Mutex::new(Some(waker)),
            deleting: Mutex::new(false),
        });
        let k = (namespace, name.clone());
        let mut pods = self.pods();
        if pods.contains_key(&k) {
            return Err(AdmitError::Exists(name));
        }
        // On disk before the answer: a daemon killed from here on makes the pod when it
        // comes back.
        // A full disk is the node's failure, not the pod's: the pod is kept, failed with
        // the reason, until it is deleted.
        let accepted = match owner::accept(&self.opts, &manifest, false) {
            Err(e) if !super::disk::is_full(&e) => return Err(AdmitError::Invalid(e.to_string())),
            accepted => accepted,
        };
        pods.insert(k, entry.clone());
        drop(pods);
        let daemon = self.clone();
        let e = entry.clone();
        let spawned = std::thread::Builder::new().name(format!("pod {name}")).spawn(move || {
            super::image_gc::before_pod(&daemon);
            match accepted {
                Ok(accepted) => daemon.keep(e, manifest, accepted, control),
                Err(err) => {
                    e.view().statuses = owner::initial_statuses(&manifest, daemon.opts.restart_backoff);
                    daemon.fail_until_deleted(&e, &err, &mut { control })
                }
            }
        });
        if let Err(err) = spawned {
            self.forget(&entry);
            return Err(AdmitError::Invalid(format!("start the pod's thread: {err}")));
        }
        Ok(entry)
    }

    fn forget(&self, entry: &Entry) {
        let mut pods = self.pods();
        let k = (entry.namespace().to_string(), entry.name().to_string());
        if pods.get(&k).is_some_and(|e| e.uid == entry.uid) {
            pods.remove(&k);
        }
    }

    /// The pod's thread: make it, keep it until it is over and deleted, remove it.
    fn keep(&self, entry: Arc<Entry>, manifest: Manifest, accepted: owner::Accepted, mut control: Wakeable) {
        let mut reporter = EntryReporter(entry.clone());
        entry.view().statuses = owner::initial_statuses(&manifest, self.opts.restart_backoff);
        let made = match self.images(&entry, &manifest, &mut control, &mut reporter) {
            Ok(Some(images)) => owner::create_accepted(&self.opts, manifest, accepted, images),
            Ok(None) => {
                // Deleted while it waited for its image.
                if let Err(e) = owner::abandon(&self.opts, accepted) {
                    tracing::warn!("pod {}: removing it: {e}", entry.name());
                }
                self.forget(&entry);
                return;
            }
            Err(e) => owner::abandon(&self.opts, accepted).and(Err(e)),
        };
        let owner = match made {
            Ok(o) => o,
            Err(e) => return self.fail_until_deleted(&entry, &e, &mut control),
        };
        self.keep_owner(entry, owner, control, reporter);
    }

    /// A pod that could not be made: kept, with its reason, until deleted.
    fn fail_until_deleted(&self, entry: &Arc<Entry>, e: &PlanError, control: &mut Wakeable) {
        self.failed(entry, e);
        while !entry.deleting() {
            let _ = wait_readable(control.fd(), None);
            control.take();
        }
        self.forget(entry);
    }

    /// The pod's images; while one is missing or cannot be pulled, the pod waits with the
    /// kubelet's reason (ErrImageNeverPull; ErrImagePull, then ImagePullBackOff until the
    /// next try) and tries again after a backoff that doubles up to 5 minutes. None if the
    /// pod was deleted meanwhile; Err for what no retry mends.
    fn images(
        &self,
        entry: &Entry,
        manifest: &Manifest,
        control: &mut Wakeable,
        reporter: &mut EntryReporter,
    ) -> Result<Option<owner::Images>, PlanError> {
        let mut backoff = self.opts.restart_backoff.max(Duration::from_millis(100));
        loop {
            let e = match owner::images_of(&self.opts, manifest, reporter) {
                Ok(images) => {
                    entry.view().facts.waiting.clear();
                    return Ok(Some(images));
                }
                Err(e) => e,
            };
            let PlanError::Image { field, source } = &e else { return Err(e) };
            let name = owner::container_at(manifest, field).unwrap_or_default();
            let (reason, message) = image_waiting(source);
            entry.event("Warning", "Failed", format!("Error: {reason}: {message}"));
            entry.view().facts.waiting.insert(name.clone(), (reason.to_string(), message));
            let next_try = std::time::Instant::now() + backoff;
            if reason == "ErrImagePull" {
                // Tried and failed: the kubelet shows the backoff until the next try.
                if !wait_unless_deleted(entry, control, next_try.min(std::time::Instant::now() + PULL_ERROR_SHOWN)) {
                    return Ok(None);
                }
                let back = format!("Back-off pulling image \"{}\"", source.image());
                entry.event("Normal", "BackOff", back.clone());
                entry.view().facts.waiting.insert(name, ("ImagePullBackOff".into(), back));
            }
            if !wait_unless_deleted(entry, control, next_try) {
                return Ok(None);
            }
            backoff = (backoff * 2).min(super::reconcile::MAX_BACKOFF);
        }
    }

    /// Keeps a made pod until it is over and deleted, then removes it.
    fn keep_owner(
        &self,
        entry: Arc<Entry>,
        mut owner: owner::Owner,
        mut control: Wakeable,
        mut reporter: EntryReporter,
    ) {
        {
            let mut view = entry.view();
            view.key = owner.record().key.clone();
            view.facts.creating = false;
            view.facts.pod_ip = owner.pod_ip();
            view.statuses = owner.statuses().to_vec();
        }
        // A delete that came while the pod was being made is in the control's queue.
        let result = owner.drive(&mut control, &mut reporter);
        entry.view().over = true;
        if let Err(e) = &result {
            entry.event("Warning", "Failed", e.to_string());
        }
        // A pod that ended keeps its logs and status until it is deleted.
        while !entry.deleting() {
            let _ = wait_readable(control.fd(), None);
            control.take();
        }
        entry.event("Normal", "Killing", "Removing the pod".into());
        if let Err(e) = owner.finish() {
            tracing::warn!("pod {}: removing it: {e}", entry.name());
        }
        self.forget(&entry);
    }

    /// Takes over the pods a daemon before us left (it was killed, or restarted): each is
    /// resumed where it was; one that was still being made is made again from its manifest.
    pub fn recover(self: &Arc<Daemon>) -> Vec<String> {
        let mut problems = Vec::new();
        let pods = super::pod_state::pods_dir(&self.opts.root);
        for dirent in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            let uid = dirent.file_name().to_string_lossy().into_owned();
            if !super::pod_state::uid_is_valid(&uid) {
                continue;
            }
            let dir = dirent.path();
            let record: Option<super::sandbox::PodRecord> =
                super::pod_state::read_json(&dir.join("pod.json")).ok().flatten();
            let Some(record) = record.filter(|r| r.daemon) else { continue };
            let mut reporter_entry = None;
            let mut sink = Collect(Vec::new());
            match owner::resume(&self.opts, &uid, &mut sink) {
                Ok(owner) => {
                    let mut pod = owner.manifest().pod.clone();
                    pod.metadata.uid = Some(uid.clone());
                    let stopping = owner.stopping();
                    match self.adopt(pod, owner, stopping, sink.0) {
                        Ok(e) => reporter_entry = Some(e),
                        Err(e) => problems.push(format!("pod {}: {e}", record.name)),
                    }
                }
                Err(e) => {
                    // Undone, then made again from what was asked.
                    let saved = std::fs::read(dir.join("manifest.json")).ok();
                    if let Err(t) = super::sandbox::teardown(&self.opts.root, &record) {
                        problems.push(format!("pod {}: removing what was half made: {t}", record.name));
                        continue;
                    }
                    let manifest = saved.and_then(|b| manifest_from_saved(&b));
                    match manifest {
                        Some(m) => {
                            if let Err(a) = self.admit(m) {
                                problems.push(format!("pod {}: {a}", record.name));
                            }
                        }
                        None => problems.push(format!("pod {}: {e}; its manifest is unreadable, removed", record.name)),
                    }
                }
            }
            let _ = reporter_entry;
        }
        problems
    }

    fn adopt(
        self: &Arc<Daemon>,
        pod: Pod,
        owner: owner::Owner,
        stopping: bool,
        events: Vec<Event>,
    ) -> Result<Arc<Entry>, AdmitError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let (waker, control) = wake_pair().map_err(|e| AdmitError::Invalid(format!("pipe: {e}")))?;
        let entry = Arc::new(Entry {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            pod,
            view: Mutex::new(View::default()),
            control: Mutex::new(Some(waker)),
            deleting: Mutex::new(stopping),
        });
        let mut reporter = EntryReporter(entry.clone());
        for e in events {
            reporter.report(e);
        }
        {
            let mut pods = self.pods();
            let k = (namespace, name.clone());
            if pods.contains_key(&k) {
                return Err(AdmitError::Exists(name));
            }
            pods.insert(k, entry.clone());
        }
        let daemon = self.clone();
        let e = entry.clone();
        std::thread::Builder::new()
            .name(format!("pod {name}"))
            .spawn(move || daemon.keep_owner(e, owner, control, reporter))
            .map_err(|err| AdmitError::Invalid(format!("start the pod's thread: {err}")))?;
        Ok(entry)
    }

    fn failed(&self, entry: &Entry, e: &PlanError) {
        let mut view = entry.view();
        view.facts.creating = false;
        view.facts.failed = Some(e.to_string());
        view.facts.failed_reason = super::disk::is_full(e).then_some(super::disk::OUT_OF_DISK);
        view.over = true;
        drop(view);
        entry.event("Warning", "Failed", e.to_string());
    }
}

/// Events told before the pod's entry exists.
struct Collect(Vec<Event>);

impl Reporter for Collect {
    fn report(&mut self, event: Event) {
        self.0.push(event);
    }
}

/// The manifest a pod was made from, as `manifest.json` keeps it.
fn manifest_from_saved(bytes: &[u8]) -> Option<Manifest> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    Some(Manifest {
        pod: serde_json::from_value(v.get("pod")?.clone()).ok()?,
        config_maps: serde_json::from_value(v.get("configMaps").cloned().unwrap_or_default()).unwrap_or_default(),
        secrets: serde_json::from_value(v.get("secrets").cloned().unwrap_or_default()).unwrap_or_default(),
        warnings: Vec::new(),
        tokens: Default::default(),
        service_env: serde_json::from_value(v.get("serviceEnv").cloned().unwrap_or_default()).unwrap_or_default(),
    })
}

/// The kubelet's waiting reason and message for an image that is not there.
fn image_waiting(e: &super::images::ImageError) -> (&'static str, String) {
    use super::images::ImageError;
    match e {
        ImageError::NeverPulled { image } => {
            ("ErrImageNeverPull", format!("Container image \"{image}\" is not present with pull policy of Never"))
        }
        ImageError::Reference { .. } => ("InvalidImageName", e.to_string()),
        _ => ("ErrImagePull", e.to_string()),
    }
}

/// How long ErrImagePull shows before ImagePullBackOff.
const PULL_ERROR_SHOWN: Duration = Duration::from_millis(50);

/// Waits until `until` on the pod's control (a delete wakes it); false if it was deleted.
fn wait_unless_deleted(entry: &Entry, control: &mut Wakeable, until: std::time::Instant) -> bool {
    while !entry.deleting() {
        let Some(left) = until.checked_duration_since(std::time::Instant::now()) else { return true };
        let _ = wait_readable(control.fd(), Some(left));
        control.take();
    }
    false
}

/// Waits until `fd` is readable, or `timeout` passed.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> nix::Result<i32> {
    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    let timeout = timeout.map_or(nix::poll::PollTimeout::NONE, |d| {
        // Rounded up: a wait that ends early only to come back adds nothing.
        let ms = i32::try_from(d.as_millis() + 1).unwrap_or(i32::MAX);
        nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX)
    });
    nix::poll::poll(&mut fds, timeout)
}
