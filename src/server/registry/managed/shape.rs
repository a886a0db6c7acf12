//! How apply sees the built-in kinds' fields: which objects are structs (merged field by
//! field, owned only through their fields), which are maps (owned themselves and key by
//! key), which are atomic (owned and replaced whole), and how a list's items are told
//! apart. These are the markers of the Go types (`+listType=map`, `+listMapKey=…`,
//! `+listType=set`, `+structType=atomic`, `+mapType=atomic`) that structured-merge-diff
//! reads from kube's OpenAPI, kept here by field name as the strategic merge patch keeps
//! its merge keys: the names do not collide across the built-in kinds where it matters.

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, Path};

/// What a field's value is, for ownership and merging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A scalar, or an object or list replaced whole.
    Atomic,
    /// Fields merged one by one; the struct itself is not owned.
    Struct,
    /// Keys merged one by one; the map itself is owned too.
    Map,
    /// Items told apart by these key fields.
    Keyed(&'static [&'static str]),
    /// Scalars, each owned by value.
    Set,
}

/// Objects owned and replaced whole (`+structType=atomic`, `+mapType=atomic`).
const ATOMIC_OBJECTS: &[&str] = &[
    "selector",
    "labelSelector",
    "namespaceSelector",
    "nodeSelector",
    "fieldRef",
    "resourceFieldRef",
    "configMapKeyRef",
    "secretKeyRef",
    "requiredDuringSchedulingIgnoredDuringExecution",
    "roleRef",
];

/// Objects whose keys are data, not fields (Go maps).
const MAPS: &[&str] = &[
    "labels",
    "annotations",
    "data",
    "binaryData",
    "stringData",
    "matchLabels",
    "limits",
    "requests",
    "capacity",
    "allocatable",
    "hard",
    "used",
    "overhead",
    "parameters",
    "volumeAttributes",
];

/// The key fields of the keyed lists (`+listType=map`), with the default a key field takes
/// when an item leaves it out.
fn keys(field: &str, items: &[Value]) -> Option<&'static [&'static str]> {
    let objects = items.iter().all(Value::is_object);
    if !objects {
        return None;
    }
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => &["name"],
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => &["containerPort", "protocol"],
        "ports" if items.iter().all(|i| i.get("port").is_some()) => &["port", "protocol"],
        "readinessGates" => &["conditionType"],
        "volumeMounts" => &["mountPath"],
        "volumeDevices" => &["devicePath"],
        "hostAliases" => &["ip"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        "topologySpreadConstraints" => &["topologyKey", "whenUnsatisfiable"],
        "addresses" => &["type"],
        _ => return None,
    })
}

fn key_default(field: &str) -> Option<Value> {
    (field == "protocol").then(|| Value::String("TCP".into()))
}

/// Lists of scalars kept as sets (`+listType=set`).
const SETS: &[&str] = &["finalizers", "addresses", "clusterIPs", "ipFamilies"];

pub fn shape(field: &str, value: &Value) -> Shape {
    match value {
        Value::Object(_) if ATOMIC_OBJECTS.contains(&field) => Shape::Atomic,
        Value::Object(_) if MAPS.contains(&field) => Shape::Map,
        Value::Object(_) => Shape::Struct,
        Value::Array(items) => match keys(field, items) {
            Some(k) => Shape::Keyed(k),
            None if SETS.contains(&field) && items.iter().all(|i| !i.is_object() && !i.is_array()) => Shape::Set,
            None => Shape::Atomic,
        },
        _ => Shape::Atomic,
    }
}

/// The `k:` element of a keyed list's item: its key fields, sorted, defaults filled in.
pub fn key_element(keys: &[&str], item: &Value) -> Result<String, String> {
    let mut m = Map::new();
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable();
    for k in sorted {
        match item.get(k).cloned().or_else(|| key_default(k)) {
            Some(v) => {
                m.insert(k.to_string(), v);
            }
            None => {
                return Err(format!(
                    "associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
                ));
            }
        }
    }
    Ok(format!("k:{}", Value::Object(m)))
}

pub fn value_element(v: &Value) -> String {
    format!("v:{v}")
}

/// Every path of `obj` below `prefix` (`obj` being a struct), and the value of each path
/// that has no paths below it (what a conflict compares). The object's identity and what
/// the server keeps (`apiVersion`, `kind`, name, uid, resourceVersion, managedFields, …)
/// are nobody's.
pub fn fields(obj: &Value) -> Result<(FieldSet, Vec<(Path, Value)>), String> {
    let mut set = FieldSet::new();
    let mut leaves = Vec::new();
    let Some(m) = obj.as_object() else { return Ok((set, leaves)) };
    let mut prefix = Vec::new();
    for (k, v) in m {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        if k == "metadata" {
            let Some(meta) = v.as_object() else { continue };
            prefix.push("f:metadata".to_string());
            for (mk, mv) in meta {
                if SERVER_METADATA.contains(&mk.as_str()) {
                    continue;
                }
                walk(mk, mv, &mut prefix, &mut set, &mut leaves)?;
            }
            prefix.pop();
            continue;
        }
        walk(k, v, &mut prefix, &mut set, &mut leaves)?;
    }
    Ok((set, leaves))
}

/// Metadata that identifies the object or that the server writes: owned by no manager.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

fn walk(
    field: &str,
    value: &Value,
    prefix: &mut Path,
    set: &mut FieldSet,
    leaves: &mut Vec<(Path, Value)>,
) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    prefix.push(format!("f:{field}"));
    match (shape(field, value), value) {
        (Shape::Struct, Value::Object(m)) if !m.is_empty() => {
            for (k, v) in m {
                walk(k, v, prefix, set, leaves)?;
            }
        }
        (Shape::Map, Value::Object(m)) => {
            set.insert(prefix.clone());
            for (k, v) in m {
                walk(k, v, prefix, set, leaves)?;
            }
        }
        (Shape::Keyed(keys), Value::Array(items)) => {
            set.insert(prefix.clone());
            for item in items {
                prefix.push(key_element(keys, item).map_err(|e| format!("{}: {e}", FieldSet::describe(prefix)))?);
                set.insert(prefix.clone());
                if let Some(m) = item.as_object() {
                    for (k, v) in m {
                        walk(k, v, prefix, set, leaves)?;
                    }
                }
                prefix.pop();
            }
        }
        (Shape::Set, Value::Array(items)) => {
            set.insert(prefix.clone());
            for item in items {
                prefix.push(value_element(item));
                set.insert(prefix.clone());
                leaves.push((prefix.clone(), item.clone()));
                prefix.pop();
            }
        }
        _ => {
            set.insert(prefix.clone());
            leaves.push((prefix.clone(), value.clone()));
        }
    }
    prefix.pop();
    Ok(())
}

/// The value at `path` in `obj`, if there is one.
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    let mut field = "";
    for element in path {
        let (kind, rest) = element.split_at(2);
        cur = match (kind, cur) {
            ("f:", Value::Object(m)) => {
                field = rest;
                m.get(rest)?
            }
            ("k:", Value::Array(items)) => {
                let keys = keys(field, items)?;
                items.iter().find(|i| key_element(keys, i).is_ok_and(|k| k == *element))?
            }
            ("v:", Value::Array(items)) => items.iter().find(|i| value_element(i) == *element)?,
            ("i:", Value::Array(items)) => items.get(rest.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes what is at `path` in `obj`; false if nothing was there.
pub fn remove(obj: &mut Value, path: &[String]) -> bool {
    let Some((last, parent_path)) = path.split_last() else { return false };
    let field = parent_path.last().and_then(|e| e.strip_prefix("f:")).unwrap_or_default().to_string();
    let Some(parent) = get_mut(obj, parent_path) else { return false };
    let (kind, rest) = last.split_at(2);
    match (kind, parent) {
        ("f:", Value::Object(m)) => m.remove(rest).is_some(),
        ("k:", Value::Array(items)) => {
            let Some(keys) = keys(&field, items) else { return false };
            let before = items.len();
            items.retain(|i| !key_element(keys, i).is_ok_and(|k| k == *last));
            items.len() != before
        }
        ("v:", Value::Array(items)) => {
            let before = items.len();
            items.retain(|i| value_element(i) != *last);
            items.len() != before
        }
        _ => false,
    }
}

fn get_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    let mut field = String::new();
    for element in path {
        let (kind, rest) = element.split_at(2);
        cur = match (kind, cur) {
            ("f:", Value::Object(m)) => {
                field = rest.to_string();
                m.get_mut(rest)?
            }
            ("k:", Value::Array(items)) => {
                let keys = keys(&field, items)?;
                items.iter_mut().find(|i| key_element(keys, i).is_ok_and(|k| k == *element))?
            }
            _ => return None,
        };
    }
    Some(cur)
}

/// `config` merged into `live` field by field as the shapes say: structs and maps key by
/// key, keyed lists item by item (new items after the live ones), sets as unions, and
/// anything atomic replaced.
pub fn merge(live: &mut Value, config: &Value) -> Result<(), String> {
    let (Value::Object(l), Value::Object(c)) = (&mut *live, config) else {
        *live = config.clone();
        return Ok(());
    };
    for (k, cv) in c {
        if cv.is_null() {
            continue;
        }
        let Some(lv) = l.get_mut(k) else {
            l.insert(k.clone(), cv.clone());
            continue;
        };
        match (shape(k, cv), &mut *lv, cv) {
            (Shape::Struct | Shape::Map, Value::Object(_), Value::Object(_)) => merge(lv, cv)?,
            (Shape::Keyed(keys), Value::Array(litems), Value::Array(citems)) => {
                for citem in citems {
                    let ck = key_element(keys, citem)?;
                    match litems.iter_mut().find(|i| key_element(keys, i).is_ok_and(|k| k == ck)) {
                        Some(litem) => merge(litem, citem)?,
                        None => litems.push(citem.clone()),
                    }
                }
            }
            (Shape::Set, Value::Array(litems), Value::Array(citems)) => {
                for citem in citems {
                    if !litems.contains(citem) {
                        litems.push(citem.clone());
                    }
                }
            }
            _ => *lv = cv.clone(),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["x"]},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "web", "image": "busybox", "ports": [{"containerPort": 80}]}]}},
            },
        })
    }

    #[test]
    fn fields_follow_the_go_markers() {
        let (set, leaves) = fields(&deployment()).unwrap();
        let v1 = set.to_fields_v1();
        assert_eq!(
            v1,
            json!({
                "f:metadata": {"f:finalizers": {".": {}, "v:\"x\"": {}}, "f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {"f:spec": {"f:containers": {".": {}, "k:{\"name\":\"web\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}},
                    }}}},
                },
            })
        );
        let replicas: Path = vec!["f:spec".into(), "f:replicas".into()];
        assert!(leaves.contains(&(replicas.clone(), json!(2))));
        assert_eq!(get(&deployment(), &replicas), Some(&json!(2)));
        let image: Path = ["f:spec", "f:template", "f:spec", "f:containers", r#"k:{"name":"web"}"#, "f:image"]
            .map(String::from)
            .to_vec();
        assert_eq!(get(&deployment(), &image), Some(&json!("busybox")));
    }

    #[test]
    fn a_keyed_item_without_its_key_is_refused() {
        let obj = json!({"spec": {"containers": [{"image": "busybox"}]}});
        let err = fields(&obj).unwrap_err();
        assert!(err.contains("omits key field \"name\""), "{err}");
    }

    #[test]
    fn merge_and_remove_follow_the_shapes() {
        let mut live = deployment();
        merge(
            &mut live,
            &json!({"metadata": {"labels": {"tier": "front"}, "finalizers": ["y"]}, "spec": {
                "selector": {"matchLabels": {"other": "x"}},
                "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}, {"name": "side", "image": "b"}]}},
            }}),
        )
        .unwrap();
        assert_eq!(live["metadata"]["labels"], json!({"app": "web", "tier": "front"}));
        assert_eq!(live["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(live["spec"]["selector"], json!({"matchLabels": {"other": "x"}}));
        let containers = &live["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx");
        assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
        assert_eq!(containers[1]["name"], "side");
        let side: Path =
            ["f:spec", "f:template", "f:spec", "f:containers", r#"k:{"name":"side"}"#].map(String::from).to_vec();
        assert!(remove(&mut live, &side));
        assert!(!remove(&mut live, &side));
        assert_eq!(live["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
        assert!(!remove(&mut live, &["f:metadata".into(), "v:\"x\"".into()]));
        assert!(remove(&mut live, &["f:metadata".into(), "f:finalizers".into(), "v:\"x\"".into()]));
        assert_eq!(live["metadata"]["finalizers"], json!(["y"]));
    }
}
