//! The `kubernetes` Service in namespace default, through which pods reach the API, and
//! its Endpoints and EndpointSlice listing the API servers, as kube-apiserver's
//! controlplane controller and "lease" endpoint reconciler keep them.
//!
//! Every server keeps a record of its own address in the store
//! (`/registry/masterleases/<ip>`, as kube's) with an expiry time, renewed every
//! [`INTERVAL`]; the endpoints are the addresses of the records not expired. So with
//! several servers on one store each adds itself, and one that stops is dropped once its
//! record expires (at once if it stops cleanly: it deletes its record).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::objects::{self, FieldValidation, Part, Store, blocking};
use super::{RegistryError, resources};
use crate::server::store::StoreError;

pub const NAMESPACE: &str = "default";
pub const NAME: &str = "kubernetes";
/// Where the servers' records live (kube's key).
pub const PREFIX: &str = "/registry/masterleases/";
/// How often a server renews its record and reconciles (kube's endpoint reconciler
/// interval).
pub const INTERVAL: Duration = Duration::from_secs(10);
/// How long a record lasts unrenewed (kube's lease TTL).
pub const TTL: Duration = Duration::from_secs(15);

/// This server as the `kubernetes` Service shows it.
#[derive(Clone, Debug)]
pub struct Advertised {
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl Advertised {
    /// The address to advertise: `--advertise-address` if given, else the address the
    /// server listens on, else (listening on every address) the one the host reaches other
    /// hosts from, as kube-apiserver picks its default route's; never 0.0.0.0.
    pub fn choose(advertise: Option<Ipv4Addr>, listen: IpAddr, port: u16) -> Advertised {
        let ip = advertise
            .or(match listen {
                IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
                _ => None,
            })
            .or_else(default_route_address)
            .unwrap_or(Ipv4Addr::LOCALHOST);
        Advertised { ip, port }
    }
}

/// The local address of the default route: a UDP socket "connected" to an outside address
/// (no packet is sent) has it as its own.
fn default_route_address() -> Option<Ipv4Addr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
        _ => None,
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn record_key(ip: Ipv4Addr) -> String {
    format!("{PREFIX}{ip}")
}

/// The addresses of the records that have not expired at `now` (ms), sorted, and the keys
/// (with revisions) of those that have.
pub fn live(records: &[(String, i64, Vec<u8>)], now: u64) -> (Vec<Ipv4Addr>, Vec<(String, i64)>) {
    let (mut ips, mut expired) = (Vec::new(), Vec::new());
    for (key, rev, value) in records {
        let v: Value = serde_json::from_slice(value).unwrap_or(Value::Null);
        let ip = v["ip"].as_str().and_then(|s| s.parse::<Ipv4Addr>().ok());
        match (ip, v["expires"].as_u64()) {
            (Some(ip), Some(exp)) if exp > now => ips.push(ip),
            _ => expired.push((key.clone(), *rev)),
        }
    }
    ips.sort();
    ips.dedup();
    (ips, expired)
}

/// The Service as kube-apiserver writes it.
pub fn service(cluster_ip: Ipv4Addr, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip.to_string(),
            "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
        },
    })
}

/// The Endpoints as kube's reconciler writes them (not mirrored into a second slice: it
/// writes the slice itself).
pub fn endpoints(ips: &[Ipv4Addr], port: u16) -> Value {
    let subsets = if ips.is_empty() {
        json!([])
    } else {
        json!([{
            "addresses": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }])
    };
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets,
    })
}

/// The EndpointSlice as kube's EndpointsAdapter writes it beside the Endpoints.
pub fn endpoint_slice(ips: &[Ipv4Addr], port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": "IPv4",
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })
}

fn find(group: &str, plural: &str) -> Result<&'static resources::Resource, RegistryError> {
    resources::find(group, "v1", plural).ok_or_else(|| RegistryError::internal(format!("{plural} are not served")))
}

/// Renews this server's record (`expires` in ms since the epoch).
async fn renew(store: &Store, me: &Advertised, expires: u64) -> Result<(), RegistryError> {
    let (store, key) = (store.clone(), record_key(me.ip));
    let value = json!({"ip": me.ip.to_string(), "port": me.port, "expires": expires}).to_string().into_bytes();
    blocking(move || {
        let err = |e| RegistryError::from_store(e, "masterleases", "");
        match store.get(&key).map_err(err)? {
            Some(kv) => match store.update(&key, &value, Some(kv.mod_revision)) {
                Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
                Err(e) => Err(err(e)),
            },
            None => match store.create(&key, &value) {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(err(e)),
            },
        }
    })
    .await
}

/// The live servers' addresses; expired records are deleted on the way.
async fn servers(store: &Store) -> Result<Vec<Ipv4Addr>, RegistryError> {
    let store = store.clone();
    blocking(move || {
        let err = |e| RegistryError::from_store(e, "masterleases", "");
        let list = store.list(PREFIX, None, 0, None).map_err(err)?;
        let records: Vec<_> = list.items.into_iter().map(|kv| (kv.key, kv.mod_revision, kv.value)).collect();
        let (ips, expired) = live(&records, now_ms());
        for (key, rev) in expired {
            let _ = store.delete(&key, Some(rev));
        }
        Ok(ips)
    })
    .await
}

/// Creates `want` if absent, or replaces what `differs` says is not as wanted.
async fn ensure(
    store: &Store,
    r: &'static resources::Resource,
    want: &Value,
    differs: impl Fn(&Value) -> bool,
) -> Result<(), RegistryError> {
    let bytes = want.to_string().into_bytes();
    let checks = (FieldValidation::Strict, None, false);
    match objects::get(store.clone(), r, Some(NAMESPACE.into()), NAME.into()).await {
        Ok(stored) if !differs(&stored) => Ok(()),
        Ok(_) => objects::update(store.clone(), r, Some(NAMESPACE.into()), NAME.into(), Part::Main, &bytes, checks)
            .await
            .map(|_| ()),
        Err(RegistryError::NotFound { .. }) => {
            match objects::create(store.clone(), r, Some(NAMESPACE.into()), &bytes, checks).await {
                Ok(_) | Err(RegistryError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// One pass: this server's record renewed, the Service, Endpoints and EndpointSlice as
/// they should be.
pub async fn reconcile(store: &Store, me: &Advertised, cluster_ip: Ipv4Addr) -> Result<(), RegistryError> {
    renew(store, me, now_ms() + TTL.as_millis() as u64).await?;
    let ips = servers(store).await?;
    let svc = service(cluster_ip, me.port);
    ensure(store, find("", "services")?, &svc, |s| {
        s["spec"]["ports"] != svc["spec"]["ports"] || s["spec"]["type"] != "ClusterIP"
    })
    .await?;
    let ep = endpoints(&ips, me.port);
    ensure(store, find("", "endpoints")?, &ep, |s| {
        s["subsets"] != ep["subsets"] && !(s["subsets"].is_null() && ep["subsets"] == json!([]))
    })
    .await?;
    let slice = endpoint_slice(&ips, me.port);
    ensure(store, find("discovery.k8s.io", "endpointslices")?, &slice, |s| {
        s["endpoints"] != slice["endpoints"] || s["ports"] != slice["ports"]
    })
    .await
}

/// Keeps the `kubernetes` Service for ever (every [`INTERVAL`]: a deleted one comes back).
pub async fn run(store: Store, me: Advertised, cluster_ip: Ipv4Addr) {
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        if let Err(err) = reconcile(&store, &me, cluster_ip).await {
            tracing::warn!(%err, "reconciling the kubernetes Service");
        }
    }
}

/// At a clean stop: this server's record deleted and the endpoints written without it, so
/// that clients stop using it at once (as kube-apiserver's RemoveEndpoints).
pub async fn leave(store: &Store, me: &Advertised) {
    let (s, key) = (store.clone(), record_key(me.ip));
    let _ = blocking(move || s.delete(&key, None).map_err(|e| RegistryError::from_store(e, "masterleases", ""))).await;
    let Ok(ips) = servers(store).await else { return };
    let Ok(r) = find("", "endpoints") else { return };
    let ep = endpoints(&ips, me.port);
    let _ = ensure(store, r, &ep, |s| s["subsets"] != ep["subsets"]).await;
    if let Ok(r) = find("discovery.k8s.io", "endpointslices") {
        let slice = endpoint_slice(&ips, me.port);
        let _ = ensure(store, r, &slice, |s| s["endpoints"] != slice["endpoints"]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ip: &str, expires: u64) -> (String, i64, Vec<u8>) {
        (format!("{PREFIX}{ip}"), 1, json!({"ip": ip, "port": 6443, "expires": expires}).to_string().into_bytes())
    }

    #[test]
    fn expired_records_are_left_out_and_the_rest_sorted() {
        let records = vec![
            rec("10.0.0.9", 2000),
            rec("10.0.0.10", 2000),
            rec("10.0.0.1", 500),
            ("x".into(), 2, b"junk".to_vec()),
        ];
        let (ips, expired) = live(&records, 1000);
        assert_eq!(ips, vec![Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 10)]);
        assert_eq!(expired, vec![(format!("{PREFIX}10.0.0.1"), 1), ("x".into(), 2)]);
    }

    #[test]
    fn the_advertised_address_is_never_unspecified() {
        let a = Advertised::choose(None, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 6443);
        assert!(!a.ip.is_unspecified());
        let a = Advertised::choose(None, "10.1.2.3".parse().unwrap(), 6443);
        assert_eq!(a.ip, Ipv4Addr::new(10, 1, 2, 3));
        let a = Advertised::choose(Some(Ipv4Addr::new(10, 9, 9, 9)), "10.1.2.3".parse().unwrap(), 6443);
        assert_eq!(a.ip, Ipv4Addr::new(10, 9, 9, 9));
    }

    #[test]
    fn the_endpoints_and_slice_list_the_servers_on_the_servers_port() {
        let ips = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
        let ep = endpoints(&ips, 6443);
        assert_eq!(ep["subsets"][0]["addresses"], json!([{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]));
        assert_eq!(ep["subsets"][0]["ports"], json!([{"name": "https", "port": 6443, "protocol": "TCP"}]));
        let slice = endpoint_slice(&ips, 6443);
        assert_eq!(slice["endpoints"][1]["addresses"], json!(["10.0.0.2"]));
        assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], NAME);
        assert_eq!(endpoints(&[], 6443)["subsets"], json!([]));
    }
}
