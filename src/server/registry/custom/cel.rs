//! `x-kubernetes-validations`: the CEL rules a CustomResourceDefinition's schema carries,
//! checked on every create and update of its objects as apiextensions-apiserver checks
//! them (the `cel` crate of the cel-rust project parses and evaluates).
//!
//! A rule sees the value at its place in the schema as `self` and, on an update, the value
//! that was there as `oldSelf`; a rule naming `oldSelf` (a transition rule) is checked only
//! where an old value is there to compare with: object properties, map values by key, and
//! the items of a `listType: map` list by their keys. Values reach CEL typed by the schema
//! (integer, number, string, …), not by how the JSON spelled them. The environment is
//! CEL's standard library with the strings, lists and math extensions, which Kubernetes
//! also has; Kubernetes' own libraries (quantity, url, ip, cidr, authz) are not there, and
//! a rule calling one fails when it runs, naming the function. Unlike kube, no cost budget
//! is estimated: only users who may create CRDs write rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cel::objects::{Key, Map as CelMap};
use cel::{Context, Env, Program, Value as Cel};
use serde_json::Value;

use crate::model::podspec::Problem;

/// The variables a rule may name.
const SELF: &str = "self";
const OLD_SELF: &str = "oldSelf";

/// Compiled programs, by source: a CRD's rules are compiled once, not on every write.
/// Bounded: cleared when it grows past this many.
const CACHE_LIMIT: usize = 4096;

fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // Each is registered once on a fresh environment; a failure would be a bug in the
        // crate's own declarations.
        for (name, add) in [
            ("strings", cel::extensions::strings as fn(&mut Env) -> _),
            ("lists", cel::extensions::lists),
            ("math", cel::extensions::math),
        ] {
            if let Err(e) = add(&mut env) {
                tracing::error!("CEL's {name} extension could not be registered: {e}");
            }
        }
        Arc::new(env)
    })
}

type Compiled = Result<Arc<Program>, String>;

fn compile(source: &str) -> Compiled {
    static CACHE: OnceLock<Mutex<HashMap<String, Compiled>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(source) {
        return c.clone();
    }
    let compiled = env().compile(source).map_err(|e| e.to_string()).and_then(|p| {
        // As kube's type-checking environment: only `self` and `oldSelf` are declared.
        let refs = p.references();
        match refs.variables().into_iter().find(|v| *v != SELF && *v != OLD_SELF) {
            Some(v) => Err(format!("undeclared reference to '{v}'")),
            None => Ok(Arc::new(p)),
        }
    });
    let mut cache = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(source.to_string(), compiled.clone());
    compiled
}

fn rules(schema: &Value) -> impl Iterator<Item = (usize, &Value)> {
    schema.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten().enumerate()
}

/// Whether `schema` has a rule anywhere.
pub fn has_rules(schema: &Value) -> bool {
    rules(schema).next().is_some()
        || schema.get("properties").and_then(Value::as_object).is_some_and(|p| p.values().any(has_rules))
        || schema.get("items").is_some_and(has_rules)
        || schema.get("additionalProperties").filter(|a| a.is_object()).is_some_and(has_rules)
}

/// The problems of the rules at one level of a CRD's schema (`path` names that level), as
/// kube's CRD validation words them: each rule and messageExpression must compile, a
/// reason must be one kube knows.
pub fn definition_problems(schema: &Value, path: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    let Some(list) = schema.get("x-kubernetes-validations") else { return out };
    let Some(list) = list.as_array() else {
        out.push((format!("{path}.x-kubernetes-validations"), "Invalid value: must be a list of rules".into()));
        return out;
    };
    for (i, rule) in list.iter().enumerate() {
        let at = format!("{path}.x-kubernetes-validations[{i}]");
        match rule.get("rule").and_then(Value::as_str) {
            None | Some("") => out.push((format!("{at}.rule"), "Required value: rule is not specified".into())),
            Some(source) => {
                if let Err(e) = compile(source) {
                    out.push((format!("{at}.rule"), format!("Invalid value: \"{source}\": compilation failed: {e}")));
                }
            }
        }
        if let Some(expr) = rule.get("messageExpression").and_then(Value::as_str)
            && let Err(e) = compile(expr)
        {
            out.push((
                format!("{at}.messageExpression"),
                format!("Invalid value: \"{expr}\": messageExpression compilation failed: {e}"),
            ));
        }
        if let Some(reason) = rule.get("reason").and_then(Value::as_str)
            && !REASONS.contains(&reason)
        {
            out.push((
                format!("{at}.reason"),
                format!(
                    "Unsupported value: \"{reason}\": supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\""
                ),
            ));
        }
        if let Some(fp) = rule.get("fieldPath").and_then(Value::as_str)
            && !fp.starts_with('.')
        {
            out.push((
                format!("{at}.fieldPath"),
                format!("Invalid value: \"{fp}\": fieldPath must be a JSON path starting with '.'"),
            ));
        }
    }
    out
}

const REASONS: [&str; 4] = ["FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired"];

/// The problems of `obj` (replacing `old` on an update) under the rules of `schema`.
pub fn validate(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<Problem> {
    let mut out = Vec::new();
    validate_at(schema, obj, old, "", &mut out);
    out
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_string() } else { format!("{path}.{field}") }
}

fn validate_at(s: &Value, v: &Value, old: Option<&Value>, path: &str, out: &mut Vec<Problem>) {
    if v.is_null() {
        return;
    }
    for (_, rule) in rules(s) {
        if let Some(p) = check(rule, s, v, old, path) {
            out.push(p);
        }
    }
    match v {
        Value::Object(fields) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            for (key, value) in fields {
                if let Some(child) = props.and_then(|p| p.get(key)).or(additional) {
                    let was = old.and_then(|o| o.get(key));
                    validate_at(child, value, was, &join(path, key), out);
                }
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = s.get("items") else { return };
            let keys: Vec<&str> = s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let by_keys = s.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") && !keys.is_empty();
            for (i, value) in items.iter().enumerate() {
                // Only a map list's items have an identity an old item can be found by.
                let was = old
                    .and_then(Value::as_array)
                    .filter(|_| by_keys)
                    .and_then(|olds| olds.iter().find(|o| keys.iter().all(|k| o.get(k) == value.get(k))));
                validate_at(item_schema, value, was, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// One rule against one value: None if it holds (or, as a transition rule, does not apply).
fn check(rule: &Value, s: &Value, v: &Value, old: Option<&Value>, path: &str) -> Option<Problem> {
    let source = rule.get("rule").and_then(Value::as_str)?;
    // Compiled when the CRD was written; a CRD stored before this check existed still
    // gets a clear answer.
    let program = match compile(source) {
        Ok(p) => p,
        Err(e) => return Some((shown(path), format!("Invalid value: \"{source}\": compilation failed: {e}"))),
    };
    let transition = program.references().has_variable(OLD_SELF);
    if transition && old.is_none() {
        return None;
    }
    let mut ctx = Context::with_env(env().clone());
    ctx.add_variable_from_value(SELF, to_cel(s, v));
    if let Some(o) = old {
        ctx.add_variable_from_value(OLD_SELF, to_cel(s, o));
    }
    let type_name = type_name(s, v);
    let message = match program.execute(&ctx) {
        Ok(Cel::Bool(true)) => return None,
        Ok(Cel::Bool(false)) => rule_message(rule, source, &ctx),
        Ok(other) => format!("rule did not evaluate to a boolean: {other:?}"),
        // cel-go's wording starts in lower case ("no such key: x").
        Err(e) => lower_first(&e.to_string()),
    };
    let field = match rule.get("fieldPath").and_then(Value::as_str) {
        Some(fp) => join(path, fp.trim_start_matches('.')),
        None => path.to_string(),
    };
    let body = match rule.get("reason").and_then(Value::as_str) {
        Some("FieldValueForbidden") => format!("Forbidden: {message}"),
        Some("FieldValueRequired") => format!("Required value: {message}"),
        Some("FieldValueDuplicate") => format!("Duplicate value: \"{type_name}\": {message}"),
        _ => format!("Invalid value: \"{type_name}\": {message}"),
    };
    Some((shown(&field), body))
}

/// A failed rule's message: its messageExpression's string if that evaluates to one, its
/// message, or kube's "failed rule: RULE".
fn rule_message(rule: &Value, source: &str, ctx: &Context) -> String {
    if let Some(expr) = rule.get("messageExpression").and_then(Value::as_str)
        && let Ok(p) = compile(expr)
        && let Ok(Cel::String(s)) = p.execute(ctx)
        && !s.trim().is_empty()
    {
        return s.to_string();
    }
    match rule.get("message").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => format!("failed rule: {source}"),
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

/// kube's field path for the root is a nil path, printed `<nil>`.
fn shown(path: &str) -> String {
    if path.is_empty() { "<nil>".into() } else { path.to_string() }
}

/// The schema's type of a value, as kube names it in the message.
fn type_name(s: &Value, v: &Value) -> &'static str {
    match s.get("type").and_then(Value::as_str) {
        Some("object") => "object",
        Some("array") => "array",
        Some("string") => "string",
        Some("integer") => "integer",
        Some("number") => "number",
        Some("boolean") => "boolean",
        _ => match v {
            Value::Object(_) => "object",
            Value::Array(_) => "array",
            Value::String(_) => "string",
            Value::Number(n) if n.is_f64() => "number",
            Value::Number(_) => "integer",
            Value::Bool(_) => "boolean",
            Value::Null => "null",
        },
    }
}

/// A JSON value as CEL sees it under `s`: integers are `int` (JSON has no unsigned), a
/// `number` is a `double` even when written without a fraction.
fn to_cel(s: &Value, v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => {
            let want_double = s.get("type").and_then(Value::as_str) == Some("number");
            match (n.as_i64(), want_double) {
                (Some(i), false) => Cel::Int(i),
                _ => Cel::Float(n.as_f64().unwrap_or_default()),
            }
        }
        Value::String(text) => Cel::String(Arc::new(text.clone())),
        Value::Array(items) => {
            let item = s.get("items").unwrap_or(&Value::Null);
            Cel::List(Arc::new(items.iter().map(|x| to_cel(item, x)).collect()))
        }
        Value::Object(fields) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            let map: HashMap<Key, Cel> = fields
                .iter()
                .map(|(k, x)| {
                    let child = props.and_then(|p| p.get(k)).or(additional).unwrap_or(&Value::Null);
                    (Key::String(Arc::new(k.clone())), to_cel(child, x))
                })
                .collect();
            Cel::Map(CelMap::from(map))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {
        "type": "object",
        "x-kubernetes-validations": [
            {"rule": "self.replicas <= self.maxReplicas", "message": "replicas must not exceed maxReplicas"},
            {"rule": "self.name.startsWith('w-')", "messageExpression": "'name ' + self.name + ' must start with w-'"},
            {"rule": "self.ratio < 1.0"},
        ],
        "properties": {
            "replicas": {"type": "integer"},
            "maxReplicas": {"type": "integer"},
            "ratio": {"type": "number"},
            "name": {"type": "string", "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "name is immutable", "reason": "FieldValueForbidden"}]},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer",
                    "x-kubernetes-validations": [{"rule": "self >= oldSelf", "message": "ports only grow"}]}}}},
        }}}})
    }

    #[test]
    fn rules_hold_or_name_their_field_in_kubes_words() {
        let ok = json!({"spec": {"replicas": 2, "maxReplicas": 3, "ratio": 0, "name": "w-a"}});
        assert_eq!(validate(&schema(), &ok, None), Vec::<Problem>::new());
        let bad = json!({"spec": {"replicas": 4, "maxReplicas": 3, "ratio": 1, "name": "x"}});
        assert_eq!(
            validate(&schema(), &bad, None),
            vec![
                ("spec".to_string(), "Invalid value: \"object\": replicas must not exceed maxReplicas".to_string()),
                ("spec".to_string(), "Invalid value: \"object\": name x must start with w-".to_string()),
                ("spec".to_string(), "Invalid value: \"object\": failed rule: self.ratio < 1.0".to_string()),
            ]
        );
    }

    #[test]
    fn transition_rules_apply_only_where_an_old_value_is() {
        let old = json!({"spec": {"replicas": 1, "maxReplicas": 3, "ratio": 0.5, "name": "w-a",
            "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 90}]}});
        let new = json!({"spec": {"replicas": 1, "maxReplicas": 3, "ratio": 0.5, "name": "w-b",
            "ports": [{"name": "b", "port": 80}, {"name": "a", "port": 81}, {"name": "c", "port": 1}]}});
        // On create nothing is compared.
        assert_eq!(validate(&schema(), &new, None), Vec::<Problem>::new());
        assert_eq!(
            validate(&schema(), &new, Some(&old)),
            vec![
                ("spec.name".to_string(), "Forbidden: name is immutable".to_string()),
                // Items are matched by their key, not their place; the new one has no old.
                ("spec.ports[0].port".to_string(), "Invalid value: \"integer\": ports only grow".to_string()),
            ]
        );
    }

    #[test]
    fn a_definition_with_a_rule_that_does_not_compile_or_names_another_variable_is_refused() {
        let s = json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "self.a >"}, {"rule": "other.a == 1"}, {"rule": "self.a == 1", "reason": "Nope"},
            {"rule": ""}]});
        let problems = definition_problems(&s, "spec.versions[0].schema.openAPIV3Schema");
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[0].rule",
                "spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[1].rule",
                "spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[2].reason",
                "spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[3].rule",
            ]
        );
        assert!(problems[0].1.contains("compilation failed"), "{problems:?}");
        assert!(problems[1].1.contains("undeclared reference to 'other'"), "{problems:?}");
    }

    #[test]
    fn a_rule_at_the_root_is_reported_at_kubes_nil_path_and_errors_are_problems() {
        let s = json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "self.spec.size > 0"}, {"rule": "self.spec.nope == 1"}],
            "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}});
        let p = validate(&s, &json!({"spec": {"size": 0}}), None);
        assert_eq!(
            p[0],
            ("<nil>".to_string(), "Invalid value: \"object\": failed rule: self.spec.size > 0".to_string())
        );
        assert_eq!(p[1].0, "<nil>");
        assert_eq!(p[1].1, "Invalid value: \"object\": no such key: nope");
        assert!(has_rules(&s));
        assert!(!has_rules(&json!({"type": "object"})));
    }
}
