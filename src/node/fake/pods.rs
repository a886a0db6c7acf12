//! The pods of the fake nodes: each bound one is reported Running and Ready with an
//! address from its node's range, and each being deleted is deleted for good (what a
//! kubelet does once its containers have stopped).
//!
//! Writes run concurrently, at most one per pod: an event for a pod whose write is in
//! flight is kept (only the newest) and handled when that write ends.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Fleet, IN_FLIGHT};

/// What the fake kubelet reads of a pod (see [`crate::model::pod_view`]): every watch event
/// and every answer to its writes is decoded into this, and decoding whole k8s-openapi
/// Pods was the largest part of the fake nodes' CPU.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakePod {
    #[serde(default, deserialize_with = "trimmed_meta")]
    pub metadata: ObjectMeta,
    pub spec: Option<FakeSpec>,
    pub status: Option<FakeStatus>,
}

crate::model::pod_view::pod_view!(FakePod);

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeSpec {
    pub node_name: Option<String>,
    #[serde(default)]
    pub containers: Vec<FakeContainer>,
    #[serde(default)]
    pub init_containers: Vec<FakeContainer>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct FakeContainer {
    pub name: String,
    pub image: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    /// As written (RFC 3339): only ever written back.
    pub start_time: Option<String>,
}

/// The metadata the fake kubelet and kube-rs' watcher read (the resourceVersion), without
/// the rest (managed fields above all).
fn trimmed_meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        deletion_timestamp: Option<Time>,
    }
    let m = Meta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        deletion_timestamp: m.deletion_timestamp,
        ..ObjectMeta::default()
    })
}

/// What the fake kubelet does for one pod.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Report it Running (its status as written).
    Run,
    /// Delete it now: its deletion was asked for and nothing runs.
    Delete,
    Nothing,
}

/// What a bound pod on a fake node needs.
pub fn action(pod: &FakePod) -> Action {
    if pod.metadata.deletion_timestamp.is_some() {
        return Action::Delete;
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    let has_ip = status.and_then(|s| s.pod_ip.as_deref()).is_some();
    if phase == Some("Running") && has_ip { Action::Nothing } else { Action::Run }
}

/// The pod addresses each node has given out, by pod uid.
#[derive(Default)]
pub struct Addresses {
    used: HashMap<u32, BTreeSet<u8>>,
    by_pod: HashMap<String, (u32, Ipv4Addr)>,
}

impl Addresses {
    /// Node i's range: 100.64.0.0 + 256·i, a /24.
    fn base(node: u32) -> u32 {
        u32::from(Ipv4Addr::new(100, 64, 0, 0)) + (node << 8)
    }

    /// The pod's address: the one it has (from an earlier report), else the lowest free.
    pub fn assign(&mut self, node: u32, uid: &str, current: Option<&str>) -> Option<Ipv4Addr> {
        if let Some((_, ip)) = self.by_pod.get(uid) {
            return Some(*ip);
        }
        let used = self.used.entry(node).or_default();
        let kept = current.and_then(|c| c.parse::<Ipv4Addr>().ok()).and_then(|ip| {
            let host = u32::from(ip).checked_sub(Self::base(node)).filter(|h| (1..255).contains(h))?;
            Some(host as u8).filter(|h| !used.contains(h))
        });
        let host = kept.or_else(|| (1..=254u8).find(|h| !used.contains(h)))?;
        used.insert(host);
        let ip = Ipv4Addr::from(Self::base(node) + u32::from(host));
        self.by_pod.insert(uid.to_string(), (node, ip));
        Some(ip)
    }

    pub fn release(&mut self, uid: &str) {
        if let Some((node, ip)) = self.by_pod.remove(uid)
            && let Some(used) = self.used.get_mut(&node)
        {
            used.remove(&((u32::from(ip) - Self::base(node)) as u8));
        }
    }
}

/// The status a fake kubelet reports for a running pod, as the kubelet's.
pub fn running_status(pod: &FakePod, host_ip: Ipv4Addr, pod_ip: Ipv4Addr, now: &Time) -> Value {
    let spec = pod.spec.as_ref();
    let start = match pod.status.as_ref().and_then(|s| s.start_time.clone()) {
        Some(kept) => json!(kept),
        None => json!(now),
    };
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now});
    let containers: Vec<Value> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("fake://{}", c.name), "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": start}},
            })
        })
        .collect();
    let init: Vec<Value> = spec
        .map(|s| s.init_containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("fake://{}", c.name), "ready": true, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": start, "finishedAt": start}},
            })
        })
        .collect();
    json!({"status": {
        "phase": "Running",
        "conditions": [
            condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"),
            condition("ContainersReady"), condition("PodScheduled"),
        ],
        "hostIP": host_ip.to_string(), "hostIPs": [{"ip": host_ip.to_string()}],
        "podIP": pod_ip.to_string(), "podIPs": [{"ip": pod_ip.to_string()}],
        "startTime": start,
        "containerStatuses": containers,
        "initContainerStatuses": init,
    }})
}

/// The writes in flight, by pod uid, with the newest event that came meanwhile.
#[derive(Default)]
struct InFlight(HashMap<String, Option<FakePod>>);

struct Shared {
    fleet: Arc<Fleet>,
    addresses: Mutex<Addresses>,
    in_flight: Mutex<InFlight>,
    permits: tokio::sync::Semaphore,
    client: kube::Client,
}

/// Follows the bound pods until the future is dropped.
pub async fn run(client: kube::Client, fleet: Arc<Fleet>) {
    let shared = Arc::new(Shared {
        fleet,
        addresses: Mutex::new(Addresses::default()),
        in_flight: Mutex::new(InFlight::default()),
        permits: tokio::sync::Semaphore::new(IN_FLIGHT),
        client: client.clone(),
    });
    let mut events = std::pin::pin!(super::bound_pods(client));
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => handle(&shared, pod),
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    lock(&shared.addresses).release(uid);
                }
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(err) => {
                tracing::warn!(%err, "watching the fake nodes' pods");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the write a pod needs, or keeps the pod for when its write in flight ends.
fn handle(shared: &Arc<Shared>, pod: FakePod) {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).and_then(|n| shared.fleet.index(n));
    let (Some(node), Some(uid)) = (node, pod.metadata.uid.clone()) else { return };
    if action(&pod) == Action::Nothing {
        return;
    }
    {
        let mut flying = lock(&shared.in_flight);
        if let Some(newest) = flying.0.get_mut(&uid) {
            *newest = Some(pod);
            return;
        }
        flying.0.insert(uid.clone(), None);
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut pod = pod;
        loop {
            {
                let _permit = shared.permits.acquire().await;
                if let Err(err) = write(&shared, node, &uid, &pod).await {
                    tracing::debug!(pod = ?pod.metadata.name, %err, "a fake node's pod write failed");
                }
            }
            let next = {
                let mut flying = lock(&shared.in_flight);
                match flying.0.get_mut(&uid).and_then(Option::take) {
                    Some(p) if action(&p) != Action::Nothing => Some(p),
                    _ => {
                        flying.0.remove(&uid);
                        None
                    }
                }
            };
            match next {
                Some(p) => pod = p,
                None => return,
            }
        }
    });
}

async fn write(shared: &Shared, node: u32, uid: &str, pod: &FakePod) -> Result<(), kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<FakePod> = Api::namespaced(shared.client.clone(), namespace);
    match action(pod) {
        Action::Nothing => Ok(()),
        Action::Delete => {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
                ..DeleteParams::default()
            };
            match api.delete(name, &params).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(r)) if r.code == 404 || r.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Action::Run => {
            let current = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
            let Some(ip) = lock(&shared.addresses).assign(node, uid, current) else {
                tracing::warn!(pod = %name, "a fake node's 254 pod addresses are all taken");
                return Ok(());
            };
            let now = Time(chrono::DateTime::<chrono::Utc>::from(SystemTime::now()));
            let status = running_status(pod, Fleet::node_ip(node), ip, &now);
            match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(r)) if r.code == 404 => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_per_node_unique_kept_and_freed() {
        let mut a = Addresses::default();
        assert_eq!(a.assign(0, "p1", None), Some(Ipv4Addr::new(100, 64, 0, 1)));
        assert_eq!(a.assign(0, "p2", None), Some(Ipv4Addr::new(100, 64, 0, 2)));
        assert_eq!(a.assign(0, "p1", None), Some(Ipv4Addr::new(100, 64, 0, 1)), "asked again: the same");
        assert_eq!(a.assign(3, "p3", None), Some(Ipv4Addr::new(100, 64, 3, 1)));
        // After a restart a pod keeps the address it was reported with.
        assert_eq!(a.assign(0, "p4", Some("100.64.0.9")), Some(Ipv4Addr::new(100, 64, 0, 9)));
        a.release("p1");
        assert_eq!(a.assign(0, "p5", None), Some(Ipv4Addr::new(100, 64, 0, 1)));
        for i in 0..251 {
            a.assign(1, &format!("x{i}"), None).unwrap();
        }
        assert!(a.assign(1, "y1", None).is_some() && a.assign(1, "y2", None).is_some());
        assert!(a.assign(1, "y3", None).is_some());
        assert_eq!(a.assign(1, "full", None), None);
    }

    #[test]
    fn running_unless_deleting_or_already_reported() {
        let mut p: FakePod = serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "n-0"}})).unwrap();
        assert_eq!(action(&p), Action::Run);
        let status =
            running_status(&p, Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(100, 64, 0, 1), &Time(chrono::Utc::now()));
        assert_eq!(status["status"]["containerStatuses"][0]["ready"], true);
        p.status = serde_json::from_value(status["status"].clone()).unwrap();
        assert_eq!(action(&p), Action::Nothing);
        p.metadata.deletion_timestamp = Some(Time(chrono::Utc::now()));
        assert_eq!(action(&p), Action::Delete);
    }

    /// A whole pod, as the API sends it, decodes into what the fake kubelet reads; the rest
    /// is skipped, and a start time already reported is written back as it was.
    #[test]
    fn a_whole_pod_decodes_into_what_the_fake_kubelet_reads() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "42",
                         "labels": {"app": "web"}, "deletionTimestamp": "2026-12-06T10:00:00Z",
                         "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                                            "fieldsV1": {"f:spec": {}}}]},
            "spec": {"nodeName": "n-3", "volumes": [{"name": "v", "emptyDir": {}}],
                     "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
                     "containers": [{"name": "c", "image": "busybox", "env": [{"name": "A", "value": "1"}]}]},
            "status": {"phase": "Pending", "podIP": "100.64.3.7", "startTime": "2026-12-06T09:00:00Z",
                       "conditions": [{"type": "PodScheduled", "status": "True"}]},
        });
        let p: FakePod = serde_json::from_value(pod).unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("p"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(p.metadata.uid.as_deref(), Some("u"));
        assert_eq!(p.metadata.resource_version.as_deref(), Some("42"));
        assert!(p.metadata.deletion_timestamp.is_some());
        assert!(p.metadata.labels.is_none() && p.metadata.managed_fields.is_none(), "the rest is not kept");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n-3"));
        assert_eq!((spec.containers[0].name.as_str(), spec.containers[0].image.as_deref()), ("c", Some("busybox")));
        assert_eq!(spec.init_containers[0].name, "init");
        assert_eq!(p.status.as_ref().unwrap().pod_ip.as_deref(), Some("100.64.3.7"));
        let status =
            running_status(&p, Ipv4Addr::new(198, 18, 0, 4), Ipv4Addr::new(100, 64, 3, 7), &Time(chrono::Utc::now()));
        assert_eq!(status["status"]["startTime"], "2026-12-06T09:00:00Z");
        assert_eq!(status["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
    }
}
