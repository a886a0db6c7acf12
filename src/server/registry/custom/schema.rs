//! A CustomResourceDefinition version's structural schema (`openAPIV3Schema`) at work on
//! the objects of that version, as apiextensions-apiserver uses it: unknown fields pruned,
//! `default`s filled in, and the object checked against types, required fields, enums,
//! bounds, lengths and patterns, each problem worded as kube's field errors.
//!
//! The schema stays the JSON the CRD holds; each step walks it beside the object. Fields
//! the walk meets without a schema (below `x-kubernetes-preserve-unknown-fields`) are left
//! as they are. CEL rules (`x-kubernetes-validations`) are [`super::cel`]'s.

use serde_json::{Map, Value};

use crate::model::podspec::Problem;

/// The fields of every object that the schema does not describe and that are never
/// pruned: the type and the metadata (checked as ObjectMeta, not by the schema).
const ROOT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn preserves_unknown(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_string() } else { format!("{path}.{field}") }
}

/// Removes what `schema` does not describe from `obj`; the paths of what went, in order.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut gone = Vec::new();
    prune_at(schema, obj, "", true, &mut gone);
    gone
}

fn prune_at(s: &Value, v: &mut Value, path: &str, root: bool, gone: &mut Vec<String>) {
    match v {
        Value::Object(fields) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            let embedded = s.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true);
            let keep_unknown = preserves_unknown(s)
                || additional.is_some()
                || s.get("additionalProperties") == Some(&Value::Bool(true));
            let keys: Vec<String> = fields.keys().cloned().collect();
            for key in keys {
                let here = join(path, &key);
                if (root || embedded) && ROOT_FIELDS.contains(&key.as_str()) {
                    continue;
                }
                match props.and_then(|p| p.get(&key)).or(additional) {
                    Some(child) => {
                        if let Some(value) = fields.get_mut(&key) {
                            prune_at(child, value, &here, false, gone);
                        }
                    }
                    None if keep_unknown => {}
                    None => {
                        fields.remove(&key);
                        gone.push(here);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = s.get("items") {
                for (i, value) in items.iter_mut().enumerate() {
                    prune_at(item, value, &format!("{path}[{i}]"), false, gone);
                }
            }
        }
        _ => {}
    }
}

/// Fills in the `default` of every property `obj` leaves out, where its parent is there.
pub fn default(schema: &Value, obj: &mut Value) {
    match obj {
        Value::Object(fields) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, child) in props {
                    if !fields.contains_key(key)
                        && let Some(d) = child.get("default")
                    {
                        fields.insert(key.clone(), d.clone());
                    }
                    if let Some(value) = fields.get_mut(key) {
                        default(child, value);
                    }
                }
            } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for value in fields.values_mut() {
                    default(additional, value);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for value in items {
                    default(item, value);
                }
            }
        }
        _ => {}
    }
}

/// The problems of `obj` under `schema`, each (field path, kube's message).
pub fn validate(schema: &Value, obj: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    // The root's own type needs no check (it is an object by now); metadata is ObjectMeta's.
    let mut root = obj.clone();
    if let Some(m) = root.as_object_mut() {
        for f in ROOT_FIELDS {
            m.remove(f);
        }
    }
    validate_at(schema, &root, "", &mut out);
    out
}

/// How kube's errors quote a value: strings in quotes, the rest as JSON.
fn quoted(v: &Value) -> String {
    v.to_string()
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_fits(want: &str, v: &Value) -> bool {
    match (want, v) {
        ("object", Value::Object(_)) | ("array", Value::Array(_)) | ("string", Value::String(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn validate_at(s: &Value, v: &Value, path: &str, out: &mut Vec<Problem>) {
    let shown = if path.is_empty() { "body".to_string() } else { path.to_string() };
    let int_or_string = s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if v.is_null() {
        if s.get("nullable").and_then(Value::as_bool) == Some(true) || s.get("type").is_none() {
            return;
        }
        let want = s["type"].as_str().unwrap_or_default();
        out.push((shown.clone(), format!("Invalid value: \"null\": {shown} in body must be of type {want}: \"null\"")));
        return;
    }
    if int_or_string {
        if !matches!(v, Value::String(_)) && !type_fits("integer", v) {
            out.push((
                shown.clone(),
                format!(
                    "Invalid value: \"{}\": {shown} in body must be of type integer,string: \"{}\"",
                    type_of(v),
                    type_of(v)
                ),
            ));
            return;
        }
    } else if let Some(want) = s.get("type").and_then(Value::as_str)
        && !type_fits(want, v)
    {
        out.push((
            shown.clone(),
            format!("Invalid value: \"{}\": {shown} in body must be of type {want}: \"{}\"", type_of(v), type_of(v)),
        ));
        return;
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(quoted).collect();
        out.push((shown.clone(), format!("Unsupported value: {}: supported values: {}", quoted(v), list.join(", "))));
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            let bound = |key: &str| s.get(key).and_then(Value::as_f64);
            let exclusive = |key: &str| s.get(key).and_then(Value::as_bool) == Some(true);
            if let Some(min) = bound("minimum") {
                let (bad, words) = if exclusive("exclusiveMinimum") {
                    (x <= min, "greater than")
                } else {
                    (x < min, "greater than or equal to")
                };
                if bad {
                    out.push((
                        shown.clone(),
                        format!("Invalid value: {n}: {shown} in body should be {words} {}", number(min)),
                    ));
                }
            }
            if let Some(max) = bound("maximum") {
                let (bad, words) = if exclusive("exclusiveMaximum") {
                    (x >= max, "less than")
                } else {
                    (x > max, "less than or equal to")
                };
                if bad {
                    out.push((
                        shown.clone(),
                        format!("Invalid value: {n}: {shown} in body should be {words} {}", number(max)),
                    ));
                }
            }
            if let Some(m) = bound("multipleOf")
                && m > 0.0
                && (x / m).fract() != 0.0
            {
                out.push((
                    shown.clone(),
                    format!("Invalid value: {n}: {shown} in body should be a multiple of {}", number(m)),
                ));
            }
        }
        Value::String(text) => {
            let chars = text.chars().count() as u64;
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
                && chars > max
            {
                out.push((shown.clone(), format!("Too long: may not be more than {max} bytes")));
            }
            if let Some(min) = s.get("minLength").and_then(Value::as_u64)
                && chars < min
            {
                out.push((
                    shown.clone(),
                    format!("Invalid value: {}: {shown} in body should be at least {min} chars long", quoted(v)),
                ));
            }
            if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(text) => out.push((
                        shown.clone(),
                        format!("Invalid value: {}: {shown} in body should match '{pattern}'", quoted(v)),
                    )),
                    Ok(_) => {}
                    Err(_) => out.push((
                        shown.clone(),
                        format!("Invalid value: {}: the schema's pattern '{pattern}' does not compile", quoted(v)),
                    )),
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                out.push((shown.clone(), format!("Too many: {}: must have at most {max} items", items.len())));
            }
            if let Some(min) = s.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                out.push((
                    shown.clone(),
                    format!("Invalid value: {}: {shown} in body should have at least {min} items", items.len()),
                ));
            }
            if let Some(item) = s.get("items") {
                for (i, value) in items.iter().enumerate() {
                    validate_at(item, value, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(fields) => object(s, fields, path, &shown, out),
        _ => {}
    }
}

fn object(s: &Value, fields: &Map<String, Value>, path: &str, shown: &str, out: &mut Vec<Problem>) {
    for req in s.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !fields.contains_key(req) {
            out.push((join(path, req), "Required value".into()));
        }
    }
    if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
        && fields.len() as u64 > max
    {
        out.push((shown.to_string(), format!("Too many: {}: must have at most {max} items", fields.len())));
    }
    if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
        && (fields.len() as u64) < min
    {
        out.push((
            shown.to_string(),
            format!("Invalid value: {}: {shown} in body should have at least {min} properties", fields.len()),
        ));
    }
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties").filter(|a| a.is_object());
    for (key, value) in fields {
        if let Some(child) = props.and_then(|p| p.get(key)).or(additional) {
            validate_at(child, value, &join(path, key), out);
        }
    }
}

/// A bound as kube prints it: 10, not 10.0.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { x.to_string() }
}

/// Whether `schema` is structural enough to serve: every level has a type (or says it
/// preserves unknown fields or is int-or-string); the problems otherwise, as kube's CRD
/// validation words them.
pub fn structural_problems(schema: &Value, path: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    structural_at(schema, path, true, &mut out);
    out
}

fn structural_at(s: &Value, path: &str, root: bool, out: &mut Vec<Problem>) {
    let Some(m) = s.as_object() else {
        out.push((path.to_string(), "Invalid value: must be a JSON object".into()));
        return;
    };
    let typed = m.get("type").and_then(Value::as_str).is_some_and(|t| !t.is_empty());
    let exempt = preserves_unknown(s) || m.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if !typed && !exempt {
        out.push((format!("{path}.type"), "Required value: must not be empty for specified object fields".into()));
    }
    if root && m.get("type").and_then(Value::as_str).is_some_and(|t| t != "object") {
        out.push((format!("{path}.type"), "Invalid value: must be object at the root".into()));
    }
    if let Some(t) = m.get("type").and_then(Value::as_str)
        && !["object", "array", "string", "integer", "number", "boolean"].contains(&t)
    {
        out.push((
            format!("{path}.type"),
            format!("Unsupported value: \"{t}\": supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\""),
        ));
    }
    if m.get("type").and_then(Value::as_str) == Some("array") && m.get("items").is_none() {
        out.push((format!("{path}.items"), "Required value: must be specified".into()));
    }
    if m.get("properties").is_some() && m.get("additionalProperties").is_some_and(|a| a.is_object()) {
        out.push((
            format!("{path}.additionalProperties"),
            "Forbidden: additionalProperties and properties are mutual exclusive".into(),
        ));
    }
    if let Some(pattern) = m.get("pattern").and_then(Value::as_str)
        && regex::Regex::new(pattern).is_err()
    {
        out.push((
            format!("{path}.pattern"),
            format!("Invalid value: \"{pattern}\": must be a valid regular expression"),
        ));
    }
    out.extend(super::cel::definition_problems(s, path));
    for (key, child) in m.get("properties").and_then(Value::as_object).into_iter().flatten() {
        structural_at(child, &format!("{path}.properties[{key}]"), false, out);
    }
    if let Some(items) = m.get("items") {
        structural_at(items, &format!("{path}.items"), false, out);
    }
    if let Some(additional) = m.get("additionalProperties").filter(|a| a.is_object()) {
        structural_at(additional, &format!("{path}.additionalProperties"), false, out);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "port": {"x-kubernetes-int-or-string": true},
                "nested": {"type": "object", "properties": {"on": {"type": "boolean", "default": true}}}
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
        }})
    }

    #[test]
    fn unknown_fields_are_pruned_but_not_below_preserve_or_maps() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"}, "extra": 1,
            "spec": {"size": 1, "bogus": true, "labels": {"any": "thing"}, "free": {"deep": {"x": 1}},
                     "nested": {"gone": 1}}});
        let gone = prune(&schema(), &mut o);
        assert_eq!(gone, vec!["extra", "spec.bogus", "spec.nested.gone"]);
        assert_eq!(o["spec"]["free"]["deep"]["x"], 1);
        assert_eq!(o["spec"]["labels"]["any"], "thing");
        assert_eq!(o["metadata"]["name"], "a");
    }

    #[test]
    fn defaults_fill_what_is_missing_where_the_parent_is_there() {
        let mut o = json!({"spec": {"size": 2, "nested": {}}});
        default(&schema(), &mut o);
        assert_eq!(o["spec"]["color"], "red");
        assert_eq!(o["spec"]["nested"]["on"], true);
        assert!(o.get("status").is_none());
        let mut o = json!({"spec": {"size": 2, "color": "blue"}});
        default(&schema(), &mut o);
        assert_eq!(o["spec"]["color"], "blue");
    }

    #[test]
    fn problems_are_worded_as_kubes() {
        let o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"size": "big", "color": "pink", "name": "TOOLONG", "tags": ["a", "b", "c"], "port": true,
                     "labels": {"n": 1}}});
        let p = validate(&schema(), &o);
        let has = |path: &str, msg: &str| p.iter().any(|(f, m)| f == path && m == msg);
        assert!(
            has("spec.size", "Invalid value: \"string\": spec.size in body must be of type integer: \"string\""),
            "{p:?}"
        );
        assert!(has("spec.color", "Unsupported value: \"pink\": supported values: \"red\", \"blue\""), "{p:?}");
        assert!(has("spec.name", "Too long: may not be more than 5 bytes"), "{p:?}");
        assert!(has("spec.name", "Invalid value: \"TOOLONG\": spec.name in body should match '^[a-z]+$'"), "{p:?}");
        assert!(has("spec.tags", "Too many: 3: must have at most 2 items"), "{p:?}");
        assert!(
            has(
                "spec.port",
                "Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\""
            ),
            "{p:?}"
        );
        assert!(
            has(
                "spec.labels.n",
                "Invalid value: \"integer\": spec.labels.n in body must be of type string: \"integer\""
            ),
            "{p:?}"
        );
        let p = validate(&schema(), &json!({"spec": {"size": 0}}));
        assert_eq!(
            p,
            vec![(
                "spec.size".to_string(),
                "Invalid value: 0: spec.size in body should be greater than or equal to 1".to_string()
            )]
        );
        let p = validate(&schema(), &json!({"spec": {}}));
        assert_eq!(p, vec![("spec.size".to_string(), "Required value".to_string())]);
        assert!(validate(&schema(), &json!({"spec": {"size": 3, "port": "http"}})).is_empty());
    }

    #[test]
    fn a_schema_without_types_is_not_structural() {
        assert!(structural_problems(&schema(), "schema.openAPIV3Schema").is_empty());
        let p = structural_problems(&json!({"type": "object", "properties": {"spec": {"properties": {}}}}), "s");
        assert_eq!(
            p,
            vec![(
                "s.properties[spec].type".to_string(),
                "Required value: must not be empty for specified object fields".to_string()
            )]
        );
        let p = structural_problems(&json!({"type": "object", "properties": {"l": {"type": "array"}}}), "s");
        assert_eq!(p[0].0, "s.properties[l].items");
    }
}
