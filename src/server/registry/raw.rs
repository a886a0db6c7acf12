//! Stored objects written out as the API answers them, without decoding each whole
//! object into a `Value` and encoding it again: a list of 10,000 pods spent most of its
//! time doing just that. Only `metadata` is decoded, to add the resourceVersion; every
//! other top-level field is copied as the store holds it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::RegistryError;
use super::resources::Resource;
use crate::server::store::KeyValue;

/// A JSON object's top-level fields in the order written, each value still raw.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Each;
        impl<'de> Visitor<'de> for Each {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    fields.push((k, v));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Each)
    }
}

/// Appends the object stored in `kv`, as [`super::objects::decode_as`] would give it for
/// `r`, in JSON. Objects that need more than the resourceVersion added (another version
/// of the kind, or not the shape we write) go the long way, through a `Value`.
pub fn write_object(r: &Resource, kv: &KeyValue, out: &mut Vec<u8>) -> Result<(), RegistryError> {
    if let Some(bytes) = spliced(r, kv)? {
        out.extend_from_slice(&bytes);
        return Ok(());
    }
    let obj = super::objects::decode_as(r, kv)?;
    serde_json::to_writer(out, &obj).map_err(|e| RegistryError::internal(e.to_string()))
}

/// The stored object with its resourceVersion, or None where only a full decode will do.
fn spliced(r: &Resource, kv: &KeyValue) -> Result<Option<Vec<u8>>, RegistryError> {
    let corrupt = |e: serde_json::Error| RegistryError::internal(format!("stored object {} is corrupt: {e}", kv.key));
    let Ok(Fields(fields)) = serde_json::from_slice::<Fields>(&kv.value) else {
        // Not an object (or not JSON): the long way names what is wrong.
        return Ok(None);
    };
    if !in_version(r, &fields) {
        return Ok(None);
    }
    let Some(meta) = fields.iter().find(|(k, _)| k == "metadata").map(|(_, v)| *v) else { return Ok(None) };
    let Ok(mut meta) = serde_json::from_str::<Map<String, Value>>(meta.get()) else { return Ok(None) };
    meta.insert("resourceVersion".into(), Value::String(kv.mod_revision.to_string()));
    let mut out = Vec::with_capacity(kv.value.len() + 32);
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k).map_err(corrupt)?;
        out.push(b':');
        if k == "metadata" {
            serde_json::to_writer(&mut out, &meta).map_err(corrupt)?;
        } else {
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    out.push(b'}');
    Ok(Some(out))
}

/// Whether an object's fields say it is in `r`'s version: as stored, no conversion to do.
fn in_version(r: &Resource, fields: &[(Cow<'_, str>, &RawValue)]) -> bool {
    let version = fields.iter().find(|(k, _)| k == "apiVersion").map(|(_, v)| v.get());
    serde_json::to_string(&r.api_version()).is_ok_and(|want| version == Some(want.as_str()))
}

/// What selectors may read of the object stored in `kv` ([`super::selectors::selectable_paths`]
/// of its kind), as [`super::objects::decode_as`] would give it for `r` but without the
/// rest: a watch with a field selector decoded every pod whole to read spec.nodeName.
/// Objects of another version (or not the shape we write) are decoded whole.
pub fn selectable(r: &Resource, kv: &KeyValue) -> Result<Value, RegistryError> {
    let paths: Vec<Vec<&str>> =
        super::selectors::selectable_paths(r.kind).iter().map(|p| p.split('.').collect()).collect();
    let projected = serde_json::from_slice::<Fields>(&kv.value).ok().and_then(|Fields(fields)| {
        in_version(r, &fields).then(|| pick(&fields, &paths.iter().map(Vec::as_slice).collect::<Vec<_>>()))
    });
    match projected {
        Some(Some(obj)) => Ok(Value::Object(obj)),
        _ => super::objects::decode_as(r, kv),
    }
}

/// The fields of an object that `paths` (each a field's path below it) lead to, decoded;
/// None if a value is not JSON.
fn pick(fields: &[(Cow<'_, str>, &RawValue)], paths: &[&[&str]]) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    for (k, raw) in fields {
        let below: Vec<&[&str]> = paths.iter().filter(|p| p.first() == Some(&k.as_ref())).map(|p| &p[1..]).collect();
        if below.is_empty() {
            continue;
        }
        let value = if below.iter().any(|p| p.is_empty()) {
            serde_json::from_str(raw.get()).ok()?
        } else {
            match serde_json::from_str::<Fields>(raw.get()) {
                Ok(Fields(inner)) => Value::Object(pick(&inner, &below)?),
                // Not an object: a selector finds nothing below it, as in the whole object.
                Err(_) => serde_json::from_str(raw.get()).ok()?,
            }
        };
        out.insert(k.to_string(), value);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::registry::resources;

    fn kv(value: &str) -> KeyValue {
        KeyValue { key: "/registry/x".into(), value: value.as_bytes().to_vec(), create_revision: 3, mod_revision: 7 }
    }

    fn written(r: &Resource, value: &str) -> Result<Vec<u8>, RegistryError> {
        let mut out = Vec::new();
        write_object(r, &kv(value), &mut out).map(|()| out)
    }

    #[test]
    fn spliced_bytes_are_what_a_full_decode_gives() {
        let pods = resources::find("", "v1", "pods").unwrap();
        for stored in [
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"a":"b"},"name":"p","namespace":"n"},"spec":{"containers":[{"image":"busybox","name":"c"}]}}"#,
            // Escapes and another object named metadata deeper in: only the top-level one changes.
            r#"{"apiVersion":"v1","data":{"metadata":{"x":"\"q\" é"}},"kind":"Pod","metadata":{},"zeta":[1,2.5,null,true]}"#,
        ] {
            let fast = written(pods, stored).unwrap();
            let slow =
                serde_json::to_vec(&crate::server::registry::objects::decode_as(pods, &kv(stored)).unwrap()).unwrap();
            assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
        }
        // Bytes another writer left in etcd stay as written, but mean the same.
        let foreign = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"\u0070"},"spec":{ "x" : "\u00e9" }}"#;
        let fast: Value = serde_json::from_slice(&written(pods, foreign).unwrap()).unwrap();
        assert_eq!(fast, crate::server::registry::objects::decode_as(pods, &kv(foreign)).unwrap());
    }

    /// Every selector answers the projection as it answers the whole object.
    #[test]
    fn a_selectable_projection_selects_as_the_whole_object() {
        use crate::server::registry::selectors::Selectors;
        let pods = resources::find("", "v1", "pods").unwrap();
        let stored = [
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"app":"web","x.io/y":"z"},"name":"p","namespace":"n","uid":"u"},"spec":{"containers":[{"image":"busybox","name":"c"}],"nodeName":"n1","restartPolicy":"Always"},"status":{"phase":"Running","podIP":"10.0.0.2"}}"#,
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"q","namespace":"n"},"spec":"odd","status":null}"#,
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"\u0071","namespace":"n"},"spec":{"nodeName":""}}"#,
        ];
        let selectors = [
            (None, Some("spec.nodeName=n1")),
            (None, Some("spec.nodeName!=")),
            (None, Some("status.phase=Running,metadata.name=p")),
            (None, Some("metadata.name=q")),
            (Some("app=web"), None),
            (Some("x.io/y in (z),!missing"), Some("status.podIP=10.0.0.2")),
            (Some("app!=web"), Some("spec.restartPolicy!=Never")),
        ];
        for value in stored {
            let whole = crate::server::registry::objects::decode_as(pods, &kv(value)).unwrap();
            let view = selectable(pods, &kv(value)).unwrap();
            assert!(view.pointer("/metadata/uid").is_none() && view.pointer("/spec/containers").is_none(), "{view}");
            for (labels, fields) in selectors {
                let s = Selectors::parse(labels, fields, "Pod").unwrap();
                assert_eq!(s.matches(&view), s.matches(&whole), "{labels:?} {fields:?} on {value}");
            }
        }
        // Events are selected by whole fields below involvedObject.
        let events = resources::find("", "v1", "events").unwrap();
        let event = r#"{"apiVersion":"v1","kind":"Event","involvedObject":{"kind":"Pod","name":"p"},"message":"m","metadata":{"name":"e"},"reason":"Scheduled"}"#;
        let view = selectable(events, &kv(event)).unwrap();
        assert_eq!(view["involvedObject"]["name"], "p");
        assert!(view.get("message").is_none());
        // Another version is converted whole, as decode_as converts it.
        let v2 = r#"{"apiVersion":"v2","kind":"Pod","metadata":{"name":"p"},"spec":{"x":1}}"#;
        assert_eq!(selectable(pods, &kv(v2)).unwrap()["spec"]["x"], 1);
        assert!(selectable(pods, &kv("[1]")).is_err());
    }

    #[test]
    fn other_versions_and_odd_shapes_take_the_long_way() {
        let pods = resources::find("", "v1", "pods").unwrap();
        assert!(spliced(pods, &kv(r#"{"apiVersion":"v2","kind":"Pod","metadata":{}}"#)).unwrap().is_none());
        assert!(spliced(pods, &kv(r#"{"apiVersion":"v1","kind":"Pod"}"#)).unwrap().is_none());
        assert!(spliced(pods, &kv(r#"{"apiVersion":"v1","metadata":[]}"#)).unwrap().is_none());
        // The long way refuses what is not an object, naming the key.
        let err = written(pods, "[1]").unwrap_err().to_string();
        assert!(err.contains("/registry/x"), "{err}");
        let err = written(pods, "{nope").unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }
}
