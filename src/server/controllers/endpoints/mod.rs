//! The endpoints of Services, as kube-controller-manager's endpoint and EndpointSlice
//! controllers keep them: for every Service with a selector, the pods it picks ([`members`])
//! written as a v1 Endpoints object of the Service's name ([`subsets`]) and as
//! EndpointSlices owned by the Service ([`slices`]). Both are kube-runtime controllers over
//! one shared Service informer, triggered too by each pod change (for the Services that
//! select the pod, or did), and read what they write straight from the API, so a write
//! is always planned against what is stored.
//!
//! Endpoints carry no owner reference (as in Kubernetes), so the endpoint controller
//! deletes them itself: when their Service goes, and at start for Endpoints left from
//! Services deleted while no controller ran.

pub mod members;
pub mod slices;
pub mod subsets;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::claim::{self, ApiCallError};
use super::informer::{self, Informer};
use super::pods::CachedPod;
use super::retry::RetryLimiter;

/// kube's component names.
pub const ENDPOINTS_NAME: &str = "endpoint-controller";
pub const SLICES_NAME: &str = "endpointslice-controller";
/// Services synced at once (kube's --concurrent-endpoint-syncs and
/// --concurrent-service-endpoint-syncs).
const WORKERS: u16 = 5;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiCallError),
}

pub struct Context {
    client: kube::Client,
    pods: Store<CachedPod>,
    retries: RetryLimiter<String>,
}

/// How a Service controller hears of work: Services from the shared informer, Services a
/// pod change concerns, and (for Endpoints) Services that were deleted.
struct Wiring {
    services: Store<Service>,
    applied: UnboundedReceiver<Service>,
    triggers: UnboundedReceiver<ObjectRef<Service>>,
    deleted: UnboundedReceiver<ObjectRef<Service>>,
}

fn wire(services: &mut Informer<Service>, pods: &mut Informer<CachedPod>) -> Wiring {
    let (applied_tx, applied) = unbounded_channel();
    let (deleted_tx, deleted) = unbounded_channel();
    services.on_change(move |svc, gone| {
        // The receivers live as long as the controller; a send after it is harmless.
        if gone {
            let _ = deleted_tx.send(ObjectRef::from_obj(svc));
        } else {
            let _ = applied_tx.send(svc.clone());
        }
    });
    let store = services.store();
    let concerned = members::Concerned::default();
    let (trigger_tx, triggers) = unbounded_channel();
    pods.on_change(move |pod, gone| {
        for r in concerned.services(pod, gone, &store) {
            let _ = trigger_tx.send(r);
        }
    });
    Wiring { services: services.store(), applied, triggers, deleted }
}

fn stream<T: Send + 'static>(rx: UnboundedReceiver<T>) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

fn context(client: &kube::Client, pods: &Informer<CachedPod>) -> Arc<Context> {
    Arc::new(Context { client: client.clone(), pods: pods.store(), retries: RetryLimiter::default() })
}

fn error_policy(svc: Arc<Service>, err: &SyncError, ctx: Arc<Context>) -> Action {
    let wait = ctx.retries.failed(&claim::key_of(&*svc));
    tracing::info!(%err, service = %claim::key_of(&*svc), ?wait, "endpoints sync failed; will retry");
    Action::requeue(wait)
}

/// The pods of the Service's namespace from the shared cache, once it has listed.
async fn pods_of(ctx: &Context, svc: &Service) -> Option<Vec<Arc<CachedPod>>> {
    if !informer::ready(&ctx.pods).await {
        return None;
    }
    let ns = svc.namespace();
    Some(ctx.pods.state().into_iter().filter(|p| p.namespace() == ns).collect())
}

/// The endpoint controller: one v1 Endpoints per Service with a selector.
pub fn endpoints_controller(
    client: kube::Client,
    services: &mut Informer<Service>,
    pods: &mut Informer<CachedPod>,
) -> impl Future<Output = ()> + Send + 'static {
    let started = crate::model::time::now_secs();
    let w = wire(services, pods);
    let applied = stream(w.applied).map(Ok::<_, watcher::Error>);
    let controller = Controller::for_stream(applied, w.services.clone())
        // A deleted Endpoints object of a live Service is written again.
        .watches(Api::<Endpoints>::all(client.clone()), watcher::Config::default(), |ep: Endpoints| {
            Some(ObjectRef::<Service>::new(&ep.name_any()).within(&ep.namespace().unwrap_or_default()))
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(WORKERS))
        .reconcile_on(stream(w.triggers));
    let ctx = context(&client, pods);
    let deletions = delete_with_services(client.clone(), w.services.clone(), w.deleted);
    let leftovers = delete_leftovers(client, w.services, started);
    async move {
        tokio::spawn(deletions);
        tokio::spawn(leftovers);
        controller
            .run(sync_endpoints, error_policy, ctx)
            .for_each(|r| {
                if let Err(err) = r {
                    tracing::debug!(%err, "endpoints sync");
                }
                futures_util::future::ready(())
            })
            .await
    }
}

async fn sync_endpoints(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    if !members::is_managed(&svc) {
        return Ok(Action::await_change());
    }
    let Some(in_namespace) = pods_of(&ctx, &svc).await else { return Ok(Action::requeue(Duration::from_secs(1))) };
    let pods: Vec<&CachedPod> = in_namespace.iter().map(|p| &**p).collect();
    let key = claim::key_of(&*svc);
    let name = svc.name_any();
    let all = members::members(&svc, &pods, members::publishes_not_ready(&svc));
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &svc.namespace().unwrap_or_default());
    let existing = api.get_opt(&name).await.map_err(claim::failed("reading the Endpoints of Service", &key))?;
    if let Some(ep) = subsets::desired(&svc, &all, existing.as_ref()) {
        let written = match existing {
            None => api.create(&PostParams::default(), &ep).await,
            Some(_) => api.replace(&name, &PostParams::default(), &ep).await,
        };
        match written {
            Ok(_) => {}
            Err(e) if claim::is_namespace_terminating(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(claim::failed("writing the Endpoints of Service", key)(e).into()),
        }
    }
    ctx.retries.forget(&key);
    Ok(Action::await_change())
}

/// Deletes the Endpoints of each deleted Service, unless a Service of that name is back.
async fn delete_with_services(
    client: kube::Client,
    services: Store<Service>,
    mut deleted: UnboundedReceiver<ObjectRef<Service>>,
) {
    let retries: RetryLimiter<String> = RetryLimiter::default();
    let (again_tx, mut again): (UnboundedSender<ObjectRef<Service>>, _) = unbounded_channel();
    loop {
        let r = tokio::select! {
            Some(r) = deleted.recv() => r,
            Some(r) = again.recv() => r,
            else => return,
        };
        if services.get(&r).is_some() {
            continue;
        }
        let key = format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name);
        let api: Api<Endpoints> = Api::namespaced(client.clone(), r.namespace.as_deref().unwrap_or_default());
        match api.delete(&r.name, &DeleteParams::default()).await {
            Ok(_) => retries.forget(&key),
            Err(e) if claim::is_not_found(&e) => retries.forget(&key),
            Err(err) => {
                let wait = retries.failed(&key);
                tracing::info!(%err, endpoints = %key, ?wait, "deleting the Endpoints of a deleted Service failed; will retry");
                let tx = again_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(r);
                });
            }
        }
    }
}

/// Once the Services are listed: deletes Endpoints that existed before this controller
/// started and whose Service is gone (kube's checkLeftoverEndpoints), sparing leader locks.
async fn delete_leftovers(client: kube::Client, services: Store<Service>, started: i64) {
    if !informer::ready(&services).await {
        return;
    }
    let api: Api<Endpoints> = Api::all(client.clone());
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l,
        Err(err) => return tracing::info!(%err, "listing Endpoints for leftovers failed"),
    };
    for ep in list.items {
        let ns = ep.namespace().unwrap_or_default();
        let before = ep.metadata.creation_timestamp.as_ref().is_some_and(|t| t.0.timestamp() < started);
        let service = ObjectRef::<Service>::new(&ep.name_any()).within(&ns);
        if !before || ep.annotations().contains_key(subsets::LEADER) || services.get(&service).is_some() {
            continue;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: ep.uid(), resource_version: None }),
            ..DeleteParams::default()
        };
        let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
        if let Err(err) = api.delete(&ep.name_any(), &params).await
            && !claim::is_stale(&err)
        {
            tracing::info!(%err, endpoints = %claim::key_of(&ep), "deleting leftover Endpoints failed");
        }
    }
}

/// The EndpointSlice controller: slices of at most 100 endpoints per Service with a selector.
pub fn slices_controller(
    client: kube::Client,
    services: &mut Informer<Service>,
    pods: &mut Informer<CachedPod>,
) -> impl Future<Output = ()> + Send + 'static {
    let w = wire(services, pods);
    let applied = stream(w.applied).map(Ok::<_, watcher::Error>);
    let managed = watcher::Config::default().labels(&format!("{}={}", slices::MANAGED_BY, slices::CONTROLLER));
    let controller = Controller::for_stream(applied, w.services)
        // A slice changed or deleted by someone else is put right.
        .owns(Api::<EndpointSlice>::all(client.clone()), managed)
        .with_config(kube::runtime::controller::Config::default().concurrency(WORKERS))
        .reconcile_on(stream(w.triggers));
    let ctx = context(&client, pods);
    async move {
        controller
            .run(sync_slices, error_policy, ctx)
            .for_each(|r| {
                if let Err(err) = r {
                    tracing::debug!(%err, "endpointslice sync");
                }
                futures_util::future::ready(())
            })
            .await
    }
}

async fn sync_slices(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    if !members::is_managed(&svc) || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(in_namespace) = pods_of(&ctx, &svc).await else { return Ok(Action::requeue(Duration::from_secs(1))) };
    let pods: Vec<&CachedPod> = in_namespace.iter().map(|p| &**p).collect();
    let key = claim::key_of(&*svc);
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &svc.namespace().unwrap_or_default());
    let listed = api
        .list(&ListParams::default().labels(&slices::selector(&svc.name_any())))
        .await
        .map_err(claim::failed("listing the EndpointSlices of Service", &key))?;
    // Slices of an earlier Service of this name are the garbage collector's.
    let uid = svc.uid();
    let mine: Vec<EndpointSlice> = listed
        .items
        .into_iter()
        .filter(|s| s.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
        .collect();
    let owner = claim::controller_ref(&*svc, "v1", "Service");
    let all = members::members(&svc, &pods, true);
    let plan = slices::plan(&svc, &owner, &all, &mine, slices::MAX_PER_SLICE);
    // New endpoints are written before old ones are removed, so readers never see fewer.
    for s in &plan.create {
        match api.create(&PostParams::default(), s).await {
            Ok(_) => {}
            Err(e) if claim::is_namespace_terminating(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(claim::failed("creating an EndpointSlice for Service", &key)(e).into()),
        }
    }
    for s in &plan.update {
        api.replace(&s.name_any(), &PostParams::default(), s)
            .await
            .map_err(claim::failed("updating EndpointSlice", claim::key_of(s)))?;
    }
    for s in &plan.delete {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: s.uid(), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&s.name_any(), &params).await {
            Ok(_) => {}
            Err(e) if claim::is_not_found(&e) => {}
            Err(e) => return Err(claim::failed("deleting EndpointSlice", claim::key_of(s))(e).into()),
        }
    }
    ctx.retries.forget(&key);
    Ok(Action::await_change())
}
