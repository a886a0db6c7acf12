//! What kube-controller-manager's `serviceaccount` and `root-ca-cert-publisher`
//! controllers keep in every namespace that is not being deleted: the ServiceAccount
//! `default` (pods run as it when they name none) and the ConfigMap `kube-root-ca.crt`
//! with the cluster CA in `ca.crt` (what a pod's projected token volume shows, so that
//! in-cluster clients can check the API server). Either is written again when deleted,
//! and the ConfigMap when its data changes.
//!
//! Namespaces, and those two objects by name, are watched; each event queues its
//! namespace, and one worker looks at the namespace's pair through the API. The CA's half
//! runs only when `--controllers` has `root-ca-cert-publisher`; the ServiceAccount's always
//! (see [`super::start_clients`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::ResourceExt as _;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::mpsc;

use crate::server::registry::service_account::{DEFAULT, ROOT_CA};

/// The annotation kube-controller-manager puts on `kube-root-ca.crt`.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";
/// A namespace whose write failed is looked at again after this.
const RETRY: Duration = Duration::from_secs(1);

/// Runs the ServiceAccount controller, and with `ca_pem` the root CA publisher, for as long
/// as the runtime runs.
pub async fn run(client: kube::Client, ca_pem: Option<String>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    // Namespaces already queued: a burst of events for one is one look.
    let queued: Arc<Mutex<HashSet<String>>> = Arc::default();
    let enqueue = {
        let queued = queued.clone();
        move |tx: &mpsc::UnboundedSender<String>, ns: String| {
            if queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(ns.clone()) {
                let _ = tx.send(ns);
            }
        }
    };
    let (t, e) = (tx.clone(), enqueue.clone());
    tokio::spawn(follow(Api::<Namespace>::all(client.clone()), None, move |ns: &Namespace, deleted| {
        if !deleted {
            e(&t, ns.name_any());
        }
    }));
    let (t, e) = (tx.clone(), enqueue.clone());
    let by_name = format!("metadata.name={DEFAULT}");
    tokio::spawn(follow(Api::<ServiceAccount>::all(client.clone()), Some(by_name), move |sa: &ServiceAccount, _| {
        e(&t, sa.namespace().unwrap_or_default());
    }));
    if ca_pem.is_some() {
        let (t, e) = (tx.clone(), enqueue.clone());
        let by_name = format!("metadata.name={ROOT_CA}");
        tokio::spawn(follow(Api::<ConfigMap>::all(client.clone()), Some(by_name), move |cm: &ConfigMap, _| {
            e(&t, cm.namespace().unwrap_or_default());
        }));
    }
    while let Some(ns) = rx.recv().await {
        queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&ns);
        if let Err(err) = sync(&client, &ns, ca_pem.as_deref()).await {
            tracing::debug!(%err, namespace = %ns, "service account or root CA not written; again shortly");
            let (t, e) = (tx.clone(), enqueue.clone());
            tokio::spawn(async move {
                tokio::time::sleep(RETRY).await;
                e(&t, ns);
            });
        }
    }
}

/// Follows `api` (only the objects of `fields`, if given), calling `on` with each change.
async fn follow<K>(api: Api<K>, fields: Option<String>, on: impl Fn(&K, bool))
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut config = watcher::Config::default();
    if let Some(f) = &fields {
        config = config.fields(f);
    }
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(e) = events.next().await {
        match e {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => on(&o, false),
            Ok(watcher::Event::Delete(o)) => on(&o, true),
            Ok(_) => {}
            Err(err) => tracing::debug!(%err, "watch failed; retrying"),
        }
    }
}

fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Writes what namespace `ns` lacks of the pair (of the account alone without `ca_pem`).
async fn sync(client: &kube::Client, ns: &str, ca_pem: Option<&str>) -> Result<(), kube::Error> {
    let Some(namespace) = Api::<Namespace>::all(client.clone()).get_opt(ns).await? else { return Ok(()) };
    if terminating(&namespace) {
        return Ok(());
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    if accounts.get_opt(DEFAULT).await?.is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta { name: Some(DEFAULT.into()), ..ObjectMeta::default() },
            ..ServiceAccount::default()
        };
        ignore_races(accounts.create(&PostParams::default(), &sa).await.map(drop))?;
    }
    let Some(ca_pem) = ca_pem else { return Ok(()) };
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let data = BTreeMap::from([("ca.crt".to_string(), ca_pem.to_string())]);
    let annotations = BTreeMap::from([("kubernetes.io/description".to_string(), DESCRIPTION.to_string())]);
    match maps.get_opt(ROOT_CA).await? {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA.into()),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            ignore_races(maps.create(&PostParams::default(), &cm).await.map(drop))?;
        }
        Some(mut cm) if cm.data.as_ref() != Some(&data) || cm.binary_data.is_some() => {
            cm.data = Some(data);
            cm.binary_data = None;
            cm.annotations_mut().extend(annotations);
            ignore_races(maps.replace(ROOT_CA, &PostParams::default(), &cm).await.map(drop))?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// Someone else wrote it first (409), or the namespace began its deletion meanwhile (403):
/// nothing to do.
fn ignore_races(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(e)) if matches!(e.code, 403 | 409) && e.reason != "Conflict" => Ok(()),
        other => other,
    }
}
