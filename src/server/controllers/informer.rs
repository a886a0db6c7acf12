//! A shared informer: one list+watch of a kind through the API (kube-runtime's watcher,
//! which relists when its watch expires and backs off when the server is away) keeping a
//! typed cache, and telling the controllers that registered interest about every change,
//! deletions included. Several controllers read one cache instead of each watching the
//! same pods.

use std::fmt::Debug;
use std::sync::Arc;

use futures_util::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

/// Waits until `store` has its first list; false if its informer is gone.
///
/// kube-runtime's [`Store::wait_until_ready`] wakes only the last of several tasks waiting
/// at once (one oneshot receiver behind it keeps one waker), so each wait here is short and
/// asks again.
pub async fn ready<K: Resource<DynamicType = ()> + Clone + 'static>(store: &Store<K>) -> bool {
    loop {
        match tokio::time::timeout(std::time::Duration::from_millis(100), store.wait_until_ready()).await {
            Ok(r) => return r.is_ok(),
            Err(_elapsed) => continue,
        }
    }
}

/// Called with each object that changed, and whether it was deleted.
pub type Handler<K> = Box<dyn Fn(&K, bool) + Send + Sync>;

pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    handlers: Vec<Handler<K>>,
}

impl<K> Default for Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn default() -> Self {
        let (store, writer) = reflector::store();
        Informer { store, writer, handlers: Vec::new() }
    }
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// The cache; empty until the first list is in (see [`Store::wait_until_ready`]).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    pub fn on_change(&mut self, handler: impl Fn(&K, bool) + Send + Sync + 'static) {
        self.handlers.push(Box::new(handler));
    }

    /// Lists and watches `api` for as long as the runtime runs.
    pub async fn run(self, api: Api<K>) {
        let handlers = Arc::new(self.handlers);
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            // Nobody here reads who wrote which field; the cache is smaller without it. What
            // else a cache keeps is its type's choice (the pods': CachedPod).
            .modify(|o| o.meta_mut().managed_fields = None)
            .reflect(self.writer);
        events
            .for_each(|e| {
                match e {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        handlers.iter().for_each(|h| h(&o, false))
                    }
                    Ok(watcher::Event::Delete(o)) => handlers.iter().for_each(|h| h(&o, true)),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                    // The watcher retries with backoff by itself.
                    Err(err) => tracing::debug!(%err, kind = %K::kind(&()), "informer watch failed; retrying"),
                }
                futures_util::future::ready(())
            })
            .await;
    }
}
