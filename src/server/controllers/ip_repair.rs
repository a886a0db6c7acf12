//! kube-apiserver's cluster IP repair loop: a record of a taken address whose Service is
//! gone (a server that died between the two writes) is freed, and an address a Service
//! holds without a record (a record lost, a store restored) is recorded again, so that
//! no address is lost for ever nor handed out twice.

use std::collections::HashSet;
use std::time::Duration;

use crate::server::registry::clusterip;
use crate::server::registry::objects::{Store, blocking, decode};

/// How often the loop runs (kube's repair runs every 3 minutes; an orphan is freed on
/// the second pass that finds it).
const PERIOD: Duration = Duration::from_secs(30);

pub async fn run(store: Store) {
    let mut suspects = HashSet::new();
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tick.tick().await;
        let store = store.clone();
        let mut s = std::mem::take(&mut suspects);
        let pass = blocking(move || {
            let list = store
                .list("/registry/core/services/", None, 0, None)
                .map_err(|e| crate::server::registry::RegistryError::from_store(e, "services", ""))?;
            let services: Vec<_> = list.items.iter().filter_map(|kv| decode(kv).ok()).collect();
            let done = clusterip::repair(&*store, &services, &mut s)?;
            Ok::<_, crate::server::registry::RegistryError>((done, s))
        })
        .await;
        match pass {
            Ok(((freed, recorded), s)) => {
                suspects = s;
                if freed + recorded > 0 {
                    tracing::info!(freed, recorded, "cluster IP repair");
                }
            }
            Err(err) => tracing::warn!(%err, "cluster IP repair"),
        }
    }
}
