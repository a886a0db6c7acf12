//! Kubernetes objects decoded as their k8s-openapi types: a type error names the field
//! (serde_path_to_error), and fields the schema does not know are found by comparing the
//! input with the typed value written back (what the API server calls strict decoding).

use serde_json::Value;

/// Decodes `v` as `T`: the typed value and the unknown fields (dotted paths), or the path
/// of the first field that does not fit and the error.
pub fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<(T, Vec<String>), (String, String)> {
    let typed: T = serde_path_to_error::deserialize(v)
        .map_err(|e| (e.path().to_string(), format!("Invalid value: {}", e.inner())))?;
    let again = serde_json::to_value(&typed).unwrap_or(Value::Null);
    let mut unknown = Vec::new();
    unknown_in(v, &again, "", &mut unknown);
    Ok((typed, unknown))
}

/// The fields (dotted paths) of `input` that `typed` lacks: fields the schema does not
/// know. Nulls are skipped (a typed None serialises to nothing).
fn unknown_in(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match t.get(k) {
                    None if !v.is_null() => out.push(p),
                    None => {}
                    Some(tv) => unknown_in(v, tv, &p, out),
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (a, b)) in i.iter().zip(t).enumerate() {
                unknown_in(a, b, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}
