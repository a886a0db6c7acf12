//! The reverse of the decoder: a JSON object written as Kubernetes' protobuf, by the same
//! generated message table, for clients that ask for `application/vnd.kubernetes.protobuf`
//! answers (client-go's protobuf clients). Fields are written in tag order, scalars of
//! repeated fields unpacked and map entries sorted by key, as go-to-protobuf's generated
//! marshallers write them.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{MAGIC, MAX_DEPTH, Message, Ty, lookup};

/// Wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, tag: u64, wire: u64) {
    varint(out, (tag << 3) | wire);
}

fn len_field(out: &mut Vec<u8>, tag: u64, bytes: &[u8]) {
    key(out, tag, LEN);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn int_field(out: &mut Vec<u8>, tag: u64, v: i64) {
    key(out, tag, VARINT);
    // int32 and int64 alike: a negative value is sign-extended to ten bytes.
    varint(out, v as u64);
}

/// A JSON number that is an integer (`3`, or `3.0` as some clients write it).
fn integer(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_u64().map(|u| u as i64))
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.3e18).map(|f| f as i64))
}

/// The message a kind is written as: the kind's own in its group-version. Only the
/// Status of errors comes from meta/v1 whatever the path: a custom kind named like a meta
/// kind must not be taken for it.
pub(super) fn message_for(api_version: &str, kind: &str) -> Option<&'static Message> {
    let found = super::message_for(api_version, kind)?;
    let meta = found.name.starts_with("apimachinery.pkg.apis.meta.v1.");
    (!meta || kind == "Status" || api_version == "meta.k8s.io/v1").then_some(found)
}

/// An object (with apiVersion and kind) in the `k8s\0` + runtime.Unknown envelope; an
/// error if its kind has no message or a field does not fit its type.
pub fn encode(obj: &Value) -> Result<Vec<u8>, String> {
    let api_version = obj["apiVersion"].as_str().ok_or("the object has no apiVersion")?;
    let kind = obj["kind"].as_str().ok_or("the object has no kind")?;
    let m = message_for(api_version, kind).ok_or_else(|| format!("no protobuf message for {api_version} {kind}"))?;
    let Value::Object(fields) = obj else { return Err("not an object".into()) };
    let raw = message(fields, m, 0)?;
    let mut type_meta = Vec::new();
    len_field(&mut type_meta, 1, api_version.as_bytes());
    len_field(&mut type_meta, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    len_field(&mut out, 1, &type_meta);
    len_field(&mut out, 2, &raw);
    // contentEncoding and contentType: empty, written as Go writes every string.
    len_field(&mut out, 3, b"");
    len_field(&mut out, 4, b"");
    Ok(out)
}

/// A watch event as kube-apiserver's protobuf stream frames it: a big-endian u32 length,
/// then a meta/v1 WatchEvent whose object is the enveloped object's bytes.
pub fn watch_frame(kind: &str, obj: &Value) -> Result<Vec<u8>, String> {
    let mut raw_extension = Vec::new();
    len_field(&mut raw_extension, 1, &encode(obj)?);
    let mut event = Vec::new();
    len_field(&mut event, 1, kind.as_bytes());
    len_field(&mut event, 2, &raw_extension);
    let len = u32::try_from(event.len()).map_err(|_| "a watch event larger than 4 GiB")?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&event);
    Ok(out)
}

pub(super) fn message(obj: &Map<String, Value>, m: &Message, depth: usize) -> Result<Vec<u8>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("objects nest deeper than {MAX_DEPTH}"));
    }
    let mut fields: Vec<_> = m.fields.iter().collect();
    fields.sort_by_key(|f| f.tag);
    let mut out = Vec::new();
    for f in fields {
        let at = |e: String| format!("{}.{}: {e}", m.name, f.json);
        if f.inline {
            // An embedded Go struct: its fields are this object's; Go writes it always.
            let Ty::Message(name) = f.ty else { return Err(at("inline but not a message".into())) };
            let inner = lookup(name).ok_or_else(|| at(format!("no message {name}")))?;
            len_field(&mut out, f.tag, &message(obj, inner, depth + 1).map_err(at)?);
            continue;
        }
        let v = match obj.get(f.json) {
            None | Some(Value::Null) => continue,
            Some(v) => v,
        };
        match (&f.ty, f.repeated) {
            (Ty::Map(of), _) => {
                let Value::Object(map) = v else { return Err(at("not an object".into())) };
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (k, item) in entries {
                    let mut entry = Vec::new();
                    len_field(&mut entry, 1, k.as_bytes());
                    if !item.is_null() {
                        value(&mut entry, 2, of, item, depth).map_err(|e| at(format!("[{k}]: {e}")))?;
                    }
                    len_field(&mut out, f.tag, &entry);
                }
            }
            (ty, true) => {
                let Value::Array(items) = v else { return Err(at("not a list".into())) };
                for item in items.iter().filter(|i| !i.is_null()) {
                    value(&mut out, f.tag, ty, item, depth).map_err(at)?;
                }
            }
            (ty, false) => value(&mut out, f.tag, ty, v, depth).map_err(at)?,
        }
    }
    Ok(out)
}

/// One value of type `ty` as field `tag`.
fn value(out: &mut Vec<u8>, tag: u64, ty: &Ty, v: &Value, depth: usize) -> Result<(), String> {
    match (ty, v) {
        (Ty::Str, Value::String(s)) => len_field(out, tag, s.as_bytes()),
        (Ty::Bytes, Value::String(s)) => {
            let b = base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("not base64: {e}"))?;
            len_field(out, tag, &b);
        }
        (Ty::Bool, Value::Bool(b)) => int_field(out, tag, i64::from(*b)),
        (Ty::Int, v) => int_field(out, tag, integer(v).ok_or_else(|| format!("{v} is not an integer"))?),
        (Ty::Double, v) => {
            let f = v.as_f64().ok_or_else(|| format!("{v} is not a number"))?;
            key(out, tag, FIXED64);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        (Ty::Message(name), v) => {
            let m = lookup(name).ok_or_else(|| format!("no message {name}"))?;
            let bytes = match special(m.name, v, depth)? {
                Some(b) => b,
                None => {
                    let Value::Object(fields) = v else { return Err(format!("{v} is not an object")) };
                    message(fields, m, depth + 1)?
                }
            };
            len_field(out, tag, &bytes);
        }
        (ty, v) => return Err(format!("{v} is not a {ty:?}")),
    }
    Ok(())
}

/// The messages whose JSON is not an object of their fields (the decoder's `special`, in
/// reverse): Some(their bytes), or None for an ordinary message.
fn special(name: &str, v: &Value, depth: usize) -> Result<Option<Vec<u8>>, String> {
    let short = name.rsplit('.').next().unwrap_or(name);
    let mut out = Vec::new();
    let props = || {
        lookup("apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps").ok_or("no JSONSchemaProps message")
    };
    let schema = |v: &Value| -> Result<Vec<u8>, String> {
        let Value::Object(fields) = v else { return Err(format!("{v} is not a schema")) };
        message(fields, props()?, depth + 1)
    };
    match name {
        "apimachinery.pkg.util.intstr.IntOrString" => match v {
            // Go writes all three fields: the type, the int and the string.
            Value::String(s) => {
                int_field(&mut out, 1, 1);
                int_field(&mut out, 2, 0);
                len_field(&mut out, 3, s.as_bytes());
            }
            v => {
                int_field(&mut out, 1, 0);
                int_field(&mut out, 2, integer(v).ok_or_else(|| format!("{v} is not an int or a string"))?);
                len_field(&mut out, 3, b"");
            }
        },
        "apimachinery.pkg.api.resource.Quantity" => match v {
            Value::String(s) => len_field(&mut out, 1, s.as_bytes()),
            // A bare number is a quantity too (`cpu: 2` in YAML).
            Value::Number(n) => len_field(&mut out, 1, n.to_string().as_bytes()),
            v => return Err(format!("{v} is not a quantity")),
        },
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let s = v.as_str().ok_or_else(|| format!("{v} is not a time"))?;
            let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| format!("{s:?} is not a time: {e}"))?;
            int_field(&mut out, 1, t.timestamp());
            int_field(&mut out, 2, i64::from(t.timestamp_subsec_nanos()));
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            let s = v.as_str().ok_or_else(|| format!("{v} is not a duration"))?;
            int_field(&mut out, 1, parse_go_duration(s).ok_or_else(|| format!("{s:?} is not a duration"))?);
        }
        "apimachinery.pkg.runtime.RawExtension"
        | "apimachinery.pkg.apis.meta.v1.FieldsV1"
        | "apiextensions_apiserver.pkg.apis.apiextensions.v1.Json" => len_field(&mut out, 1, v.to_string().as_bytes()),
        _ if short == "ExtraValue" => {
            let Value::Array(items) = v else { return Err(format!("{v} is not a list")) };
            for s in items {
                len_field(&mut out, 1, s.as_str().ok_or_else(|| format!("{s} is not a string"))?.as_bytes());
            }
        }
        "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrArray" => match v {
            Value::Array(items) => {
                for item in items {
                    len_field(&mut out, 2, &schema(item)?);
                }
            }
            v => len_field(&mut out, 1, &schema(v)?),
        },
        "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrBool" => match v {
            Value::Bool(b) => int_field(&mut out, 1, i64::from(*b)),
            // A schema allows what it describes.
            v => {
                int_field(&mut out, 1, 1);
                len_field(&mut out, 2, &schema(v)?);
            }
        },
        "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrStringArray" => match v {
            Value::Array(items) => {
                for s in items {
                    len_field(&mut out, 2, s.as_str().ok_or_else(|| format!("{s} is not a string"))?.as_bytes());
                }
            }
            v => len_field(&mut out, 1, &schema(v)?),
        },
        _ => return Ok(None),
    }
    Ok(Some(out))
}

/// Nanoseconds of a duration as Go's time.ParseDuration reads it (`1h2m3.5s`, `250ms`).
fn parse_go_duration(s: &str) -> Option<i64> {
    let (sign, mut rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).filter(|&i| i > 0)?;
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    (total < 9.2e18).then_some((sign * total).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime::Unknown;
    use prost::Message as _;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web", "namespace": "default", "uid": "0b3c", "resourceVersion": "12",
                "creationTimestamp": "2024-01-02T03:04:05Z", "labels": {"app": "web", "tier": "front"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "9", "controller": true}],
            },
            "spec": {
                "containers": [{
                    "name": "c", "image": "busybox", "command": ["sh", "-c", "sleep 1"],
                    "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "2"}},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
                    "readinessProbe": {"tcpSocket": {"port": "http"}, "failureThreshold": 3},
                    "env": [{"name": "A", "value": "1"}, {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                    "securityContext": {"runAsUser": 0, "privileged": false},
                }],
                "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}}],
                "terminationGracePeriodSeconds": 30,
                "nodeSelector": {"disk": "ssd"},
            },
            "status": {
                "phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                "startTime": "2024-01-02T03:04:06Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-02T03:04:07Z"}],
            },
        })
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": 3, "annotations": {"a": "b"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "k", "operator": "In", "values": ["x", "y"]}]},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
            },
            "status": {"replicas": 3, "readyReplicas": 2, "observedGeneration": 3},
        })
    }

    fn service() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080, "protocol": "TCP"},
                          {"name": "alt", "port": 81, "targetPort": 8081}],
            },
        })
    }

    /// Kinds beyond the workloads: bytes and empty map values, MicroTime, a schema with
    /// its unions, a cluster-wide RBAC kind, a list and a Status.
    fn others() -> Vec<Value> {
        vec![
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque",
                   "data": {"k": "aGVsbG8=", "empty": ""}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "x", "b": ""}}),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n"},
                   "spec": {"holderIdentity": "n", "leaseDurationSeconds": 40, "renewTime": "2024-01-02T03:04:05.123456Z"}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"},
                   "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                             {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "foos.example.com"},
                   "spec": {"group": "example.com", "scope": "Namespaced",
                            "names": {"plural": "foos", "kind": "Foo"},
                            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                                "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                "properties": {"spec": {"type": "object", "additionalProperties": false,
                                    "properties": {"n": {"type": "integer", "minimum": 1.5, "default": 3},
                                                   "tags": {"type": "array", "items": {"type": "string"}}}}}}}}]}}),
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "7", "continue": "7:web"},
                   "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}, "spec": {"containers": [{"name": "c"}]}}]}),
            json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": 404,
                   "reason": "NotFound", "message": "pods \"x\" not found", "details": {"name": "x", "kind": "pods"}}),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "t"},
                   "spec": {"schedule": "*/5 * * * *", "suspend": false, "jobTemplate": {"spec": {"backoffLimit": -1,
                            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "b"}]}}}}}}),
        ]
    }

    #[test]
    fn objects_of_many_kinds_survive_a_round_trip() {
        let mut all = vec![pod(), deployment(), service()];
        all.extend(others());
        for obj in all {
            let pb = encode(&obj).unwrap_or_else(|e| panic!("{}: {e}", obj["kind"]));
            assert!(pb.starts_with(MAGIC));
            assert_eq!(super::super::decode(&pb).unwrap(), obj);
        }
    }

    /// The envelope and the object inside it, read with k8s-pb's generated types.
    fn unwrap<M: prost::Message + Default>(pb: &[u8]) -> (k8s_pb::apimachinery::pkg::runtime::TypeMeta, M) {
        let unknown = Unknown::decode(pb.strip_prefix(MAGIC).expect("the magic")).expect("a runtime.Unknown");
        (
            unknown.type_meta.expect("typeMeta"),
            M::decode(unknown.raw.as_deref().unwrap_or_default()).expect("the object"),
        )
    }

    #[test]
    fn k8s_pb_reads_what_is_written() {
        let (tm, p): (_, core::Pod) = unwrap(&encode(&pod()).unwrap());
        assert_eq!((tm.api_version.as_deref(), tm.kind.as_deref()), (Some("v1"), Some("Pod")));
        let md = p.metadata.unwrap();
        assert_eq!(md.name.as_deref(), Some("web"));
        assert_eq!(md.labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(md.creation_timestamp.unwrap().seconds, Some(1_704_164_645));
        assert_eq!(md.owner_references[0].controller, Some(true));
        let spec = p.spec.unwrap();
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        let c = &spec.containers[0];
        assert_eq!(c.command, ["sh", "-c", "sleep 1"]);
        assert_eq!(c.ports[0].container_port, Some(8080));
        let res = c.resources.as_ref().unwrap();
        assert_eq!(res.limits.get("memory").and_then(|q| q.string.as_deref()), Some("128Mi"));
        assert_eq!(res.requests.get("cpu").and_then(|q| q.string.as_deref()), Some("2"));
        let live = c.liveness_probe.as_ref().unwrap();
        let http = live.handler.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!((http.path.as_deref(), http.port.as_ref().unwrap().int_val), (Some("/healthz"), Some(8080)));
        assert_eq!(live.period_seconds, Some(5));
        let tcp = c.readiness_probe.as_ref().unwrap().handler.as_ref().unwrap().tcp_socket.as_ref().unwrap();
        let port = tcp.port.as_ref().unwrap();
        assert_eq!((port.r#type, port.str_val.as_deref()), (Some(1), Some("http")));
        let secret = c.env[1].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!(secret.local_object_reference.as_ref().unwrap().name.as_deref(), Some("s"));
        assert_eq!(c.security_context.as_ref().unwrap().run_as_user, Some(0));
        let cm = spec.volumes[0].volume_source.as_ref().unwrap().config_map.as_ref().unwrap();
        assert_eq!(cm.default_mode, Some(420));
        let status = p.status.unwrap();
        assert_eq!(status.pod_ips[0].ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(status.conditions[0].last_transition_time.as_ref().unwrap().seconds, Some(1_704_164_647));

        let (tm, d): (_, apps::Deployment) = unwrap(&encode(&deployment()).unwrap());
        assert_eq!(tm.api_version.as_deref(), Some("apps/v1"));
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(0), "a zero is written: replicas is a pointer in Go");
        let ru = spec.strategy.unwrap().rolling_update.unwrap();
        assert_eq!(ru.max_surge.unwrap().str_val.as_deref(), Some("25%"));
        assert_eq!(ru.max_unavailable.unwrap().int_val, Some(1));
        assert_eq!(spec.selector.unwrap().match_expressions[0].values, ["x", "y"]);
        assert_eq!(d.status.unwrap().ready_replicas, Some(2));

        let (_, s): (_, core::Service) = unwrap(&encode(&service()).unwrap());
        let spec = s.spec.unwrap();
        assert_eq!(spec.cluster_ips, ["10.96.0.10"]);
        assert_eq!(spec.ports[0].target_port.as_ref().unwrap().str_val.as_deref(), Some("http"));
        assert_eq!(spec.ports[1].target_port.as_ref().unwrap().int_val, Some(8081));
        assert_eq!(spec.ports[0].node_port, Some(30080));

        let others = others();
        let (_, secret): (_, core::Secret) = unwrap(&encode(&others[0]).unwrap());
        assert_eq!(secret.data.get("k").map(Vec::as_slice), Some(&b"hello"[..]));
        let (_, list): (_, core::PodList) = unwrap(&encode(&others[5]).unwrap());
        assert_eq!(list.metadata.unwrap().r#continue.as_deref(), Some("7:web"));
        assert_eq!(
            list.items.iter().map(|p| p.metadata.as_ref().unwrap().name.clone().unwrap()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let (tm, status): (_, meta::Status) = unwrap(&encode(&others[6]).unwrap());
        assert_eq!(tm.kind.as_deref(), Some("Status"));
        assert_eq!((status.code, status.reason.as_deref()), (Some(404), Some("NotFound")));
        let (_, lease): (_, k8s_pb::api::coordination::v1::Lease) = unwrap(&encode(&others[2]).unwrap());
        let renew = lease.spec.unwrap().renew_time.unwrap();
        assert_eq!((renew.seconds, renew.nanos), (Some(1_704_164_645), Some(123_456_000)));
        let (_, job): (_, k8s_pb::api::batch::v1::CronJob) = unwrap(&encode(&others[7]).unwrap());
        assert_eq!(job.spec.unwrap().job_template.unwrap().spec.unwrap().backoff_limit, Some(-1));
    }

    #[test]
    fn a_watch_frame_is_a_length_and_a_watch_event_around_an_envelope() {
        let frame = watch_frame("ADDED", &service()).unwrap();
        let (len, event) = frame.split_at(4);
        assert_eq!(u32::from_be_bytes(len.try_into().unwrap()) as usize, event.len());
        let event = meta::WatchEvent::decode(event).unwrap();
        assert_eq!(event.r#type.as_deref(), Some("ADDED"));
        let raw = event.object.unwrap().raw.unwrap();
        let (tm, s): (_, core::Service) = unwrap(&raw);
        assert_eq!(tm.kind.as_deref(), Some("Service"));
        assert_eq!(s.metadata.unwrap().name.as_deref(), Some("web"));
    }

    #[test]
    fn what_has_no_message_or_does_not_fit_is_refused() {
        assert!(encode(&json!({"apiVersion": "example.com/v1", "kind": "Foo"})).is_err());
        // A custom kind named like a meta kind is not taken for it.
        assert!(message_for("example.com/v1", "DeleteOptions").is_none());
        assert!(message_for("example.com/v1", "Status").is_some());
        assert!(encode(&json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": "no"}})).is_err());
        assert!(
            encode(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"creationTimestamp": "yesterday"}}))
                .is_err()
        );
    }

    #[test]
    fn go_durations_read_back() {
        for ns in [0, 1_500, 250_000_000, 90_000_000_000, 3_723_500_000_000, -1_500] {
            assert_eq!(parse_go_duration(&super::super::go_duration(ns)), Some(ns), "{ns}");
        }
        assert_eq!(parse_go_duration("1h"), Some(3_600_000_000_000));
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("s"), None);
    }
}
