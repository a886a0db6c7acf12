//! The pods bound to this node, kept as the API says: a watch (kube-runtime's watcher, which
//! reconnects and lists again) keeps what the API wants; a sync pass, each second or when
//! the watch saw something, holds the daemon to it and writes the pods' status back.
//!
//! - a new pod is admitted into the daemon with the API's uid, with the ConfigMaps and
//!   Secrets it names fetched from the API; while one it needs is missing the pod waits with
//!   the kubelet's CreateContainerConfigError and is tried again until it is there;
//! - a pod with a deletionTimestamp is stopped with its grace period, and once nothing of it
//!   runs the node deletes it for good (grace 0, uid precondition), as the kubelet does;
//! - a pod the daemon has that the API no longer binds here (gone, or a new pod of the same
//!   name) is stopped and removed; after a restart those are stopped before anything new
//!   starts, so a pod name never runs twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::status_patch::{drifted, stamp_transitions, status_patch};
use super::tokens;
use super::volume_sync::VolumeSync;
use crate::model::manifest::{self, Manifest};
use crate::node::daemon::{Daemon, Entry};

/// How often the pods are synced when the watch says nothing.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How often a pod waiting for a ConfigMap or Secret looks again.
const CONFIG_RETRY: Duration = Duration::from_secs(2);

pub(super) type Key = (String, String);

pub(super) fn key_of(pod: &Pod) -> Key {
    (pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()), pod.metadata.name.clone().unwrap_or_default())
}

pub(super) fn uid_of(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// What the API binds to this node, as the watch last told it.
#[derive(Default)]
pub(super) struct Desired {
    pub(super) pods: BTreeMap<Key, Pod>,
    /// The first full list has been seen: until then, nothing the daemon has is stale.
    pub(super) synced: bool,
}

/// The pod loop's state between passes.
pub struct PodSync {
    daemon: Arc<Daemon>,
    client: kube::Client,
    host_ip: Option<IpAddr>,
    desired: Arc<Mutex<Desired>>,
    wake: Arc<tokio::sync::Notify>,
    /// The status last written, by pod uid.
    written: HashMap<String, PodStatus>,
    /// When a pod waiting for its ConfigMaps or Secrets is looked at again, by uid.
    retry_at: HashMap<String, Instant>,
    /// When each pod was first seen here (its status' startTime until the daemon has it).
    seen: HashMap<String, SystemTime>,
    /// Pods the daemon refused: never tried again (their status says why).
    refused: BTreeSet<String>,
    /// Pods the daemon had, from before this start, that the API does not bind here: until
    /// they are gone, nothing new starts.
    stale_at_start: Option<BTreeSet<String>>,
    /// The tokens projected into the pods, shared with the volumes' sync.
    tokens: tokens::Cache,
}

impl PodSync {
    pub fn new(daemon: Arc<Daemon>, client: kube::Client, host_ip: Option<IpAddr>) -> PodSync {
        PodSync {
            daemon,
            client,
            host_ip,
            desired: Default::default(),
            wake: Default::default(),
            written: HashMap::new(),
            retry_at: HashMap::new(),
            seen: HashMap::new(),
            refused: BTreeSet::new(),
            stale_at_start: None,
            tokens: Default::default(),
        }
    }

    /// What brings the pods' volumes up to their sources, beside [`PodSync::run`].
    pub fn volume_sync(&self) -> VolumeSync {
        VolumeSync::new(self.daemon.clone(), self.client.clone(), self.desired.clone(), self.tokens.clone())
    }

    /// Watches and syncs, until the task is dropped.
    pub async fn run(mut self, node: String) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let desired = self.desired.clone();
        let wake = self.wake.clone();
        tokio::spawn(async move {
            let mut stream = watcher(api, config).default_backoff().boxed();
            let mut listing: BTreeMap<Key, Pod> = BTreeMap::new();
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!("watching this node's pods: {e}");
                        continue;
                    }
                };
                let mut d = desired.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    watcher::Event::Init => listing.clear(),
                    watcher::Event::InitApply(p) => {
                        listing.insert(key_of(&p), p);
                    }
                    watcher::Event::InitDone => {
                        d.pods = std::mem::take(&mut listing);
                        d.synced = true;
                    }
                    watcher::Event::Apply(p) => {
                        d.pods.insert(key_of(&p), p);
                    }
                    watcher::Event::Delete(p) => {
                        d.pods.remove(&key_of(&p));
                    }
                }
                drop(d);
                wake.notify_one();
            }
        });
        loop {
            let _ = tokio::time::timeout(SYNC_EVERY, self.wake.notified()).await;
            self.sync().await;
        }
    }

    /// One pass: the daemon held to what the API wants, statuses written.
    async fn sync(&mut self) {
        let (desired, synced) = {
            let d = self.desired.lock().unwrap_or_else(|p| p.into_inner());
            (d.pods.clone(), d.synced)
        };
        if !synced {
            return;
        }
        let held = self.daemon.list();
        // What the API no longer binds here (or binds under another uid) is stopped.
        let stale: Vec<&Arc<Entry>> = held
            .iter()
            .filter(|e| {
                let k = (e.namespace().to_string(), e.name().to_string());
                desired.get(&k).is_none_or(|p| uid_of(p) != e.uid)
            })
            .collect();
        for e in &stale {
            if !e.deleting() {
                tracing::info!(pod = %e.name(), namespace = %e.namespace(), "no longer bound here in the API: stopping it");
                e.delete(None);
            }
        }
        let at_start = self.stale_at_start.get_or_insert_with(|| stale.iter().map(|e| e.uid.clone()).collect());
        at_start.retain(|uid| held.iter().any(|e| &e.uid == uid));
        let hold_new = !at_start.is_empty();

        for (k, pod) in &desired {
            let uid = uid_of(pod).to_string();
            let entry = self.daemon.get(&k.0, &k.1);
            let ours = entry.as_ref().filter(|e| e.uid == uid);
            if pod.metadata.deletion_timestamp.is_some() {
                match ours {
                    Some(e) => {
                        if !e.deleting() {
                            let grace = pod
                                .metadata
                                .deletion_grace_period_seconds
                                .map(|s| Duration::from_secs(s.max(0) as u64));
                            e.delete(grace);
                        }
                        self.write_status(pod, e.pod_with_status().status).await;
                    }
                    // Nothing of it runs here: gone for good.
                    None => self.finish_delete(pod).await,
                }
                continue;
            }
            match (ours, &entry) {
                (Some(e), _) => {
                    let status = e.pod_with_status().status;
                    self.write_status(pod, status).await;
                }
                // The name's old pod is still stopping.
                (None, Some(_)) => {}
                (None, None) if hold_new || self.refused.contains(&uid) => {}
                (None, None) => self.start(pod).await,
            }
        }
        let live: BTreeSet<&str> = desired.values().map(uid_of).collect();
        self.written.retain(|uid, _| live.contains(uid.as_str()));
        self.retry_at.retain(|uid, _| live.contains(uid.as_str()));
        self.seen.retain(|uid, _| live.contains(uid.as_str()));
    }

    /// A new pod: its ConfigMaps, Secrets, Services' variables and tokens from the API, then
    /// into the daemon.
    async fn start(&mut self, pod: &Pod) {
        let uid = uid_of(pod).to_string();
        let now = Instant::now();
        if self.retry_at.get(&uid).is_some_and(|t| *t > now) {
            return;
        }
        let since = *self.seen.entry(uid.clone()).or_insert_with(SystemTime::now);
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let sources = match fetch_sources(&self.client, &ns, pod).await {
            Ok(s) => s,
            Err(missing) => return self.config_missing(pod, &missing, since).await,
        };
        let mut manifest = match manifest_of(pod, sources) {
            Ok(m) => m,
            Err(e) => return self.refuse(pod, e, since).await,
        };
        let from_api = async {
            Ok::<_, String>((
                fetch_service_env(&self.client, &ns, pod).await?,
                tokens::fetch(&self.client, &ns, pod, &BTreeMap::new()).await?,
            ))
        };
        let issued = match from_api.await {
            Ok((env, issued)) => {
                manifest.service_env = env;
                manifest.tokens = tokens::strings(&issued);
                issued
            }
            Err(e) => return self.config_missing(pod, &e, since).await,
        };
        self.retry_at.remove(&uid);
        let daemon = self.daemon.clone();
        match tokio::task::spawn_blocking(move || daemon.admit(manifest)).await {
            Ok(Ok(e)) => {
                tracing::info!(pod = %e.name(), namespace = %e.namespace(), uid = %e.uid, "admitted from the API");
                if !issued.is_empty() {
                    self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(uid, issued);
                }
                let status = e.pod_with_status().status;
                self.write_status(pod, status).await;
            }
            // Already there under this name: the next pass sorts it out.
            Ok(Err(crate::node::daemon::AdmitError::Exists(_))) => {}
            Ok(Err(e)) => self.refuse(pod, e.to_string(), since).await,
            Err(e) => tracing::warn!("admitting a pod: {e}"),
        }
    }

    /// A pod whose ConfigMaps, Secrets, Services or tokens cannot be had yet: waiting with
    /// the kubelet's CreateContainerConfigError, and tried again after [`CONFIG_RETRY`].
    async fn config_missing(&mut self, pod: &Pod, message: &str, since: SystemTime) {
        self.retry_at.insert(uid_of(pod).to_string(), Instant::now() + CONFIG_RETRY);
        let status = waiting_status(pod, "CreateContainerConfigError", message, self.host_ip, since);
        self.write_status(pod, Some(status)).await;
    }

    /// A pod this node cannot run: Failed with the reason, as the kubelet rejects a pod.
    async fn refuse(&mut self, pod: &Pod, message: String, since: SystemTime) {
        tracing::warn!(pod = ?pod.metadata.name, "refused: {message}");
        self.refused.insert(uid_of(pod).to_string());
        let mut status = waiting_status(pod, "CreateContainerConfigError", &message, self.host_ip, since);
        status.phase = Some("Failed".into());
        status.reason = Some("UnsupportedPod".into());
        status.message = Some(message);
        self.write_status(pod, Some(status)).await;
    }

    /// PATCH pods/NAME/status with what changed since the last write, if anything did.
    async fn write_status(&mut self, pod: &Pod, status: Option<PodStatus>) {
        let Some(mut status) = status else { return };
        if let Some(ip) = self.host_ip {
            status.host_ip = Some(ip.to_string());
            status.host_ips = Some(vec![HostIP { ip: ip.to_string() }]);
        }
        let uid = uid_of(pod).to_string();
        // The first write is against what the API has; later ones against what we wrote,
        // unless someone else changed what we said.
        let last = match pod.status.as_ref() {
            Some(api) if drifted(api, &status) => Some(api),
            api => self.written.get(&uid).or(api),
        };
        stamp_transitions(last, &mut status, &Time(crate::model::time::now()));
        let Some(patch) = status_patch(last, &status) else {
            self.written.insert(uid, status);
            return;
        };
        let (ns, name) = key_of(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                self.written.insert(uid, status);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(pod = %name, namespace = %ns, "writing its status: {e}"),
        }
    }

    /// DELETE with grace 0 and the uid as precondition: the pod's end, once nothing of it runs.
    async fn finish_delete(&mut self, pod: &Pod) {
        let (ns, name) = key_of(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => tracing::info!(pod = %name, namespace = %ns, "stopped and deleted"),
            Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => {}
            Err(e) => tracing::warn!(pod = %name, namespace = %ns, "deleting it: {e}"),
        }
    }
}

/// The ConfigMaps and Secrets a pod names, each with whether the pod can do without it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refs {
    pub config_maps: BTreeMap<String, bool>,
    pub secrets: BTreeMap<String, bool>,
}

fn note(map: &mut BTreeMap<String, bool>, name: &str, optional: Option<bool>) {
    let optional = optional == Some(true);
    // Needed if any reference needs it.
    let slot = map.entry(name.to_string()).or_insert(optional);
    *slot = *slot && optional;
}

/// Every ConfigMap and Secret the pod refers to: volumes (and projected ones), env and
/// envFrom of every container.
pub fn refs(pod: &Pod) -> Refs {
    let mut r = Refs::default();
    let Some(spec) = &pod.spec else { return r };
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            note(&mut r.config_maps, &c.name, c.optional);
        }
        if let Some(s) = &v.secret {
            note(&mut r.secrets, s.secret_name.as_deref().unwrap_or_default(), s.optional);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                note(&mut r.config_maps, &c.name, c.optional);
            }
            if let Some(s) = &p.secret {
                note(&mut r.secrets, &s.name, s.optional);
            }
        }
    }
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        for e in c.env.iter().flatten() {
            if let Some(f) = &e.value_from {
                if let Some(k) = &f.config_map_key_ref {
                    note(&mut r.config_maps, &k.name, k.optional);
                }
                if let Some(k) = &f.secret_key_ref {
                    note(&mut r.secrets, &k.name, k.optional);
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(k) = &f.config_map_ref {
                note(&mut r.config_maps, &k.name, k.optional);
            }
            if let Some(k) = &f.secret_ref {
                note(&mut r.secrets, &k.name, k.optional);
            }
        }
    }
    r.config_maps.remove("");
    r.secrets.remove("");
    r
}

pub(super) type Sources = (Vec<ConfigMap>, Vec<Secret>);

/// Gets what the pod names from the API (only that: the node may read nothing else). Err:
/// the kubelet's message for the first one needed that is missing or unreadable.
pub(super) async fn fetch_sources(client: &kube::Client, ns: &str, pod: &Pod) -> Result<Sources, String> {
    let r = refs(pod);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut out: Sources = (Vec::new(), Vec::new());
    for (name, optional) in &r.config_maps {
        match maps.get_opt(name).await {
            Ok(Some(c)) => out.0.push(c),
            Ok(None) if *optional => {}
            Ok(None) => return Err(format!("configmap \"{name}\" not found")),
            Err(e) => return Err(format!("configmap \"{name}\": {e}")),
        }
    }
    for (name, optional) in &r.secrets {
        match secrets.get_opt(name).await {
            Ok(Some(s)) => out.1.push(s),
            Ok(None) if *optional => {}
            Ok(None) => return Err(format!("secret \"{name}\" not found")),
            Err(e) => return Err(format!("secret \"{name}\": {e}")),
        }
    }
    Ok(out)
}

/// The Services' variables for the pod's containers (see [`crate::node::env::service_env`]).
async fn fetch_service_env(client: &kube::Client, ns: &str, pod: &Pod) -> Result<Vec<(String, String)>, String> {
    use k8s_openapi::api::core::v1::Service;
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let own = if links {
        let api: Api<Service> = Api::namespaced(client.clone(), ns);
        api.list(&Default::default())
            .await
            .map_err(|e| format!("listing the services of namespace \"{ns}\": {e}"))?
            .items
    } else {
        Vec::new()
    };
    let api_service = Api::<Service>::namespaced(client.clone(), "default")
        .get_opt("kubernetes")
        .await
        .map_err(|e| format!("reading service \"default/kubernetes\": {e}"))?;
    Ok(crate::node::env::service_env(&crate::node::env::services_for(own, api_service, links)))
}

/// The pod (as the API has it) with its ConfigMaps and Secrets, checked by the same rules
/// as a manifest file; Err says why this node cannot run it.
pub(super) fn manifest_of(pod: &Pod, (maps, secrets): Sources) -> Result<Manifest, String> {
    let meta = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| json!({"name": m.name, "namespace": m.namespace, "uid": m.uid, "labels": m.labels, "annotations": m.annotations});
    let strip_nulls = |mut v: Value| {
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.retain(|_, v| !v.is_null());
        }
        v
    };
    let mut docs = vec![strip_nulls(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta(&pod.metadata), "spec": pod.spec,
    }))];
    for c in maps {
        docs.push(strip_nulls(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(&c.metadata),
            "data": c.data, "binaryData": c.binary_data,
        })));
    }
    for s in secrets {
        docs.push(strip_nulls(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": meta(&s.metadata), "type": s.type_, "data": s.data,
        })));
    }
    let text = docs.iter().map(Value::to_string).collect::<Vec<_>>().join("\n---\n");
    let (ns, name) = key_of(pod);
    let mut m = manifest::parse(&format!("pod {ns}/{name}"), &text).map_err(|e| e.to_string())?;
    // parse reads the uid as a field `nodectl run` ignores; the API's uid is the pod's.
    m.pod.metadata.uid = pod.metadata.uid.clone();
    m.warnings.clear();
    Ok(m)
}

/// The status of a pod that is not made yet: every container waiting with `reason`.
pub fn waiting_status(pod: &Pod, reason: &str, message: &str, host_ip: Option<IpAddr>, since: SystemTime) -> PodStatus {
    let waiting = |name: &str, image: Option<&String>| ContainerStatus {
        name: name.to_string(),
        image: image.cloned().unwrap_or_default(),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_string()),
                message: Some(message.to_string()),
            }),
            ..Default::default()
        }),
        ready: false,
        started: Some(false),
        restart_count: 0,
        ..Default::default()
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let inits: Vec<ContainerStatus> =
        spec.init_containers.iter().flatten().map(|c| waiting(&c.name, c.image.as_ref())).collect();
    let condition = |kind: &str, ok: bool, reason: Option<&str>| PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.map(String::from),
        ..Default::default()
    };
    PodStatus {
        phase: Some("Pending".into()),
        conditions: Some(vec![
            condition("PodScheduled", true, None),
            condition("Initialized", inits.is_empty(), (!inits.is_empty()).then_some("ContainersNotInitialized")),
            condition("ContainersReady", false, Some("ContainersNotReady")),
            condition("Ready", false, Some("ContainersNotReady")),
        ]),
        container_statuses: Some(spec.containers.iter().map(|c| waiting(&c.name, c.image.as_ref())).collect()),
        init_container_statuses: (!inits.is_empty()).then_some(inits),
        host_ip: host_ip.map(|ip| ip.to_string()),
        start_time: Some(Time(chrono::DateTime::<chrono::Utc>::from(since))),
        qos_class: Some(crate::node::daemon::status::qos_class(pod).to_string()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn every_config_map_and_secret_a_pod_names_is_found_with_whether_it_is_needed() {
        let p = pod(r#"
metadata: {name: p}
spec:
  containers:
  - name: c
    env:
    - {name: A, valueFrom: {configMapKeyRef: {name: env-map, key: a}}}
    - {name: B, valueFrom: {secretKeyRef: {name: env-secret, key: b, optional: true}}}
    envFrom: [{configMapRef: {name: from-map, optional: true}}]
  volumes:
  - {name: v, configMap: {name: from-map}}
  - {name: s, secret: {secretName: vol-secret}}
  - name: p
    projected: {sources: [{configMap: {name: projected-map, optional: true}}]}
"#);
        let r = refs(&p);
        assert_eq!(
            r.config_maps,
            BTreeMap::from([
                ("env-map".to_string(), false),
                // optional in envFrom, needed by the volume: needed.
                ("from-map".to_string(), false),
                ("projected-map".to_string(), true),
            ])
        );
        assert_eq!(r.secrets, BTreeMap::from([("env-secret".to_string(), true), ("vol-secret".to_string(), false)]));
    }

    #[test]
    fn a_pod_waiting_for_its_config_shows_the_kubelets_reason_on_each_container() {
        let p = pod(
            "metadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: busybox}\n  - {name: b, image: busybox}\n",
        );
        let s =
            waiting_status(&p, "CreateContainerConfigError", "configmap \"x\" not found", None, SystemTime::UNIX_EPOCH);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let reasons: Vec<_> = s
            .container_statuses
            .unwrap()
            .iter()
            .map(|c| c.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.clone().unwrap())
            .collect();
        assert_eq!(reasons, ["CreateContainerConfigError", "CreateContainerConfigError"]);
    }

    #[test]
    fn a_pod_from_the_api_becomes_a_manifest_with_its_uid_and_config() {
        let p = pod(r#"
metadata: {name: p, namespace: team, uid: 0b6ba3c4-7f0e-4e2c-9d0a-5f4a7c1b2e3d, resourceVersion: "7", creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  nodeName: n1
  restartPolicy: Always
  dnsPolicy: ClusterFirst
  schedulerName: default-scheduler
  securityContext: {}
  enableServiceLinks: true
  terminationGracePeriodSeconds: 30
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    resources: {}
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
    env: [{name: A, valueFrom: {configMapKeyRef: {name: m, key: a}}}]
status: {phase: Pending}
"#);
        let cm: ConfigMap =
            serde_yaml_ng::from_str("metadata: {name: m, namespace: team, resourceVersion: \"3\"}\ndata: {a: one}\n")
                .unwrap();
        let m = manifest_of(&p, (vec![cm], vec![])).unwrap();
        assert_eq!(m.pod.metadata.uid.as_deref(), Some("0b6ba3c4-7f0e-4e2c-9d0a-5f4a7c1b2e3d"));
        assert_eq!(m.pod.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(m.config_maps["m"].data.as_ref().unwrap()["a"], "one");
    }
}
