//! OpenAPI v2 and v3 with the schemas of every served kind, driven with the real kubectl:
//! `kubectl explain` prints the fields and their descriptions, and kubectl's validation
//! finds unknown fields as against kube-apiserver.

mod common;

use std::fs;
use std::path::Path;

use common::server::{Server, free_port};

/// kubectl with a cache directory of the test's own: kubectl keeps OpenAPI documents on
/// disk, and another server's must not answer for this one.
fn kubectl(s: &Server, cache: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--cache-dir", cache.to_str().unwrap()];
    all.extend_from_slice(args);
    s.kubectl(&all)
}

fn ok(s: &Server, cache: &Path, args: &[&str]) -> String {
    let out = kubectl(s, cache, args);
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kubectl_explain_prints_the_fields_and_descriptions_of_served_kinds() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);

    let out = ok(&s, &cache, &["explain", "pod.spec.containers"]);
    assert!(out.contains("KIND:       Pod") && out.contains("VERSION:    v1"), "{out}");
    assert!(out.contains("FIELD: containers <[]Container>"), "{out}");
    assert!(out.contains("List of containers belonging to the pod."), "{out}");
    assert!(out.contains("image\t<string>") && out.contains("name\t<string> -required-"), "{out}");
    assert!(out.contains("Container image name."), "{out}");

    let out = ok(&s, &cache, &["explain", "deployment", "--recursive"]);
    assert!(out.contains("GROUP:      apps") && out.contains("KIND:       Deployment"), "{out}");
    assert!(out.contains("Deployment enables declarative updates for Pods and ReplicaSets."), "{out}");
    assert!(out.contains("metadata\t<ObjectMeta>") && out.contains("replicas\t<integer>"), "{out}");
    assert!(out.contains("      containers\t<[]Container> -required-"), "{out}");

    let out = ok(&s, &cache, &["explain", "svc.spec.type"]);
    assert!(out.contains("FIELD: type <string>"), "{out}");
    assert!(out.contains("type determines how the Service is exposed."), "{out}");

    // Kinds of other groups, and a field that does not exist.
    let out = ok(&s, &cache, &["explain", "cronjob.spec.schedule"]);
    assert!(out.contains("The schedule in Cron format"), "{out}");
    let out = kubectl(&s, &cache, &["explain", "pod.spec.nosuchfield"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("field \"nosuchfield\" does not exist"), "{err}");
}

#[test]
fn apply_with_strict_validation_names_the_unknown_field() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let file = tmp.path().join("deploy.yaml");
    let good = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  \
                template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n";
    fs::write(&file, format!("{good}        imagePullPolicyy: Always\n")).unwrap();
    let out = kubectl(&s, &cache, &["apply", "--validate=strict", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error when creating")
            && err.contains("Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error")
            && err.contains("unknown field \"spec.template.spec.containers[0].imagePullPolicyy\""),
        "{err}"
    );
    assert!(kubectl(&s, &cache, &["get", "deployment", "web"]).status.code() != Some(0));

    // Valid, it is created; then the same typo in an update is refused the same way.
    fs::write(&file, good).unwrap();
    ok(&s, &cache, &["apply", "--validate=strict", "-f", file.to_str().unwrap()]);
    fs::write(&file, format!("{good}        imagePullPolicyy: Always\n")).unwrap();
    let out = kubectl(&s, &cache, &["apply", "--validate=strict", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field \"spec.template.spec.containers[0].imagePullPolicyy\""), "{err}");
}

#[test]
fn openapi_v2_is_json_or_gnostic_protobuf_with_every_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let token = s.admin_token();
    // Status, Content-Type and body.
    let get = |accept: Option<&str>| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut req = s.http_client().get(s.url("/openapi/v2")).bearer_auth(&token);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            let resp = req.send().await.unwrap();
            let kind = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            (resp.status().as_u16(), kind, resp.bytes().await.unwrap().to_vec())
        })
    };
    let (code, _, body) = get(Some("application/json"));
    let body = String::from_utf8(body).unwrap();
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["swagger"], "2.0");
    let deploy = &doc["definitions"]["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(deploy["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
    assert_eq!(deploy["properties"]["spec"]["$ref"], "#/definitions/io.k8s.api.apps.v1.DeploymentSpec");
    assert!(doc["definitions"]["io.k8s.api.core.v1.Container"]["properties"]["image"]["description"].is_string());

    // What client-go asks for: gnostic's Document, under the type name Go's mime parser
    // takes. Field 1 is `swagger`, the string "2.0".
    let (code, kind, body) = get(Some("application/com.github.proto-openapi.spec.v2@v1.0+protobuf"));
    assert_eq!((code, kind.as_str()), (200, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"));
    assert!(body.starts_with(b"\x0a\x032.0"), "{:?}", &body[..body.len().min(16)]);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("io.k8s.api.apps.v1.Deployment") && text.contains("x-kubernetes-group-version-kind"));

    let (code, _, _) = get(Some("application/yaml"));
    assert_eq!(code, 406);
}
