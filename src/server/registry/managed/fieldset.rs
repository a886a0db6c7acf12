//! Sets of field paths, as structured-merge-diff's fieldpath.Set, and their `FieldsV1`
//! encoding (the `fieldsV1` of a managedFields entry).
//!
//! A path is a list of elements, each already in its FieldsV1 spelling: `f:NAME` (a field
//! of a struct or a key of a map), `k:{"name":"web"}` (the item of a keyed list with those
//! key fields), `v:"finalizer"` (a value of a set), `i:3` (an item of a list by position).
//! Kept as text, paths sort and compare as the encoding does.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

pub type Path = Vec<String>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<Path>);

impl FieldSet {
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    pub fn insert(&mut self, path: Path) {
        self.0.insert(path);
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.0.contains(path)
    }

    pub fn remove(&mut self, path: &Path) -> bool {
        self.0.remove(path)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.0.iter()
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// Whether some path of the set lies strictly below `path`.
    pub fn has_descendant(&self, path: &Path) -> bool {
        self.0.range(path.clone()..).skip_while(|p| *p == path).take_while(|p| p.starts_with(path)).next().is_some()
    }

    /// The set as FieldsV1: a tree of objects, one key per element; `{}` for a path with
    /// nothing below it, and `".": {}` where a path of the set also has paths below it.
    pub fn to_fields_v1(&self) -> Value {
        #[derive(Default)]
        struct Node {
            member: bool,
            children: BTreeMap<String, Node>,
        }
        fn encode(node: &Node) -> Value {
            let mut m = Map::new();
            if node.member && !node.children.is_empty() {
                m.insert(".".into(), Value::Object(Map::new()));
            }
            for (k, child) in &node.children {
                m.insert(k.clone(), encode(child));
            }
            Value::Object(m)
        }
        let mut root = Node::default();
        for path in &self.0 {
            let mut node = &mut root;
            for element in path {
                node = node.children.entry(element.clone()).or_default();
            }
            node.member = true;
        }
        encode(&root)
    }

    /// Reads FieldsV1; what is not one is named in the error.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        fn decode(v: &Value, prefix: &mut Path, out: &mut FieldSet) -> Result<(), String> {
            let Value::Object(m) = v else {
                return Err(format!("fieldsV1 at {:?}: want an object, got {v}", prefix.join(".")));
            };
            if (m.is_empty() || m.contains_key(".")) && !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            for (k, child) in m {
                if k == "." {
                    continue;
                }
                if !(k.starts_with("f:") || k.starts_with("k:") || k.starts_with("v:") || k.starts_with("i:")) {
                    return Err(format!("fieldsV1: {k:?} is not a path element (f:, k:, v: or i:)"));
                }
                prefix.push(k.clone());
                decode(child, prefix, out)?;
                prefix.pop();
            }
            Ok(())
        }
        let mut out = FieldSet::new();
        decode(v, &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    /// A path as kube writes it in a conflict: `.spec.replicas`,
    /// `.spec.containers[name="web"].image`, `.metadata.finalizers[="x"]`.
    pub fn describe(path: &Path) -> String {
        let mut out = String::new();
        for element in path {
            let (kind, rest) = element.split_at(2);
            match kind {
                "f:" => {
                    out.push('.');
                    out.push_str(rest);
                }
                "k:" => {
                    let keys: Map<String, Value> = serde_json::from_str(rest).unwrap_or_default();
                    let inner: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    out.push_str(&format!("[{}]", inner.join(",")));
                }
                "v:" => out.push_str(&format!("[={rest}]")),
                _ => out.push_str(&format!("[{rest}]")),
            }
        }
        out
    }
}

impl FromIterator<Path> for FieldSet {
    fn from_iter<I: IntoIterator<Item = Path>>(iter: I) -> FieldSet {
        FieldSet(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(elements: &[&str]) -> Path {
        elements.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trips_with_dots_where_a_member_has_children() {
        let mut s = FieldSet::new();
        s.insert(p(&["f:metadata", "f:labels"]));
        s.insert(p(&["f:metadata", "f:labels", "f:app"]));
        s.insert(p(&["f:spec", "f:replicas"]));
        s.insert(p(&["f:spec", "f:containers", r#"k:{"name":"web"}"#]));
        s.insert(p(&["f:spec", "f:containers", r#"k:{"name":"web"}"#, "f:image"]));
        let v = s.to_fields_v1();
        assert_eq!(
            v,
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}, "f:replicas": {}},
            })
        );
        assert_eq!(FieldSet::from_fields_v1(&v).unwrap(), s);
    }

    #[test]
    fn fields_v1_that_is_not_one_is_refused() {
        assert!(FieldSet::from_fields_v1(&json!({"spec": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:spec": 3})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn descendants_and_descriptions() {
        let s: FieldSet = [p(&["f:a", "f:b"]), p(&["f:c"])].into_iter().collect();
        assert!(s.has_descendant(&p(&["f:a"])));
        assert!(!s.has_descendant(&p(&["f:a", "f:b"])));
        assert!(!s.has_descendant(&p(&["f:c"])));
        assert_eq!(FieldSet::describe(&p(&["f:spec", "f:replicas"])), ".spec.replicas");
        assert_eq!(
            FieldSet::describe(&p(&["f:spec", "f:containers", r#"k:{"name":"web"}"#, "f:image"])),
            r#".spec.containers[name="web"].image"#
        );
    }
}
