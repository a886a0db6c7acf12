//! kube-apiserver's cluster IP repair loop: a record of a taken address whose Service is
//! gone (a server that died between the two writes) is freed, and an address a Service
//! holds without a record (a record lost, a store restored) is recorded again, so that
//! no address is lost for ever nor handed out twice. The same for node ports (kube's
//! node port repair loop).

use std::collections::HashSet;
use std::time::Duration;

use crate::server::registry::objects::{Store, blocking, decode};
use crate::server::registry::{clusterip, nodeport};

/// How often the loop runs (kube's repair runs every 3 minutes; an orphan is freed on
/// the second pass that finds it).
const PERIOD: Duration = Duration::from_secs(30);

pub async fn run(store: Store) {
    let mut suspects = HashSet::new();
    let mut port_suspects = HashSet::new();
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tick.tick().await;
        let store = store.clone();
        let mut s = std::mem::take(&mut suspects);
        let mut ps = std::mem::take(&mut port_suspects);
        let pass = blocking(move || {
            let list = store
                .list("/registry/core/services/", None, 0, None)
                .map_err(|e| crate::server::registry::RegistryError::from_store(e, "services", ""))?;
            let services: Vec<_> = list.items.iter().filter_map(|kv| decode(kv).ok()).collect();
            let (ip_freed, ip_recorded) = clusterip::repair(&*store, &services, &mut s)?;
            let (port_freed, port_recorded) = nodeport::repair(&*store, &services, &mut ps)?;
            Ok::<_, crate::server::registry::RegistryError>((
                (ip_freed + port_freed, ip_recorded + port_recorded),
                s,
                ps,
            ))
        })
        .await;
        match pass {
            Ok(((freed, recorded), s, ps)) => {
                suspects = s;
                port_suspects = ps;
                if freed + recorded > 0 {
                    tracing::info!(freed, recorded, "cluster IP and node port repair");
                }
            }
            Err(err) => tracing::warn!(%err, "cluster IP and node port repair"),
        }
    }
}
