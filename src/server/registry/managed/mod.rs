//! Field management, as kube-apiserver's: each object's `metadata.managedFields` says which
//! manager (kubectl, a controller, a user's tool) set which fields, by which operation.
//! An update (create, PUT, PATCH) gives its manager the fields it changed and takes them
//! from the others; an apply (server-side apply) says which fields its manager wants to
//! own and with what values: it merges them in, removes the fields the manager applied
//! before and no longer does (unless someone else also owns them), and refuses, unless
//! forced, to change a value another manager owns.

pub mod fieldset;
pub mod shape;

use serde_json::{Map, Value, json};

use fieldset::{FieldSet, Path};

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";

/// One managedFields entry.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == subresource
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), json!(s));
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Option<Entry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let set = match v.get("fieldsV1") {
            Some(f) => FieldSet::from_fields_v1(f).ok()?,
            None => FieldSet::new(),
        };
        Some(Entry {
            manager: s("manager")?,
            operation: s("operation").filter(|o| o == APPLY || o == UPDATE)?,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            set,
        })
    }

    /// How a conflict names its manager (kube's printManager).
    fn describe(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(s) = &self.subresource {
            out.push_str(&format!(" with subresource {s:?}"));
        }
        if self.operation == UPDATE {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Entry::from_json).collect())
        .unwrap_or_default()
}

fn store_entries(obj: &mut Value, mut list: Vec<Entry>) {
    list.retain(|e| !e.set.is_empty());
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list.iter().map(Entry::to_json).collect()));
    }
}

/// Who writes, and how (the request's `fieldManager`, or its User-Agent's product).
#[derive(Clone, Debug)]
pub struct Writer {
    pub manager: String,
    pub api_version: String,
    /// `status` or `scale` for a subresource's write.
    pub subresource: Option<&'static str>,
    /// Where the object's fields get their shapes: its built-in kind, or its CRD's schema.
    pub types: shape::Types<'static>,
}

/// Gives `writer` the fields `new` changes from `old` (every field for a create) and takes
/// them from every other manager; fields `new` no longer has are nobody's. A request that
/// sets managedFields itself replaces them first (`[{}]` clears them), as the API's.
pub fn track_update(old: Option<&Value>, new: &mut Value, writer: &Writer, now: &str) -> Result<(), String> {
    let requested = new.pointer("/metadata/managedFields").and_then(Value::as_array).cloned();
    let old_entries = old.map(entries).unwrap_or_default();
    let mut list = match requested {
        Some(list)
            if !list.is_empty()
                && old.is_none_or(|o| o.pointer("/metadata/managedFields") != Some(&Value::Array(list.clone()))) =>
        {
            list.iter().filter_map(Entry::from_json).collect()
        }
        _ => old_entries,
    };
    let (old_set, old_leaves) = match old {
        Some(o) => shape::fields(o, writer.types)?,
        None => (FieldSet::new(), Vec::new()),
    };
    let (new_set, new_leaves) = shape::fields(new, writer.types)?;
    let old_values: std::collections::HashMap<&Path, &Value> = old_leaves.iter().map(|(p, v)| (p, v)).collect();
    let mut changed = new_set.difference(&old_set);
    for (p, v) in &new_leaves {
        if old_values.get(p).is_some_and(|o| *o != v) {
            changed.insert(p.clone());
        }
    }
    let removed = old_set.difference(&new_set);
    let mine = list.iter().position(|e| e.is(&writer.manager, UPDATE, writer.subresource));
    for (i, e) in list.iter_mut().enumerate() {
        e.set = e.set.difference(&removed);
        if Some(i) == mine {
            if !changed.is_empty() {
                e.set = e.set.union(&changed);
                e.time = Some(now.to_string());
                e.api_version = writer.api_version.clone();
            }
        } else {
            e.set = e.set.difference(&changed);
        }
    }
    if mine.is_none() && !changed.is_empty() {
        list.push(Entry {
            manager: writer.manager.clone(),
            operation: UPDATE.into(),
            api_version: writer.api_version.clone(),
            time: Some(now.to_string()),
            subresource: writer.subresource.map(str::to_string),
            set: changed,
        });
    }
    store_entries(new, list);
    Ok(())
}

/// A field an apply would change that another manager owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The manager as kube prints it: `"kubectl-client-side-apply" using apps/v1`.
    pub manager: String,
    /// The field: `.spec.replicas`.
    pub field: String,
}

#[derive(Debug, PartialEq)]
pub enum ApplyError {
    /// The applied configuration cannot be applied (a keyed item without its key).
    Invalid(String),
    Conflicts(Vec<Conflict>),
}

/// kube's message for conflicts: one on a line, or grouped by manager.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!("Apply failed with 1 conflict: conflict with {}: {}", c.manager, c.field);
    }
    let mut by_manager: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for c in conflicts {
        by_manager.entry(&c.manager).or_default().push(&c.field);
    }
    let mut lines = Vec::new();
    for (manager, fields) in by_manager {
        lines.push(format!("conflicts with {manager}:"));
        lines.extend(fields.iter().map(|f| format!("- {f}")));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

/// `live` with `config` applied by `writer`; None for `live` applies to nothing (a create).
/// `force` takes conflicting fields from their managers instead of failing.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    writer: &Writer,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    let (config_set, config_leaves) = shape::fields(config, writer.types).map_err(ApplyError::Invalid)?;
    let empty = json!({});
    let live_obj = live.unwrap_or(&empty);
    let mut list = entries(live_obj);
    let mine = list.iter().position(|e| e.is(&writer.manager, APPLY, writer.subresource));
    let before = mine.map(|i| list[i].set.clone()).unwrap_or_default();

    let mut conflicts = Vec::new();
    let mut taken: Vec<(usize, Path)> = Vec::new();
    for (path, value) in &config_leaves {
        if shape::get(live_obj, writer.types, path).is_none_or(|v| v == value) {
            continue;
        }
        for (i, e) in list.iter().enumerate() {
            if Some(i) != mine && e.set.contains(path) {
                conflicts.push(Conflict { manager: e.describe(), field: FieldSet::describe(path) });
                taken.push((i, path.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for (i, path) in taken {
        list[i].set.remove(&path);
    }

    let others = list
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != mine)
        .fold(FieldSet::new(), |acc, (_, e)| acc.union(&e.set));
    let mut obj = live_obj.clone();
    // What goes: only the topmost of what is no longer applied and nobody else owns (an
    // item's key fields must stay until the item is found and removed whole).
    let gone: FieldSet = before
        .difference(&config_set)
        .iter()
        .filter(|p| !others.contains(p) && !others.has_descendant(p))
        .cloned()
        .collect();
    for path in gone.iter() {
        if !(1..path.len()).any(|n| gone.contains(&path[..n].to_vec())) {
            shape::remove(&mut obj, writer.types, path);
        }
    }
    shape::merge(&mut obj, config, writer.types).map_err(ApplyError::Invalid)?;

    let entry = Entry {
        manager: writer.manager.clone(),
        operation: APPLY.into(),
        api_version: writer.api_version.clone(),
        time: Some(now.to_string()),
        subresource: writer.subresource.map(str::to_string),
        set: config_set,
    };
    match mine {
        Some(i) => list[i] = entry,
        None => list.push(entry),
    }
    store_entries(&mut obj, list);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(m: &str) -> Writer {
        Writer { manager: m.into(), api_version: "v1".into(), subresource: None, types: shape::Types::BuiltIn }
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
    }

    fn managers(obj: &Value) -> Vec<(String, String, Value)> {
        entries(obj).into_iter().map(|e| (e.manager, e.operation, e.set.to_fields_v1())).collect()
    }

    #[test]
    fn an_update_takes_the_fields_it_changes() {
        let mut created = cm(json!({"a": "1", "b": "2"}));
        track_update(None, &mut created, &writer("kubectl-create"), "t0").unwrap();
        assert_eq!(
            managers(&created),
            vec![("kubectl-create".into(), "Update".into(), json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}}))]
        );
        let mut edited = created.clone();
        edited["data"]["a"] = json!("changed");
        edited["data"]["c"] = json!("3");
        track_update(Some(&created), &mut edited, &writer("kubectl-edit"), "t1").unwrap();
        assert_eq!(
            managers(&edited),
            vec![
                ("kubectl-create".into(), "Update".into(), json!({"f:data": {".": {}, "f:b": {}}})),
                ("kubectl-edit".into(), "Update".into(), json!({"f:data": {"f:a": {}, "f:c": {}}})),
            ]
        );
        // Asking for `[{}]` clears them.
        let mut reset = edited.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        track_update(Some(&edited), &mut reset, &writer("x"), "t2").unwrap();
        assert!(reset["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn apply_conflicts_unless_forced_and_removes_what_it_stops_applying() {
        let first = apply(None, &cm(json!({"a": "1", "b": "2"})), &writer("alice"), false, "t0").unwrap();
        assert_eq!(first["data"], json!({"a": "1", "b": "2"}));
        // Bob applies the same value of a: shared, no conflict.
        let shared = apply(Some(&first), &cm(json!({"a": "1"})), &writer("bob"), false, "t1").unwrap();
        // Bob changes a: a conflict with alice.
        let err = apply(Some(&shared), &cm(json!({"a": "9"})), &writer("bob"), false, "t2").unwrap_err();
        let ApplyError::Conflicts(c) = err else { panic!("{err:?}") };
        assert_eq!(c, vec![Conflict { manager: "\"alice\"".into(), field: ".data.a".into() }]);
        assert_eq!(conflict_message(&c), "Apply failed with 1 conflict: conflict with \"alice\": .data.a");
        // Forced: bob takes it.
        let forced = apply(Some(&shared), &cm(json!({"a": "9"})), &writer("bob"), true, "t3").unwrap();
        assert_eq!(forced["data"]["a"], "9");
        // Alice stops applying b and a: b goes (hers alone), a stays (bob's).
        let shrunk = apply(Some(&forced), &cm(json!({"c": "3"})), &writer("alice"), false, "t4").unwrap();
        assert_eq!(shrunk["data"], json!({"a": "9", "c": "3"}));
    }

    #[test]
    fn an_item_no_longer_applied_goes_whole() {
        let pod = |containers: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}});
        let both = pod(json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]));
        let first = apply(None, &both, &writer("me"), false, "t0").unwrap();
        let one = apply(Some(&first), &pod(json!([{"name": "a", "image": "x"}])), &writer("me"), false, "t1").unwrap();
        assert_eq!(one["spec"]["containers"], json!([{"name": "a", "image": "x"}]));
    }

    #[test]
    fn an_update_manager_conflicts_with_its_name_and_version() {
        let mut created = cm(json!({"a": "1"}));
        track_update(None, &mut created, &writer("kubectl-client-side-apply"), "t0").unwrap();
        let err = apply(Some(&created), &cm(json!({"a": "2"})), &writer("kubectl"), false, "t1").unwrap_err();
        let ApplyError::Conflicts(c) = err else { panic!() };
        assert_eq!(
            conflict_message(&c),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .data.a"
        );
    }
}
