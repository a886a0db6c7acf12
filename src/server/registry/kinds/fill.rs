//! Helpers for defaulting JSON objects: set what is absent, reach into what may be missing.

use serde_json::{Value, json};

/// Sets `obj[key]` to `value` if it is absent or null.
pub fn or_set(obj: &mut Value, key: &str, value: Value) {
    if let Some(o) = obj.as_object_mut() {
        let slot = o.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// `obj[key]`, made an object if it is absent or null (None if it is something else,
/// which the schema check refuses).
pub fn object<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    or_set(obj, key, json!({}));
    obj.get_mut(key).filter(|v| v.is_object())
}

/// The elements of the array `obj[key]`, if it is one.
pub fn each<'a>(obj: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    obj.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten()
}

/// The spec of `obj`, made an object if absent.
pub fn spec(obj: &mut Value) -> Option<&mut Value> {
    object(obj, "spec")
}
