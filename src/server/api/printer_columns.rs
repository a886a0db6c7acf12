//! The Table rows of a custom kind: the Name column, then the CRD version's
//! additionalPrinterColumns (or Age when it has none), each cell read with its JSONPath as
//! apiextensions-apiserver's table convertor reads it.

use serde_json::{Value, json};

use crate::model::time::{human_duration, parse_rfc3339};
use crate::server::registry::custom::Custom;

const NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

pub fn definitions(c: &Custom) -> Vec<Value> {
    let mut out = vec![json!({"name": "Name", "type": "string", "format": "name", "description": NAME, "priority": 0})];
    if c.columns.is_empty() {
        out.push(json!({"name": "Age", "type": "date", "format": "", "description": "", "priority": 0}));
    }
    for col in &c.columns {
        out.push(json!({"name": col.name, "type": col.kind, "format": col.format, "description": col.description, "priority": col.priority}));
    }
    out
}

pub fn cells(c: &Custom, o: &Value, now: i64) -> Vec<Value> {
    let mut out = vec![o["metadata"]["name"].clone()];
    if c.columns.is_empty() {
        out.push(json!(age(o.pointer("/metadata/creationTimestamp"), now)));
    }
    for col in &c.columns {
        out.push(cell(&col.json_path, &col.kind, o, now));
    }
    out
}

fn age(v: Option<&Value>, now: i64) -> String {
    v.and_then(Value::as_str).and_then(parse_rfc3339).map_or("<unknown>".into(), |t| human_duration(now - t))
}

/// One cell: null where the path finds nothing (kubectl prints `<none>`), the value for a
/// single scalar, the values joined by commas for several, a date column as an age.
fn cell(path: &str, kind: &str, o: &Value, now: i64) -> Value {
    let query = format!("${}", path.trim_start_matches('$'));
    let Ok(jsonpath) = jsonpath_rust::JsonPath::try_from(query.as_str()) else { return Value::Null };
    let found: Vec<Value> = match jsonpath.find(o) {
        Value::Array(items) => items.into_iter().filter(|v| !v.is_null()).collect(),
        Value::Null => Vec::new(),
        one => vec![one],
    };
    match (found.as_slice(), kind) {
        ([], _) => Value::Null,
        ([one], "date") => json!(age(Some(one), now)),
        ([one @ (Value::String(_) | Value::Number(_) | Value::Bool(_))], _) => one.clone(),
        (many, _) => json!(
            many.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::registry::custom::Column;

    fn custom(columns: Vec<Column>) -> Custom {
        Custom {
            definition: "widgets.example.com".into(),
            schema: None,
            status: false,
            scale: None,
            columns,
            categories: &[],
            storage_version: "v1",
            terminating: false,
        }
    }

    fn column(name: &str, kind: &str, path: &str) -> Column {
        Column {
            name: name.into(),
            kind: kind.into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: path.into(),
        }
    }

    #[test]
    fn columns_read_their_paths() {
        let c = custom(vec![
            column("Size", "integer", ".spec.size"),
            column("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status"),
            column("Missing", "string", ".spec.nothing"),
            column("Tags", "string", ".spec.tags[*]"),
        ]);
        let o = json!({"metadata": {"name": "w"}, "spec": {"size": 3, "tags": ["a", "b"]},
            "status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(cells(&c, &o, 0), vec![json!("w"), json!(3), json!("True"), Value::Null, json!("a,b")]);
        assert_eq!(definitions(&c).len(), 5);
    }

    #[test]
    fn without_columns_a_kind_shows_its_age() {
        let c = custom(Vec::new());
        let o = json!({"metadata": {"name": "w", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        let now = parse_rfc3339("2026-01-01T00:05:00Z").unwrap();
        assert_eq!(cells(&c, &o, now), vec![json!("w"), json!("5m")]);
    }
}
