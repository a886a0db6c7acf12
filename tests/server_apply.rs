//! Server-side apply and field management, driven with the real kubectl 1.32: `kubectl
//! apply --server-side` creates and merges, managedFields say who owns what, a second
//! manager changing a field another owns gets kube's conflict (and takes it with
//! `--force-conflicts`), fields a manager stops applying go, and dry runs and
//! `kubectl diff --server-side` store nothing.

mod common;

use std::fs;
use std::path::Path;

use common::server::{Server, free_port};
use serde_json::{Value, json};

fn write(dir: &Path, name: &str, yaml: &str) -> String {
    let file = dir.join(name);
    fs::write(&file, yaml).unwrap();
    file.to_str().unwrap().to_string()
}

/// The managers of an object: (manager, operation, fieldsV1).
fn managers(s: &Server, what: &[&str]) -> Vec<(String, String, Value)> {
    let mut args = vec!["get", "--show-managed-fields"];
    args.extend_from_slice(what);
    let obj = s.json(&args);
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
                e["fieldsV1"].clone(),
            )
        })
        .collect()
}

fn config_map(data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{{data}}}\n")
}

#[test]
fn apply_merges_owns_conflicts_and_forgets_what_it_stops_applying() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let d = tmp.path();

    // Created by apply: kubectl owns what it sent, nothing else.
    let f = write(d, "a.yaml", &config_map("a: '1', b: '2'"));
    let out = s.ok(&["apply", "--server-side", "-f", &f]);
    assert_eq!(out.trim(), "configmap/settings serverside-applied");
    assert_eq!(
        managers(&s, &["cm", "settings"]),
        vec![("kubectl".into(), "Apply".into(), json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}}))]
    );
    // Hidden unless asked for, as kubectl shows it.
    assert!(s.json(&["get", "cm", "settings"])["metadata"].get("managedFields").is_none());

    // Another manager changing a: kube's conflict, and nothing changes.
    let g = write(d, "b.yaml", &config_map("a: 'changed'"));
    let err = s.fails(&["apply", "--server-side", "--field-manager=tuner", "-f", &g]);
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .data.a"#),
        "unexpected error: {err}"
    );
    assert_eq!(s.json(&["get", "cm", "settings"])["data"], json!({"a": "1", "b": "2"}));
    // The same value is shared, not a conflict.
    let same = write(d, "same.yaml", &config_map("b: '2'"));
    s.ok(&["apply", "--server-side", "--field-manager=sharer", "-f", &same]);
    // Forced, it takes a.
    s.ok(&["apply", "--server-side", "--field-manager=tuner", "--force-conflicts", "-f", &g]);
    let m = managers(&s, &["cm", "settings"]);
    assert!(m.contains(&("kubectl".into(), "Apply".into(), json!({"f:data": {".": {}, "f:b": {}}}))), "{m:?}");
    assert!(m.contains(&("tuner".into(), "Apply".into(), json!({"f:data": {".": {}, "f:a": {}}}))), "{m:?}");

    // kubectl stops applying b: shared with `sharer`, it stays; it adds c.
    let h = write(d, "c.yaml", &config_map("c: '3'"));
    s.ok(&["apply", "--server-side", "-f", &h]);
    assert_eq!(s.json(&["get", "cm", "settings"])["data"], json!({"a": "changed", "b": "2", "c": "3"}));
    // sharer stops too: now b is nobody's and goes with sharer's next apply.
    let none = write(d, "none.yaml", &config_map("d: '4'"));
    s.ok(&["apply", "--server-side", "--field-manager=sharer", "-f", &none]);
    assert_eq!(s.json(&["get", "cm", "settings"])["data"], json!({"a": "changed", "c": "3", "d": "4"}));

    // An update (kubectl edit's and patch's kind of write) takes the fields it changes,
    // without conflicts, named by the request's manager.
    s.ok(&["patch", "cm", "settings", "--type=merge", "-p", r#"{"data": {"c": "patched"}}"#]);
    let m = managers(&s, &["cm", "settings"]);
    assert!(
        m.iter().any(|(name, op, f)| name == "kubectl-patch" && op == "Update" && f == &json!({"f:data": {"f:c": {}}})),
        "{m:?}"
    );
    assert!(m.contains(&("kubectl".into(), "Apply".into(), json!({"f:data": {}}))), "{m:?}");
    let err = s.fails(&["apply", "--server-side", "-f", &h]);
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl-patch" using v1: .data.c"#),
        "unexpected error: {err}"
    );
}

#[test]
fn apply_to_a_deployment_merges_containers_by_name_and_conflicts_with_its_creator() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let d = tmp.path();
    s.ok(&["create", "deployment", "web", "--image=busybox:1.36"]);
    let m = managers(&s, &["deploy", "web"]);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!((m[0].0.as_str(), m[0].1.as_str()), ("kubectl-create", "Update"));
    assert_eq!(m[0].2["f:spec"]["f:replicas"], json!({}));

    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: busybox, image: busybox:1.37}\n      - {name: side, image: busybox:1.36}\n";
    let f = write(d, "web.yaml", yaml);
    let err = s.fails(&["apply", "--server-side", "-f", &f]);
    assert!(err.contains("Apply failed with 2 conflicts: conflicts with \"kubectl-create\" using apps/v1:"), "{err}");
    assert!(err.contains("- .spec.replicas"), "{err}");
    assert!(err.contains(r#"- .spec.template.spec.containers[name="busybox"].image"#), "{err}");

    // Server-side dry runs and diff store nothing.
    s.ok(&["apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", &f]);
    let out = s.kubectl(&["diff", "--server-side", "--force-conflicts", "-f", &f]);
    assert_eq!(out.status.code(), Some(1), "kubectl diff: {}", String::from_utf8_lossy(&out.stderr));
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(diff.contains("-  replicas: 1") && diff.contains("+  replicas: 3"), "{diff}");
    assert_eq!(s.json(&["get", "deploy", "web"])["spec"]["replicas"], 1);

    s.ok(&["apply", "--server-side", "--force-conflicts", "-f", &f]);
    let dep = s.json(&["get", "deploy", "web"]);
    assert_eq!(dep["spec"]["replicas"], 3);
    let containers = dep["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    let images: Vec<(&str, &str)> =
        containers.iter().map(|c| (c["name"].as_str().unwrap(), c["image"].as_str().unwrap())).collect();
    assert_eq!(images, vec![("busybox", "busybox:1.37"), ("side", "busybox:1.36")]);
    // Defaults the creator's write set stay (its fields not taken are still its own).
    assert_eq!(containers[0]["imagePullPolicy"], "IfNotPresent");

    // Applying without the side container removes it: kubectl applied it alone.
    let fewer = yaml.replace("      - {name: side, image: busybox:1.36}\n", "");
    let g = write(d, "fewer.yaml", &fewer);
    s.ok(&["apply", "--server-side", "-f", &g]);
    let dep = s.json(&["get", "deploy", "web"]);
    assert_eq!(dep["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
}

#[test]
fn apply_requests_are_checked_as_the_api_server_checks_them() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let token = s.admin_token();
    let path = "/api/v1/namespaces/default/configmaps/x";
    let body = br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "v"}}"#;
    // No fieldManager.
    let (code, text) = s.request("PATCH", path, Some(&token), Some(("application/apply-patch+yaml", body)));
    assert_eq!(code, 422, "{text}");
    assert!(text.contains("fieldManager: Required value: is required for apply patch"), "{text}");
    // force on another patch type.
    let (code, text) =
        s.request("PATCH", &format!("{path}?force=true"), Some(&token), Some(("application/merge-patch+json", b"{}")));
    assert_eq!(code, 422, "{text}");
    assert!(text.contains("force: Forbidden: may not be specified for non-apply patch"), "{text}");
    // YAML bodies, and the name must be the URL's.
    let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  k: v\n";
    let (code, text) = s.request(
        "PATCH",
        &format!("{path}?fieldManager=me"),
        Some(&token),
        Some(("application/apply-patch+yaml", yaml)),
    );
    assert_eq!(code, 201, "{text}");
    let (code, _) = s.request(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/other?fieldManager=me",
        Some(&token),
        Some(("application/apply-patch+yaml", yaml)),
    );
    assert_eq!(code, 400);
    // Without apiVersion and kind.
    let (code, text) = s.request(
        "PATCH",
        &format!("{path}?fieldManager=me"),
        Some(&token),
        Some(("application/apply-patch+yaml", b"metadata: {name: x}\ndata: {k: w}\n")),
    );
    assert_eq!(code, 400, "{text}");
    // A keyed list item without its key.
    let pod = br#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"image": "busybox"}]}}"#;
    let (code, text) = s.request(
        "PATCH",
        "/api/v1/namespaces/default/pods/p?fieldManager=me",
        Some(&token),
        Some(("application/apply-patch+yaml", pod)),
    );
    assert!(code == 400 || code == 422, "{code} {text}");
    assert!(text.contains("omits key field \\\"name\\\""), "{text}");
}
