//! The files of the running pods' configMap, secret, downwardAPI and projected volumes kept
//! up with the API, as the kubelet's sync does every --sync-frequency: each pod's
//! ConfigMaps and Secrets are read again, its labels and annotations taken from the watch,
//! its projected tokens renewed when they are due ([`tokens`]), and a volume whose files
//! would change is rewritten atomically ([`volumes::refresh`]). Environment variables are
//! not: a process reads them once, at its start, in Kubernetes too. Nor are files mounted
//! by subPath, which are bound to the version that was there when the container started.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::pods::{Desired, fetch_sources, manifest_of, uid_of};
use super::tokens;
use crate::node::daemon::Daemon;
use crate::node::{pod_state, volumes};

pub struct VolumeSync {
    daemon: Arc<Daemon>,
    client: kube::Client,
    desired: Arc<Mutex<Desired>>,
    tokens: tokens::Cache,
}

/// Whether any of the pod's volumes is made from sources that may change.
fn has_sourced_volumes(pod: &Pod) -> bool {
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(volumes::from_sources)
}

impl VolumeSync {
    pub(super) fn new(
        daemon: Arc<Daemon>,
        client: kube::Client,
        desired: Arc<Mutex<Desired>>,
        tokens: tokens::Cache,
    ) -> VolumeSync {
        VolumeSync { daemon, client, desired, tokens }
    }

    /// A pass every `every`, until the task is dropped.
    pub async fn run(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.pass().await;
        }
    }

    async fn pass(&self) {
        let pods: Vec<Pod> = {
            let d = self.desired.lock().unwrap_or_else(|p| p.into_inner());
            d.pods
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && has_sourced_volumes(p))
                .cloned()
                .collect()
        };
        let live: Vec<&str> = pods.iter().map(uid_of).collect();
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).retain(|uid, _| live.contains(&uid.as_str()));
        for pod in &pods {
            self.refresh(pod).await;
        }
    }

    /// Brings one pod's volumes up to its sources, if the daemon runs it.
    async fn refresh(&self, pod: &Pod) {
        let uid = uid_of(pod).to_string();
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(entry) = self.daemon.get(&ns, &name).filter(|e| e.uid == uid && !e.deleting()) else { return };
        // A source that is gone (or unreadable) keeps the files as they are, as the kubelet
        // keeps them: the container goes on with what it had.
        let sources = match fetch_sources(&self.client, &ns, pod).await {
            Ok(s) => s,
            Err(e) => {
                return tracing::warn!(pod = %name, namespace = %ns, "its volumes are not brought up to date: {e}");
            }
        };
        let mut manifest = match manifest_of(pod, sources) {
            Ok(m) => m,
            Err(e) => {
                return tracing::warn!(pod = %name, namespace = %ns, "its volumes are not brought up to date: {e}");
            }
        };
        let have = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(&uid).cloned().unwrap_or_default();
        let issued = match tokens::fetch(&self.client, &ns, pod, &have).await {
            Ok(t) => t,
            Err(e) => return tracing::warn!(pod = %name, namespace = %ns, "its tokens are not renewed: {e}"),
        };
        manifest.tokens = tokens::strings(&issued);
        if !issued.is_empty() {
            self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(uid.clone(), issued);
        }
        let dir = pod_state::pod_dir(&self.daemon.opts.root, &entry.uid).join("volumes");
        let (changed, errors) = match tokio::task::spawn_blocking(move || volumes::refresh(&dir, &manifest)).await {
            Ok(r) => r,
            Err(e) => return tracing::warn!(pod = %name, namespace = %ns, "bringing its volumes up to date: {e}"),
        };
        if !changed.is_empty() {
            tracing::info!(pod = %name, namespace = %ns, volumes = ?changed, "volumes brought up to their sources");
        }
        for e in errors {
            tracing::warn!(pod = %name, namespace = %ns, "a volume is not brought up to date: {e}");
        }
    }
}
