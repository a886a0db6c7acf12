//! The three patch types of the Kubernetes API:
//! - JSON merge patch (RFC 7386): objects merge, `null` deletes, lists are replaced;
//! - JSON patch (RFC 6902): a list of operations on JSON pointers;
//! - strategic merge patch: a merge patch whose lists of named things (containers, env,
//!   ports, volumes, …) merge element by element on a key, with the `$patch`,
//!   `$setElementOrder/…`, `$deleteFromPrimitiveList/…` and `$retainKeys` directives that
//!   kubectl apply sends. The merge keys are those of the built-in types
//!   (`patchMergeKey` in their Go definitions).

use serde_json::{Map, Value};

#[derive(Debug, PartialEq)]
pub struct PatchError(pub String);

type Result<T> = std::result::Result<T, PatchError>;

/// `v` as an object, made one (empty) first if it is anything else.
fn object_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("made an object just above"),
    }
}

pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            let t = object_mut(target);
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn pointer_parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String)> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PatchError(format!("path {path:?} does not start with /")));
    };
    let mut tokens: Vec<String> = rest.split('/').map(unescape).collect();
    let Some(last) = tokens.pop() else { return Err(PatchError(format!("path {path:?} names nothing"))) };
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(&t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError(format!("path {path:?} does not exist")))?;
    }
    Ok((cur, last))
}

fn get_at(doc: &Value, path: &str) -> Result<Value> {
    doc.pointer(path).cloned().ok_or_else(|| PatchError(format!("path {path:?} does not exist")))
}

fn add_at(doc: &mut Value, path: &str, value: Value) -> Result<()> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, key) = pointer_parent(doc, path)?;
    match parent {
        Value::Object(m) => {
            m.insert(key, value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if key == "-" {
                a.len()
            } else {
                key.parse::<usize>().map_err(|_| PatchError(format!("bad array index in {path:?}")))?
            };
            if i > a.len() {
                return Err(PatchError(format!("index out of range in {path:?}")));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(PatchError(format!("path {path:?} does not name a container"))),
    }
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value> {
    if path.is_empty() {
        return Err(PatchError("the whole document cannot be removed".into()));
    }
    let (parent, key) = pointer_parent(doc, path)?;
    match parent {
        Value::Object(m) => m.remove(&key).ok_or_else(|| PatchError(format!("path {path:?} does not exist"))),
        Value::Array(a) => match key.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(PatchError(format!("path {path:?} does not exist"))),
        },
        _ => Err(PatchError(format!("path {path:?} does not exist"))),
    }
}

/// RFC 6902, all or nothing: the target changes only if every operation applies.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<()> {
    let ops = patch.as_array().ok_or_else(|| PatchError("a JSON patch is a list of operations".into()))?;
    let mut doc = target.clone();
    for op in ops {
        let field = |name: &str| {
            op.get(name).and_then(Value::as_str).ok_or_else(|| PatchError(format!("operation without {name:?}: {op}")))
        };
        let path = field("path")?;
        match field("op")? {
            "add" => {
                add_at(&mut doc, path, op.get("value").cloned().ok_or_else(|| PatchError("add without value".into()))?)?
            }
            "remove" => {
                remove_at(&mut doc, path)?;
            }
            // RFC 6902 allows "" (the whole document); the caller checks what it becomes.
            "replace" if path.is_empty() => {
                doc = op.get("value").cloned().ok_or_else(|| PatchError("replace without value".into()))?;
            }
            "replace" => {
                remove_at(&mut doc, path)?;
                add_at(
                    &mut doc,
                    path,
                    op.get("value").cloned().ok_or_else(|| PatchError("replace without value".into()))?,
                )?;
            }
            "move" => {
                let v = remove_at(&mut doc, field("from")?)?;
                add_at(&mut doc, path, v)?;
            }
            "copy" => {
                let v = get_at(&doc, field("from")?)?;
                add_at(&mut doc, path, v)?;
            }
            "test" => {
                if get_at(&doc, path)? != op.get("value").cloned().unwrap_or(Value::Null) {
                    return Err(PatchError(format!("test failed at {path:?}")));
                }
            }
            other => return Err(PatchError(format!("unknown operation {other:?}"))),
        }
    }
    *target = doc;
    Ok(())
}

/// The merge key of a list field of the built-in types, by field name. None: the list is
/// atomic (replaced whole), or a list of primitives merged as a set where noted.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => "name",
        "readinessGates" => "conditionType",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "topologySpreadConstraints" => "topologyKey",
        "addresses" => "type",
        _ => return None,
    })
}

/// Lists of primitives that merge as sets (patchStrategy merge without a key).
fn primitive_set(field: &str) -> bool {
    field == "finalizers"
}

const DIRECTIVE: &str = "$patch";
const ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVES: &str = "$deleteFromPrimitiveList/";
const RETAIN_KEYS: &str = "$retainKeys";

/// Applies a strategic merge patch to `target`. A Service's `ports` merge on `port`.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<()> {
    smp_object(target, patch)
}

fn smp_object(target: &mut Value, patch: &Value) -> Result<()> {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get(DIRECTIVE).and_then(Value::as_str) {
        Some("replace") => {
            let mut replacement = p.clone();
            replacement.remove(DIRECTIVE);
            *target = Value::Object(replacement);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(PatchError(format!("unknown $patch directive {other:?}"))),
    }
    let t = object_mut(target);
    if let Some(keep) = p.get(RETAIN_KEYS).and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in p {
        if k == DIRECTIVE || k == RETAIN_KEYS || k.starts_with(ORDER) {
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVES) {
            if let (Some(Value::Array(list)), Some(gone)) = (t.get_mut(field), v.as_array()) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let key = if k == "ports" && is_service_ports(v) { Some("port") } else { merge_key(k) };
        match (v, key) {
            (Value::Array(items), Some(key)) => {
                let current = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(current, items, key)?;
                if let Some(Value::Array(order)) = p.get(&format!("{ORDER}{k}")) {
                    reorder(current, order, key);
                }
            }
            (Value::Array(items), None) if primitive_set(k) => {
                let current = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                if let Value::Array(list) = current {
                    for item in items {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                }
            }
            (Value::Object(_), _) => {
                let child = t.entry(k.clone()).or_insert(Value::Null);
                smp_object(child, v)?;
                if child.is_null() {
                    t.remove(k);
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

/// Service ports carry `port`; container ports carry `containerPort`.
fn is_service_ports(items: &Value) -> bool {
    items.as_array().is_some_and(|a| a.iter().any(|i| i.get("port").is_some() && i.get("containerPort").is_none()))
}

fn merge_list(current: &mut Value, items: &[Value], key: &str) -> Result<()> {
    if !current.is_array() {
        *current = Value::Array(Vec::new());
    }
    let Some(list) = current.as_array_mut() else { return Err(PatchError("not a list".into())) };
    for item in items {
        let directive = item.get(DIRECTIVE).and_then(Value::as_str);
        let id = item.get(key).cloned();
        if directive == Some("replace") {
            let mut kept: Vec<Value> = items.iter().filter(|i| i.get(DIRECTIVE).is_none()).cloned().collect();
            kept.iter_mut().for_each(strip_directives);
            *list = kept;
            return Ok(());
        }
        let Some(id) = id else {
            return Err(PatchError(format!("an element of a list merged on {key:?} has no {key:?}: {item}")));
        };
        let pos = list.iter().position(|e| e.get(key) == Some(&id));
        match (directive, pos) {
            (Some("delete"), Some(i)) => {
                list.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => smp_object(&mut list[i], item)?,
            (_, None) => {
                let mut fresh = Value::Object(Map::new());
                smp_object(&mut fresh, item)?;
                list.push(fresh);
            }
        }
    }
    Ok(())
}

fn strip_directives(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|k, _| !k.starts_with('$'));
    }
}

/// `$setElementOrder`: elements named in the order list come in that order; others after.
fn reorder(current: &mut Value, order: &[Value], key: &str) {
    let Value::Array(list) = current else { return };
    let rank = |e: &Value| order.iter().position(|o| o.get(key) == e.get(key)).unwrap_or(usize::MAX);
    list.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn json_patch_is_all_or_nothing() {
        let mut t = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(&mut t, &json!([{"op": "add", "path": "/a/-", "value": 3}, {"op": "replace", "path": "/b/c", "value": 2}, {"op": "move", "from": "/b", "path": "/d"}])).unwrap();
        assert_eq!(t, json!({"a": [1, 2, 3], "d": {"c": 2}}));
        let before = t.clone();
        assert!(
            json_patch(&mut t, &json!([{"op": "remove", "path": "/a/0"}, {"op": "test", "path": "/d/c", "value": 9}]))
                .is_err()
        );
        assert_eq!(t, before);
    }

    #[test]
    fn strategic_merge_merges_named_lists() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "busybox", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "b", "image": "busybox"}]}, "metadata": {"finalizers": ["f1"], "labels": {"k": "v", "old": "x"}}});
        strategic_merge_patch(
            &mut pod,
            &json!({
            "metadata": {"finalizers": ["f2"], "labels": {"old": null, "new": "y"}},
            "spec": {"containers": [
                {"name": "a", "env": [{"name": "Y", "$patch": "delete"}, {"name": "Z", "value": "3"}]},
                {"name": "c", "image": "nginx"}],
                "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}),
        )
        .unwrap();
        assert_eq!(pod["metadata"]["labels"], json!({"k": "v", "new": "y"}));
        assert_eq!(pod["metadata"]["finalizers"], json!(["f1", "f2"]));
        let names: Vec<&str> =
            pod["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["c", "a", "b"]);
        assert_eq!(
            pod["spec"]["containers"][1]["env"],
            json!([{"name": "X", "value": "1"}, {"name": "Z", "value": "3"}])
        );
        assert_eq!(pod["spec"]["containers"][1]["image"], "busybox", "fields not in the patch stay");
    }

    #[test]
    fn strategic_directives_replace_and_delete() {
        let mut d = json!({"spec": {"template": {"spec": {"volumes": [{"name": "v1"}, {"name": "v2"}]}}, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        strategic_merge_patch(&mut d, &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}, "template": {"spec": {"volumes": [{"name": "v3"}, {"$patch": "replace"}]}}}})).unwrap();
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(d["spec"]["template"]["spec"]["volumes"], json!([{"name": "v3"}]));
        let mut m = json!({"data": {"a": "1"}});
        strategic_merge_patch(
            &mut m,
            &json!({"$deleteFromPrimitiveList/x": [1], "data": {"$patch": "replace", "b": "2"}}),
        )
        .unwrap();
        assert_eq!(m, json!({"data": {"b": "2"}}));
    }
}
