//! How apply sees the built-in kinds' fields: which objects are structs (merged field by
//! field, owned only through their fields), which are maps (owned themselves and key by
//! key), which are atomic (owned and replaced whole), and how a list's items are told
//! apart. These are the markers of the Go types (`+listType=map`, `+listMapKey=…`,
//! `+listType=set`, `+structType=atomic`, `+mapType=atomic`) that structured-merge-diff
//! reads from kube's OpenAPI, kept here by field name as the strategic merge patch keeps
//! its merge keys: the names do not collide across the built-in kinds where it matters.
//! A custom kind's fields take their shapes from its CRD's structural schema instead
//! ([`Types::Root`]), as structured-merge-diff reads them: `x-kubernetes-list-type`
//! (`map` with `x-kubernetes-list-map-keys`, `set`; `atomic` and unmarked lists are
//! replaced whole), `x-kubernetes-map-type: atomic`, and `additionalProperties` for maps.

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, Path};

/// What a field's value is, for ownership and merging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape<'a> {
    /// A scalar, or an object or list replaced whole.
    Atomic,
    /// Fields merged one by one; the struct itself is not owned.
    Struct,
    /// Keys merged one by one; the map itself is owned too.
    Map,
    /// Items told apart by these key fields.
    Keyed(Vec<&'a str>),
    /// Scalars, each owned by value.
    Set,
}

/// Where the shapes of a value's fields come from, level by level.
#[derive(Clone, Copy, Debug)]
pub enum Types<'a> {
    /// The built-in kinds' Go markers, by field name.
    BuiltIn,
    /// A custom kind's whole openAPIV3Schema, for the object itself.
    Root(&'a Value),
    /// A custom kind's schema for a value below the object.
    Schema(&'a Value),
    /// Below `x-kubernetes-preserve-unknown-fields`, where no schema says: objects are
    /// structs and lists atomic, as structured-merge-diff deduces them.
    Untyped,
}

impl<'a> Types<'a> {
    /// For an object of a kind whose CRD has this schema (None: a built-in kind).
    pub fn of(schema: Option<&'a Value>) -> Types<'a> {
        schema.map_or(Types::BuiltIn, Types::Root)
    }

    fn schema(self) -> Option<&'a Value> {
        match self {
            Types::Root(s) | Types::Schema(s) => Some(s),
            Types::BuiltIn | Types::Untyped => None,
        }
    }

    /// The types of field `name` of this value.
    fn field(self, name: &str) -> Types<'a> {
        let Some(s) = self.schema() else { return self };
        // ObjectMeta is ObjectMeta, at the top and in embedded resources.
        let top = matches!(self, Types::Root(_))
            || s.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true);
        if name == "metadata" && top {
            return Types::BuiltIn;
        }
        match s.get("properties").and_then(|p| p.get(name)).or_else(|| s.get("additionalProperties")) {
            Some(child) if child.is_object() => Types::Schema(child),
            _ => Types::Untyped,
        }
    }

    /// The types of this list's items.
    fn item(self) -> Types<'a> {
        match self.schema() {
            Some(s) => s.get("items").filter(|i| i.is_object()).map_or(Types::Untyped, Types::Schema),
            None => self,
        }
    }

    /// The shape of `value`, the field `field` of its parent.
    pub fn shape(self, field: &str, value: &Value) -> Shape<'a> {
        let s = match self {
            Types::BuiltIn => return shape(field, value),
            Types::Untyped => return if value.is_object() { Shape::Struct } else { Shape::Atomic },
            Types::Root(s) | Types::Schema(s) => s,
        };
        match value {
            Value::Object(_) if s.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic") => {
                Shape::Atomic
            }
            Value::Object(_)
                if s.get("additionalProperties").is_some_and(|a| a.is_object() || a == &Value::Bool(true)) =>
            {
                Shape::Map
            }
            Value::Object(_) => Shape::Struct,
            Value::Array(items) => self.list_shape(field, items),
            _ => Shape::Atomic,
        }
    }

    /// The shape of a list, the field `field` of its parent.
    fn list_shape(self, field: &str, items: &[Value]) -> Shape<'a> {
        let s = match self {
            Types::BuiltIn => return builtin_list_shape(field, items),
            Types::Untyped => return Shape::Atomic,
            Types::Root(s) | Types::Schema(s) => s,
        };
        match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") if items.iter().all(Value::is_object) => Shape::Keyed(
                s.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect(),
            ),
            Some("set") if items.iter().all(|i| !i.is_object() && !i.is_array()) => Shape::Set,
            _ => Shape::Atomic,
        }
    }

    /// The default of a keyed list's key field that an item leaves out.
    fn key_default(self, key: &str) -> Option<Value> {
        match self {
            Types::BuiltIn => key_default(key),
            Types::Root(s) | Types::Schema(s) => s.pointer(&format!("/items/properties/{key}/default")).cloned(),
            Types::Untyped => None,
        }
    }

    /// The key fields of a keyed list, if this list is one.
    fn keys(self, field: &str, items: &[Value]) -> Option<Vec<&'a str>> {
        match self.list_shape(field, items) {
            Shape::Keyed(k) => Some(k),
            _ => None,
        }
    }
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

fn shape(field: &str, value: &Value) -> Shape<'static> {
    match value {
        Value::Object(_) if ATOMIC_OBJECTS.contains(&field) => Shape::Atomic,
        Value::Object(_) if MAPS.contains(&field) => Shape::Map,
        Value::Object(_) => Shape::Struct,
        Value::Array(items) => builtin_list_shape(field, items),
        _ => Shape::Atomic,
    }
}

fn builtin_list_shape(field: &str, items: &[Value]) -> Shape<'static> {
    match keys(field, items) {
        Some(k) => Shape::Keyed(k.to_vec()),
        None if SETS.contains(&field) && items.iter().all(|i| !i.is_object() && !i.is_array()) => Shape::Set,
        None => Shape::Atomic,
    }
}

/// The `k:` element of a keyed list's item: its key fields, sorted, defaults filled in
/// (`list` is the list's types).
pub fn key_element(list: Types, keys: &[&str], item: &Value) -> Result<String, String> {
    let mut m = Map::new();
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable();
    for k in sorted {
        match item.get(k).cloned().or_else(|| list.key_default(k)) {
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
pub fn fields(obj: &Value, types: Types) -> Result<(FieldSet, Vec<(Path, Value)>), String> {
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
                walk(Types::BuiltIn, mk, mv, &mut prefix, &mut set, &mut leaves)?;
            }
            prefix.pop();
            continue;
        }
        walk(types.field(k), k, v, &mut prefix, &mut set, &mut leaves)?;
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

/// `value` is field `field` of its parent, of types `types`.
fn walk(
    types: Types,
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
    match (types.shape(field, value), value) {
        (Shape::Struct, Value::Object(m)) if !m.is_empty() => {
            for (k, v) in m {
                walk(types.field(k), k, v, prefix, set, leaves)?;
            }
        }
        (Shape::Map, Value::Object(m)) => {
            set.insert(prefix.clone());
            for (k, v) in m {
                walk(types.field(k), k, v, prefix, set, leaves)?;
            }
        }
        (Shape::Keyed(keys), Value::Array(items)) => {
            set.insert(prefix.clone());
            let item_types = types.item();
            for item in items {
                prefix
                    .push(key_element(types, &keys, item).map_err(|e| format!("{}: {e}", FieldSet::describe(prefix)))?);
                set.insert(prefix.clone());
                if let Some(m) = item.as_object() {
                    for (k, v) in m {
                        walk(item_types.field(k), k, v, prefix, set, leaves)?;
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

/// The value at `path` in `obj` (of types `types`), if there is one.
pub fn get<'a>(obj: &'a Value, types: Types, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    let mut types = types;
    let mut field = "";
    for element in path {
        let (kind, rest) = element.split_at(2);
        cur = match (kind, cur) {
            ("f:", Value::Object(m)) => {
                field = rest;
                types = types.field(rest);
                m.get(rest)?
            }
            ("k:", Value::Array(items)) => {
                let keys = types.keys(field, items)?;
                let found = items.iter().find(|i| key_element(types, &keys, i).is_ok_and(|k| k == *element))?;
                types = types.item();
                found
            }
            ("v:", Value::Array(items)) => items.iter().find(|i| value_element(i) == *element)?,
            ("i:", Value::Array(items)) => items.get(rest.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes what is at `path` in `obj` (of types `types`); false if nothing was there.
pub fn remove(obj: &mut Value, types: Types, path: &[String]) -> bool {
    let Some((last, parent_path)) = path.split_last() else { return false };
    let field = parent_path.last().and_then(|e| e.strip_prefix("f:")).unwrap_or_default().to_string();
    let Some((parent, types)) = get_mut(obj, types, parent_path) else { return false };
    let (kind, rest) = last.split_at(2);
    match (kind, parent) {
        ("f:", Value::Object(m)) => m.remove(rest).is_some(),
        ("k:", Value::Array(items)) => {
            let Some(keys) = types.keys(&field, items) else { return false };
            let before = items.len();
            items.retain(|i| !key_element(types, &keys, i).is_ok_and(|k| k == *last));
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

/// The value at `path` and its types.
fn get_mut<'a, 't>(obj: &'a mut Value, types: Types<'t>, path: &[String]) -> Option<(&'a mut Value, Types<'t>)> {
    let mut cur = obj;
    let mut types = types;
    let mut field = String::new();
    for element in path {
        let (kind, rest) = element.split_at(2);
        cur = match (kind, cur) {
            ("f:", Value::Object(m)) => {
                field = rest.to_string();
                types = types.field(rest);
                m.get_mut(rest)?
            }
            ("k:", Value::Array(items)) => {
                let keys = types.keys(&field, items)?;
                let found = items.iter_mut().find(|i| key_element(types, &keys, i).is_ok_and(|k| k == *element))?;
                types = types.item();
                found
            }
            _ => return None,
        };
    }
    Some((cur, types))
}

/// `config` merged into `live` field by field as the shapes say: structs and maps key by
/// key, keyed lists item by item (new items after the live ones), sets as unions, and
/// anything atomic replaced.
pub fn merge(live: &mut Value, config: &Value, types: Types) -> Result<(), String> {
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
        let child = types.field(k);
        match (child.shape(k, cv), &mut *lv, cv) {
            (Shape::Struct | Shape::Map, Value::Object(_), Value::Object(_)) => merge(lv, cv, child)?,
            (Shape::Keyed(keys), Value::Array(litems), Value::Array(citems)) => {
                for citem in citems {
                    let ck = key_element(child, &keys, citem)?;
                    match litems.iter_mut().find(|i| key_element(child, &keys, i).is_ok_and(|k| k == ck)) {
                        Some(litem) => merge(litem, citem, child.item())?,
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
        let (set, leaves) = fields(&deployment(), Types::BuiltIn).unwrap();
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
        assert_eq!(get(&deployment(), Types::BuiltIn, &replicas), Some(&json!(2)));
        let image: Path = ["f:spec", "f:template", "f:spec", "f:containers", r#"k:{"name":"web"}"#, "f:image"]
            .map(String::from)
            .to_vec();
        assert_eq!(get(&deployment(), Types::BuiltIn, &image), Some(&json!("busybox")));
    }

    #[test]
    fn a_keyed_item_without_its_key_is_refused() {
        let obj = json!({"spec": {"containers": [{"image": "busybox"}]}});
        let err = fields(&obj, Types::BuiltIn).unwrap_err();
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
            Types::BuiltIn,
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
        assert!(remove(&mut live, Types::BuiltIn, &side));
        assert!(!remove(&mut live, Types::BuiltIn, &side));
        assert_eq!(live["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
        assert!(!remove(&mut live, Types::BuiltIn, &["f:metadata".into(), "v:\"x\"".into()]));
        assert!(remove(&mut live, Types::BuiltIn, &["f:metadata".into(), "f:finalizers".into(), "v:\"x\"".into()]));
        assert_eq!(live["metadata"]["finalizers"], json!(["y"]));
    }

    fn widget_schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
            "containers": {"type": "array", "items": {"type": "object", "properties": {"image": {"type": "string"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "selector": {"type": "object", "x-kubernetes-map-type": "atomic", "additionalProperties": {"type": "string"}},
        }}}})
    }

    #[test]
    fn a_custom_kind_takes_its_shapes_from_its_schema() {
        let schema = widget_schema();
        let types = Types::Root(&schema);
        let obj = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "labels": {"a": "b"}},
            "spec": {"ports": [{"name": "http", "port": 80}], "containers": [{"image": "x"}], "tags": ["t"],
                "labels": {"k": "v"}, "selector": {"s": "1"}}});
        let (set, _) = fields(&obj, types).unwrap();
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:a": {}}},
                "f:spec": {
                    // Unmarked lists are atomic for a CRD, whatever the field's name.
                    "f:containers": {},
                    "f:labels": {".": {}, "f:k": {}},
                    "f:ports": {".": {}, "k:{\"name\":\"http\"}": {".": {}, "f:name": {}, "f:port": {}}},
                    "f:selector": {},
                    "f:tags": {".": {}, "v:\"t\"": {}},
                },
            })
        );
        let port: Path = ["f:spec", "f:ports", r#"k:{"name":"http"}"#, "f:port"].map(String::from).to_vec();
        assert_eq!(get(&obj, types, &port), Some(&json!(80)));

        let mut live = obj.clone();
        merge(
            &mut live,
            &json!({"spec": {"ports": [{"name": "http", "port": 8080}, {"name": "https", "port": 443}],
                "containers": [{"image": "y"}], "tags": ["u"]}}),
            types,
        )
        .unwrap();
        assert_eq!(live["spec"]["ports"], json!([{"name": "http", "port": 8080}, {"name": "https", "port": 443}]));
        assert_eq!(live["spec"]["containers"], json!([{"image": "y"}]));
        assert_eq!(live["spec"]["tags"], json!(["t", "u"]));
        let https: Path = ["f:spec", "f:ports", r#"k:{"name":"https"}"#].map(String::from).to_vec();
        assert!(remove(&mut live, types, &https));
        assert_eq!(live["spec"]["ports"], json!([{"name": "http", "port": 8080}]));
        // A keyed item must carry its key, as kube refuses it.
        let err = fields(&json!({"spec": {"ports": [{"port": 1}]}}), types).unwrap_err();
        assert!(err.contains("omits key field \"name\""), "{err}");
    }
}
