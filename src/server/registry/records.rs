//! Records of something a Service was given (a cluster IP, a node port, a load-balancer
//! address): one store key per taken value, written with a create that fails if the key
//! exists, naming the Service that holds it (`spec.parentRef`, as kube's IPAddress).
//! Several servers on one store never hand one value out twice: the store decides.

use serde_json::Value;

use super::error::RegistryError;
use crate::server::store::{Backend, StoreError};

/// The Service (namespace, name) a record names.
pub fn holder(value: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(value).ok()?;
    let p = &v["spec"]["parentRef"];
    Some((p["namespace"].as_str()?.to_string(), p["name"].as_str()?.to_string()))
}

/// Does the record say Service `ns/name` holds it?
pub fn held_by(value: &[u8], ns: &str, name: &str) -> bool {
    holder(value).is_some_and(|(n, s)| n == ns && s == name)
}

pub fn store_error(e: StoreError, resource: &str) -> RegistryError {
    RegistryError::from_store(e, resource, "")
}

/// Writes the record at `key` if there is none. Answers whether it was written (a record
/// already there is someone's, even if it names this Service: a leftover the repair loop
/// frees, never shared by two writers).
pub fn take(store: &dyn Backend, key: &str, value: &[u8]) -> Result<bool, StoreError> {
    match store.create(key, value) {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the record at `key` if Service `ns/name` holds it (one another Service holds
/// is left alone; a lost race with another writer leaves it to the repair loop).
pub fn release(store: &dyn Backend, key: &str, ns: &str, name: &str) -> Result<(), StoreError> {
    let Some(kv) = store.get(key)? else { return Ok(()) };
    if held_by(&kv.value, ns, name) {
        match store.delete(key, Some(kv.mod_revision)) {
            Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One repair pass over the records under `prefix`: a record whose key is not in `holds`
/// with the same holder is freed, but only if it was already such an orphan, unchanged, in
/// the previous pass (`suspects`): a Service being created takes its records before it is
/// stored, and must not lose them meanwhile. A held key without a record gets one again
/// (`record` makes it from the key's holder). Answers (freed, re-recorded).
/// Which Service holds each record key, from the stored Services: `keys` gives the keys
/// a Service's spec holds. What [`repair`] checks the records against.
pub fn holders<K: IntoIterator<Item = String>>(
    services: &[Value],
    keys: impl Fn(&Value) -> K,
) -> std::collections::HashMap<String, (String, String)> {
    let mut holds = std::collections::HashMap::new();
    for svc in services {
        let ns = svc["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = svc["metadata"]["name"].as_str().unwrap_or_default();
        for k in keys(&svc["spec"]) {
            holds.insert(k, (ns.to_string(), name.to_string()));
        }
    }
    holds
}

pub fn repair(
    store: &dyn Backend,
    prefix: &str,
    holds: &std::collections::HashMap<String, (String, String)>,
    record: impl Fn(&str, &str, &str) -> Vec<u8>,
    suspects: &mut std::collections::HashSet<(String, i64)>,
) -> Result<(usize, usize), StoreError> {
    let records = store.list(prefix, None, 0, None)?;
    let (mut freed, mut recorded) = (0, 0);
    let mut next = std::collections::HashSet::new();
    for kv in &records.items {
        let ok = match (holder(&kv.value), holds.get(&kv.key)) {
            (Some(h), Some(want)) => &h == want,
            _ => false,
        };
        if ok {
            continue;
        }
        let id = (kv.key.clone(), kv.mod_revision);
        if !suspects.contains(&id) {
            next.insert(id);
            continue;
        }
        match store.delete(&kv.key, Some(kv.mod_revision)) {
            Ok(_) => freed += 1,
            Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    *suspects = next;
    let present: std::collections::HashSet<&String> = records.items.iter().map(|kv| &kv.key).collect();
    for (k, (ns, name)) in holds {
        if !present.contains(k) {
            match store.create(k, &record(k, ns, name)) {
                Ok(_) => recorded += 1,
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok((freed, recorded))
}
