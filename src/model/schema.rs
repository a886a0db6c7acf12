//! Kubernetes objects decoded as their k8s-openapi types: the fields the schema does not
//! know are those the typed decoding skips (serde_ignored reports each with its path), and
//! a type error names the field (serde_path_to_error). This is what the API server calls
//! strict decoding.

use serde_ignored::Path;
use serde_json::Value;

/// Decodes `v` as `T`: the typed value and the unknown fields (dotted paths), or the path
/// of the first field that does not fit and the error.
pub fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> Result<(T, Vec<String>), (String, String)> {
    let mut unknown = Vec::new();
    match serde_ignored::deserialize::<_, _, T>(v, |path| unknown.push(dotted(&path))) {
        Ok(typed) => Ok((typed, unknown)),
        // Tracking the path costs a String per key of the object, so it is only done to
        // name the field of a decoding that failed: once more, the same way.
        Err(first) => match serde_path_to_error::deserialize::<_, T>(v) {
            Err(e) => Err((e.path().to_string(), format!("Invalid value: {}", e.inner()))),
            Ok(_) => Err((String::new(), format!("Invalid value: {first}"))),
        },
    }
}

/// A skipped field's path as the API server writes it: `spec.containers[0].imagee`.
fn dotted(path: &Path) -> String {
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        Path::Map { parent, key } => match dotted(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1"}}}]}})
    }

    #[test]
    fn unknown_fields_are_named_by_their_dotted_paths() {
        let mut v = pod();
        v["bogus"] = json!(1);
        v["metadata"]["labelz"] = json!({});
        v["spec"]["containers"][0]["imagee"] = json!("x");
        v["spec"]["nope"] = Value::Null;
        let (typed, mut unknown) = decode::<Pod>(&v).unwrap();
        unknown.sort();
        // A null unknown field is unknown too, as kube-apiserver's strict decoding has it.
        assert_eq!(unknown, ["bogus", "metadata.labelz", "spec.containers[0].imagee", "spec.nope"]);
        assert_eq!(typed.metadata.name.as_deref(), Some("p"));
    }

    #[test]
    fn known_fields_and_free_form_maps_are_not_unknown() {
        // Labels and requests are maps: any key is known. A known field set to null is
        // as good as absent.
        let mut v = pod();
        v["metadata"]["labels"]["any-key"] = json!("v");
        v["metadata"]["creationTimestamp"] = Value::Null;
        v["status"] = json!({"phase": "Running"});
        assert_eq!(decode::<Pod>(&v).unwrap().1, Vec::<String>::new());
    }

    #[test]
    fn a_type_error_names_its_field() {
        let mut v = pod();
        v["spec"]["containers"][0]["ports"] = json!([{"containerPort": "eighty"}]);
        let (field, message) = decode::<Pod>(&v).unwrap_err();
        assert_eq!(field, "spec.containers[0].ports[0].containerPort");
        assert!(message.starts_with("Invalid value: invalid type: string \"eighty\""), "{message}");
    }
}
