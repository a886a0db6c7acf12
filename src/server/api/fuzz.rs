//! Every handler input, fuzzed: whatever a client sends (query parameters, bodies, patches
//! of each type, selectors, protobuf), the code answers Ok or an error and never panics.
//! Bounded: a few hundred cases each, a few seconds in all, unless `NODECTL_FUZZ_CASES`
//! asks for more.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{Api, auth, dispatch, protobuf};
use crate::server::registry::{objects, patch, selectors};
use crate::server::store::sqlite::Sqlite;
use crate::server::store::{Backend, CompactionPolicy};

/// Any JSON value, a few levels deep, with the keys and numbers the handlers look at.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("metadata".to_string()),
        Just("spec".to_string()),
        Just("status".to_string()),
        Just("data".to_string()),
        Just("name".to_string()),
        Just("labels".to_string()),
        Just("annotations".to_string()),
        Just("finalizers".to_string()),
        Just("containers".to_string()),
        Just("replicas".to_string()),
        Just("resourceVersion".to_string()),
        Just("gracePeriodSeconds".to_string()),
        Just("$patch".to_string()),
        Just("$retainKeys".to_string()),
        Just("$setElementOrder/containers".to_string()),
        Just("$deleteFromPrimitiveList/finalizers".to_string()),
        Just("op".to_string()),
        Just("path".to_string()),
        Just("value".to_string()),
        Just("from".to_string()),
        "[a-z]{1,3}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        prop_oneof![
            Just("".to_string()),
            Just("/".to_string()),
            Just("/metadata".to_string()),
            Just("/metadata/labels/a".to_string()),
            Just("/spec/containers/0".to_string()),
            Just("/spec/containers/-".to_string()),
            Just("add".to_string()),
            Just("remove".to_string()),
            Just("replace".to_string()),
            Just("move".to_string()),
            Just("copy".to_string()),
            Just("test".to_string()),
            Just("delete".to_string()),
            Just("merge".to_string()),
            Just("c".to_string()),
            ".{0,6}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// JSON patch operations that name real paths, the whole document ("") among them.
fn json_patch_ops() -> impl Strategy<Value = Value> {
    let op = prop_oneof![Just("add"), Just("remove"), Just("replace"), Just("move"), Just("copy"), Just("test")];
    let path = prop_oneof![
        Just(""),
        Just("/"),
        Just("/metadata"),
        Just("/metadata/name"),
        Just("/metadata/labels"),
        Just("/metadata/labels/a"),
        Just("/spec"),
        Just("/spec/containers/0"),
        Just("/spec/containers/-"),
        Just("/status"),
        Just("/data"),
        Just("/kind"),
    ];
    let one = (op, path.clone(), path, json_value())
        .prop_map(|(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value}));
    prop::collection::vec(one, 1..4).prop_map(Value::Array)
}

/// Cases per property: a few hundred in `make test`; `NODECTL_FUZZ_CASES=N` for a longer
/// run (README, "Hostile clients", says how long one went).
fn cases(default: u32) -> u32 {
    std::env::var("NODECTL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(400), failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn patches_of_any_shape_never_panic(target in json_value(), p in json_value()) {
        let mut t = target.clone();
        patch::merge_patch(&mut t, &p);
        let mut t = target.clone();
        let _ = patch::json_patch(&mut t, &p);
        let mut t = target;
        let _ = patch::strategic_merge_patch(&mut t, &p);
    }

    #[test]
    fn json_patch_operations_never_panic(target in json_value(), ops in prop::collection::vec(json_value(), 0..4), real in json_patch_ops()) {
        let mut t = target.clone();
        let _ = patch::json_patch(&mut t, &Value::Array(ops));
        let mut t = target;
        let _ = patch::json_patch(&mut t, &real);
    }

    #[test]
    fn selectors_of_any_text_never_panic(labels in ".{0,40}", fields in ".{0,40}", kind in "(Pod|Event|Node|Secret)") {
        if let Ok(s) = selectors::Selectors::parse(Some(&labels), Some(&fields), &kind) {
            s.matches(&json!({"metadata": {"labels": {"a": "b"}}}));
        }
    }

    #[test]
    fn protobuf_bodies_of_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = protobuf::decode(&bytes);
        let mut framed = b"k8s\0".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = protobuf::decode(&framed);
    }

    /// Answers are written in protobuf from stored JSON: whatever its shape, the encoder
    /// answers Ok or an error. And what the decoder reads from any bytes, it writes.
    #[test]
    fn protobuf_answers_of_any_shape_never_panic(
        kind in "(Pod|Deployment|Service|Secret|CustomResourceDefinition|Status|PodList)",
        metadata in json_value(), spec in json_value(), data in json_value(),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let api_version = match kind.as_str() {
            "Deployment" => "apps/v1",
            "CustomResourceDefinition" => "apiextensions.k8s.io/v1",
            _ => "v1",
        };
        let obj = json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec, "data": data, "items": [spec]});
        let _ = protobuf::encode::encode(&obj);
        let _ = protobuf::encode::watch_frame("ADDED", &obj);
        let mut framed = b"k8s\0".to_vec();
        framed.extend_from_slice(&bytes);
        if let Ok(read) = protobuf::decode(&framed) {
            let _ = protobuf::encode::encode(&read);
        }
    }

    #[test]
    fn delete_options_of_any_shape_never_panic(body in json_value(), grace in ".{0,8}") {
        let _ = objects::DeleteOptions::parse(body.to_string().as_bytes(), Some(&grace));
    }
}

/// A server's API on a store of its own, with a few objects to aim at.
struct Fixture {
    api: Arc<Api>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

const ADMIN: &str = "fuzz-admin-token";

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Backend> =
            Arc::new(Sqlite::open(&dir.path().join("state.db"), CompactionPolicy::default()).unwrap());
        let auth = auth::Auth::new(ADMIN.into(), "fuzz-join-token".into(), String::new(), store.clone());
        let api = Arc::new(Api { store, auth, nodes: Default::default(), metrics: Default::default() });
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(super::bootstrap(&api.store)).unwrap();
        let f = Fixture { api, rt, _dir: dir };
        for (path, obj) in [
            // What the ServiceAccount controller would have written: pods are admitted only
            // with their account.
            ("/api/v1/namespaces/default/serviceaccounts", json!({"metadata": {"name": "default"}})),
            ("/api/v1/namespaces/default/configmaps", json!({"metadata": {"name": "c"}, "data": {"k": "v"}})),
            (
                "/api/v1/namespaces/default/pods",
                json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
            ),
            (
                "/apis/apps/v1/namespaces/default/deployments",
                json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
            ),
        ] {
            let (code, _) = f.send("POST", path, "application/json", obj.to_string().into_bytes());
            assert_eq!(code, 201, "{path}");
        }
        f
    }

    fn send(&self, method: &str, uri: &str, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        self.send_accepting(method, uri, content_type, "", body)
    }

    fn send_accepting(
        &self,
        method: &str,
        uri: &str,
        content_type: &str,
        accept: &str,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", content_type)
            .header("accept", accept)
            .body(axum::body::Body::from(body))
            .unwrap();
        self.rt.block_on(async {
            let resp = dispatch(State(self.api.clone()), req).await;
            let code = resp.status().as_u16();
            // A watch's body streams until its timeout: only its head is read.
            let body = if uri.contains("watch=") {
                Vec::new()
            } else {
                axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()
            };
            (code, body)
        })
    }
}

fn request() -> impl Strategy<Value = (String, String, String, String)> {
    let method = prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("PATCH"), Just("DELETE")];
    let path = prop_oneof![
        Just("/api/v1/namespaces/default/configmaps"),
        Just("/api/v1/namespaces/default/configmaps/c"),
        Just("/api/v1/namespaces/default/pods/p"),
        Just("/api/v1/namespaces/default/pods/p/status"),
        Just("/api/v1/namespaces/default/pods/p/binding"),
        Just("/api/v1/namespaces/default/pods/p/log"),
        Just("/apis/apps/v1/namespaces/default/deployments/d"),
        Just("/apis/apps/v1/namespaces/default/deployments/d/scale"),
        Just("/apis/apps/v1/namespaces/default/deployments/d/status"),
        Just("/api/v1/namespaces/default"),
        Just("/api/v1/namespaces/default/finalize"),
        Just("/api/v1/pods"),
    ];
    let param = prop_oneof![
        Just("limit"),
        Just("continue"),
        Just("timeoutSeconds"),
        Just("resourceVersion"),
        Just("resourceVersionMatch"),
        Just("labelSelector"),
        Just("fieldSelector"),
        Just("gracePeriodSeconds"),
        Just("fieldValidation"),
        Just("allowWatchBookmarks"),
    ];
    let value = prop_oneof![
        Just("18446744073709551615".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("1:c".to_string()),
        Just("Exact".to_string()),
        Just("Strict".to_string()),
        Just("Warn".to_string()),
        "[ -~]{0,12}",
    ];
    let query = prop::collection::vec((param, value), 0..3);
    let content_type = prop_oneof![
        Just("application/json"),
        Just("application/merge-patch+json"),
        Just("application/json-patch+json"),
        Just("application/strategic-merge-patch+json"),
        Just("application/vnd.kubernetes.protobuf"),
    ];
    (method, path, query, content_type).prop_map(|(m, p, q, ct)| {
        let mut pairs: BTreeMap<&str, String> = q.into_iter().collect();
        // Watches are exercised only with a short timeout of their own, or one of the
        // large numbers above: a default watch would stream for half an hour.
        if m == "GET" && pairs.contains_key("timeoutSeconds") && p.ends_with('s') {
            pairs.insert("watch", "true".into());
        }
        let query = serde_urlencoded::to_string(pairs).unwrap();
        (m.to_string(), format!("{p}?{query}"), ct.to_string(), String::new())
    })
}

#[test]
fn requests_of_any_shape_never_panic_the_handlers() {
    let f = Fixture::new();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: cases(300), ..config() });
    let body = prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        json_patch_ops().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    runner
        .run(&(request(), body), |((method, uri, ct, _), body)| {
            // Half of the requests as client-go's protobuf clients send them: the answers
            // go through the protobuf encoder.
            let accept = if body.len() % 2 == 1 { "application/vnd.kubernetes.protobuf, */*" } else { "" };
            let (code, answer) = f.send_accepting(&method, &uri, &ct, accept, body);
            seen.borrow_mut().insert(code);
            prop_assert!(code != 500, "{method} {uri} ({ct}): {code} {}", String::from_utf8_lossy(&answer));
            Ok(())
        })
        .unwrap();
    // The requests reached the handlers: some succeeded, some were refused for their content.
    let seen = seen.into_inner();
    assert!([200, 400, 422].iter().all(|c| seen.contains(c)), "{seen:?}");
}
