//! kube-apiserver's ServiceAccount admission for a new pod: the pod runs as a
//! ServiceAccount of its namespace (`default` when it names none), which must exist, and,
//! unless the pod or the account turns `automountServiceAccountToken` off, gets the
//! projected volume `kube-api-access-XXXXX` (a token bound to the pod, the cluster CA from
//! the ConfigMap `kube-root-ca.crt`, and the namespace) mounted read-only at
//! [`MOUNT_PATH`] in every container, as in-cluster clients (client-go, kube-rs, kubectl)
//! expect to find them. Mirror pods are left alone, as kube leaves them.

use std::time::Duration;

use serde_json::{Value, json};

use super::error::RegistryError;
use super::objects::decode;
use crate::server::store::Backend;

/// Where in-cluster clients look for the token, `ca.crt` and `namespace`.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The ServiceAccount every namespace gets, and a pod runs as when it names none.
pub const DEFAULT: &str = "default";
/// The ConfigMap every namespace gets with the cluster CA in `ca.crt`.
pub const ROOT_CA: &str = "kube-root-ca.crt";
const VOLUME_PREFIX: &str = "kube-api-access-";
/// kube's: an hour and 7 s, which the token request makes a year (see api::tokens).
const TOKEN_SECONDS: i64 = 3607;
/// How often, and how long apart, a missing `default` account is looked for again: the
/// namespace may be new and its account not written yet (kube's admission waits so too).
const DEFAULT_TRIES: u32 = 10;
const DEFAULT_WAIT: Duration = Duration::from_millis(150);

fn account_key(ns: &str, name: &str) -> Result<String, RegistryError> {
    let r = super::resources::find("", "v1", "serviceaccounts")
        .ok_or_else(|| RegistryError::internal("serviceaccounts are not served"))?;
    Ok(r.key(Some(ns), Some(name)))
}

/// Admits `pod` (about to be created in `ns` as `name`): names its account and mounts its
/// token, or refuses it as kube-apiserver does.
pub fn admit(store: &dyn Backend, pod: &mut Value, ns: &str, name: &str) -> Result<(), RegistryError> {
    if pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_some() {
        return Ok(());
    }
    let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) else { return Ok(()) };
    // serviceAccount is the deprecated spelling: either fills the other, as kube's
    // conversion does.
    let given = [spec.get("serviceAccountName"), spec.get("serviceAccount")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|s| !s.is_empty())
        .unwrap_or(DEFAULT)
        .to_string();
    spec["serviceAccountName"] = json!(given);
    spec["serviceAccount"] = json!(given);
    let account = lookup(store, ns, &given)?.ok_or_else(|| {
        RegistryError::forbidden(
            "pods",
            name,
            format!(
                "pods \"{name}\" is forbidden: error looking up service account {ns}/{given}: serviceaccount \"{given}\" not found"
            ),
        )
    })?;
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| account.get("automountServiceAccountToken").and_then(Value::as_bool))
        .unwrap_or(true);
    if spec.get("imagePullSecrets").is_none_or(|s| s.as_array().is_none_or(Vec::is_empty))
        && let Some(secrets) = account.get("imagePullSecrets").filter(|s| s.as_array().is_some_and(|a| !a.is_empty()))
    {
        spec["imagePullSecrets"] = secrets.clone();
    }
    if automount {
        mount_token(spec);
    }
    Ok(())
}

/// The ServiceAccount `ns/name`; for `default`, waited for a while.
fn lookup(store: &dyn Backend, ns: &str, name: &str) -> Result<Option<Value>, RegistryError> {
    let key = account_key(ns, name)?;
    let tries = if name == DEFAULT { DEFAULT_TRIES } else { 1 };
    for i in 0..tries {
        if i > 0 {
            std::thread::sleep(DEFAULT_WAIT);
        }
        let kv = store.get(&key).map_err(|e| RegistryError::from_store(e, "serviceaccounts", name))?;
        if let Some(kv) = kv {
            return decode(&kv).map(Some);
        }
    }
    Ok(None)
}

/// The projected volume and its mounts, unless a container mounts something at
/// [`MOUNT_PATH`] already (that container is left as it is).
fn mount_token(spec: &mut Value) {
    let existing = spec["volumes"].as_array().and_then(|vs| {
        vs.iter().filter_map(|v| v["name"].as_str()).find(|n| n.starts_with(VOLUME_PREFIX)).map(str::to_string)
    });
    let volume = existing.clone().unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", super::objects::random_suffix()));
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        for c in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let mounts = c.get("volumeMounts").and_then(Value::as_array);
            if mounts.is_some_and(|m| m.iter().any(|m| m["mountPath"].as_str() == Some(MOUNT_PATH))) {
                continue;
            }
            if !c.get("volumeMounts").is_some_and(Value::is_array) {
                c["volumeMounts"] = json!([]);
            }
            if let Some(m) = c["volumeMounts"].as_array_mut() {
                m.push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH}));
                mounted = true;
            }
        }
    }
    if !mounted || existing.is_some() {
        return;
    }
    if !spec.get("volumes").is_some_and(Value::is_array) {
        spec["volumes"] = json!([]);
    }
    if let Some(vs) = spec["volumes"].as_array_mut() {
        vs.push(json!({
            "name": volume,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                    {"configMap": {"name": ROOT_CA, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ],
            },
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_mounts_one_volume_unless_it_mounts_the_path_itself() {
        let mut spec = json!({
            "initContainers": [{"name": "i"}],
            "containers": [
                {"name": "a", "volumeMounts": [{"name": "x", "mountPath": "/x"}]},
                {"name": "b", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]},
            ],
        });
        mount_token(&mut spec);
        let volumes = spec["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 1);
        let name = volumes[0]["name"].as_str().unwrap();
        assert!(name.starts_with(VOLUME_PREFIX) && name.len() == VOLUME_PREFIX.len() + 5, "{name}");
        assert_eq!(volumes[0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(spec["initContainers"][0]["volumeMounts"][0]["name"], name);
        assert_eq!(spec["containers"][0]["volumeMounts"][1]["mountPath"], MOUNT_PATH);
        assert_eq!(spec["containers"][0]["volumeMounts"][1]["readOnly"], true);
        assert_eq!(spec["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1, "its own mount stays alone");
    }
}
