//! `nodectl server` driven by the real kubectl: credentials made at first start, discovery,
//! create/get/list/replace/delete over HTTPS with a bearer token, Status errors, optimistic
//! concurrency, schema checks, and a restart that keeps data and certificates.

mod common;

use std::fs;
use std::process::{Command, Stdio};

use common::server::{Server, free_port};

const MANIFEST: &str = "
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: demo
data:
  greeting: hello
";

/// Deployments here are stored objects under test: no controller writes their status.
const NO_WORKLOAD_CONTROLLERS: &str = "--controllers=-deployment,-replicaset";
/// For tests that count or watch a namespace's ConfigMaps: every controller but the one
/// that writes `kube-root-ca.crt` into each namespace.
const OWN_CONFIGMAPS: &str = "--controllers=*,-root-ca-cert-publisher";

#[test]
fn kubectl_creates_reads_replaces_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    for f in
        ["ca.crt", "ca.key", "server.crt", "server.key", "admin-token", "node-token", "admin.kubeconfig", "state.db"]
    {
        assert!(s.dir.join(f).exists(), "{f} was not written");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(s.dir.join("ca.key")).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "ca.key is readable by others");

    assert!(s.ok(&["version"]).contains("v1.32.0+nodectl"));
    let ns = s.ok(&["get", "namespaces"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    let file = tmp.path().join("m.yaml");
    fs::write(&file, MANIFEST).unwrap();
    let out = s.ok(&["create", "-f", file.to_str().unwrap()]);
    assert!(out.contains("namespace/demo created") && out.contains("configmap/cfg created"), "{out}");
    assert!(s.fails(&["create", "--validate=false", "-f", file.to_str().unwrap()]).contains("AlreadyExists"));

    let cm: serde_json::Value =
        serde_json::from_str(&s.ok(&["-n", "demo", "get", "configmap", "cfg", "-o", "json"])).unwrap();
    assert_eq!(cm["data"]["greeting"], "hello");
    assert!(cm["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    let rv: i64 = cm["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(s.ok(&["-n", "demo", "get", "cm"]).contains("cfg"));

    // Replace with the version read: accepted. With it again: stale, 409 Conflict.
    let mut edited = cm.clone();
    edited["data"]["greeting"] = "bonjour".into();
    let edited_file = tmp.path().join("edited.json");
    fs::write(&edited_file, serde_json::to_vec(&edited).unwrap()).unwrap();
    s.ok(&["replace", "--validate=false", "-f", edited_file.to_str().unwrap()]);
    let err = s.fails(&["replace", "--validate=false", "-f", edited_file.to_str().unwrap()]);
    assert!(err.contains("the object has been modified"), "{err}");
    let now: serde_json::Value =
        serde_json::from_str(&s.ok(&["-n", "demo", "get", "cm", "cfg", "-o", "json"])).unwrap();
    assert_eq!(now["data"]["greeting"], "bonjour");
    assert!(now["metadata"]["resourceVersion"].as_str().unwrap().parse::<i64>().unwrap() > rv);
    assert_eq!(now["metadata"]["uid"], cm["metadata"]["uid"], "the server keeps the uid");

    assert!(s.ok(&["-n", "demo", "delete", "configmap", "cfg"]).contains("deleted"));
    let err = s.fails(&["-n", "demo", "get", "configmap", "cfg"]);
    assert!(err.contains("NotFound") && err.contains("configmaps \"cfg\" not found"), "{err}");
}

#[test]
fn bad_requests_get_kubernetes_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let bad = tmp.path().join("bad.yaml");
    fs::write(&bad, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: three\n")
        .unwrap();
    let err = s.fails(&["create", "--validate=false", "-f", bad.to_str().unwrap()]);
    assert!(err.contains("is invalid") && err.contains("replicas"), "{err}");
    fs::write(&bad, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Name\n").unwrap();
    let err = s.fails(&["create", "--validate=false", "-f", bad.to_str().unwrap()]);
    assert!(err.contains("metadata.name") && err.contains("RFC 1123"), "{err}");
    fs::write(&bad, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: nowhere\n").unwrap();
    let err = s.fails(&["create", "--validate=false", "-f", bad.to_str().unwrap()]);
    assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");
    // kubectl asks for strict field validation, and gets it from the server.
    fs::write(&bad, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\nbogus: 1\n").unwrap();
    let err = s.fails(&["create", "-f", bad.to_str().unwrap()]);
    // In kube-apiserver's words for a create (its transformDecodeError).
    assert!(
        err.contains(
            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"bogus\""
        ),
        "{err}"
    );
    fs::write(&bad, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n        imagee: typo\n").unwrap();
    let err = s.fails(&["create", "-f", bad.to_str().unwrap()]);
    assert!(err.contains("spec.template.spec.containers[0].imagee"), "{err}");
    // --validate=warn: the object is created, and kubectl prints the server's warnings.
    let out = s.kubectl(&["create", "--validate=warn", "-f", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Warning: unknown field \"spec.template.spec.containers[0].imagee\""), "{err}");
    s.ok(&["get", "deployment", "d"]);
    let err = s.fails(&["get", "--raw", "/apis/nosuch.group/v1/things"]);
    assert!(err.contains("NotFound") || err.contains("could not find"), "{err}");
    // A group's own discovery document, as kube-apiserver serves it.
    let apps: serde_json::Value = serde_json::from_str(&s.ok(&["get", "--raw", "/apis/apps"])).unwrap();
    assert_eq!(apps["kind"], "APIGroup", "{apps}");
    assert_eq!(apps["preferredVersion"]["groupVersion"], "apps/v1", "{apps}");
    assert!(s.fails(&["get", "--raw", "/apis/nosuch.group"]).contains("NotFound"));
    let out = Command::new("kubectl")
        .args(["--server", &format!("https://127.0.0.1:{}", s.port), "--certificate-authority"])
        .arg(s.dir.join("ca.crt"))
        .args(["--token", "not-the-token", "get", "namespaces"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_restart_keeps_objects_and_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let s = Server::start(&dir, port, &[]);
    let file = tmp.path().join("m.yaml");
    fs::write(&file, MANIFEST).unwrap();
    s.ok(&["create", "--validate=false", "-f", file.to_str().unwrap()]);
    let ca = fs::read(dir.join("ca.crt")).unwrap();
    let token = fs::read(dir.join("admin-token")).unwrap();
    s.stop();
    let s = Server::start(&dir, port, &[]);
    assert_eq!(fs::read(dir.join("ca.crt")).unwrap(), ca, "the CA was made again");
    assert_eq!(fs::read(dir.join("admin-token")).unwrap(), token);
    assert!(s.ok(&["-n", "demo", "get", "cm", "cfg", "-o", "jsonpath={.data.greeting}"]).contains("hello"));
}

#[test]
fn watches_replay_from_a_resource_version_and_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[OWN_CONFIGMAPS]);
    let list: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"])).unwrap();
    let rv0 = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();

    let file = tmp.path().join("cm.yaml");
    fs::write(&file, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w\ndata:\n  v: one\n").unwrap();
    s.ok(&["create", "--validate=false", "-f", file.to_str().unwrap()]);
    fs::write(&file, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w\ndata:\n  v: two\n").unwrap();
    s.ok(&["replace", "--validate=false", "-f", file.to_str().unwrap()]);
    s.ok(&["delete", "configmap", "w"]);

    let out = s.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv0}&timeoutSeconds=1"),
    ]);
    let events: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"], "{out}");
    assert_eq!(events[1]["object"]["data"]["v"], "two");
    let rvs: Vec<i64> =
        events.iter().map(|e| e["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()).collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]) && rvs[0] > rv0.parse::<i64>().unwrap(), "{rvs:?}");

    // No resourceVersion: what exists now arrives as ADDED first.
    fs::write(&file, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: now\n").unwrap();
    s.ok(&["create", "--validate=false", "-f", file.to_str().unwrap()]);
    let out = s.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1"]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!((first["type"].as_str(), first["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("now")));

    // Bookmarks: a watch on secrets, where nothing happened since rv0, ends (timeoutSeconds)
    // with a BOOKMARK at the current revision, past every configmap write: a client resumes
    // from there, not from rv0.
    let list: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"])).unwrap();
    let now: i64 = list["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    let out = s.ok(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/secrets?watch=1&resourceVersion={rv0}&timeoutSeconds=1&allowWatchBookmarks=true"
        ),
    ]);
    let events: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 1, "{out}");
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["object"]["kind"].as_str()),
        (Some("BOOKMARK"), Some("Secret")),
        "{out}"
    );
    let mark: i64 = events[0]["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(mark >= now, "bookmark at {mark}, writes up to {now}");
    // Without allowWatchBookmarks, none.
    let out = s.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/secrets?watch=1&resourceVersion={rv0}&timeoutSeconds=1"),
    ]);
    assert_eq!(out.trim(), "", "{out}");
}

const APP: &str = "
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox
        env:
        - {name: A, value: \"1\"}
        - {name: B, value: \"keep\"}
---
apiVersion: v1
kind: Pod
metadata:
  name: solo
spec:
  containers:
  - name: c
    image: busybox
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data: {a: b}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
";

#[test]
fn kubectl_apply_label_annotate_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let file = tmp.path().join("app.yaml");
    fs::write(&file, APP).unwrap();
    let out = s.ok(&["apply", "-f", file.to_str().unwrap()]);
    for line in ["deployment.apps/web created", "pod/solo created", "configmap/cfg created", "service/web created"] {
        assert!(out.contains(line), "{out}");
    }
    // Edited and applied again: a strategic merge patch, not a replace.
    fs::write(&file, APP.replace("replicas: 2", "replicas: 3").replace("value: \"1\"", "value: \"2\"")).unwrap();
    let out = s.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("deployment.apps/web configured") && out.contains("configmap/cfg unchanged"), "{out}");
    let d: serde_json::Value = serde_json::from_str(&s.ok(&["get", "deployment", "web", "-o", "json"])).unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 2, "a spec change bumps the generation");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"],
        serde_json::json!([{"name": "A", "value": "2"}, {"name": "B", "value": "keep"}])
    );

    s.ok(&["label", "configmap", "cfg", "tier=cache"]);
    s.ok(&["annotate", "configmap", "cfg", "note=hello"]);
    let editor = tmp.path().join("editor.sh");
    fs::write(&editor, "#!/bin/sh\nsed -i 's/a: b/a: edited/' \"$1\"\n").unwrap();
    fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.dir.join("admin.kubeconfig"))
        .args(["edit", "configmap", "cfg"])
        .env("KUBE_EDITOR", &editor)
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl edit: {}", String::from_utf8_lossy(&out.stderr));
    let cm: serde_json::Value = serde_json::from_str(&s.ok(&["get", "configmap", "cfg", "-o", "json"])).unwrap();
    assert_eq!(cm["metadata"]["labels"]["tier"], "cache");
    assert_eq!(cm["metadata"]["annotations"]["note"], "hello");
    assert_eq!(cm["data"]["a"], "edited");
    assert!(s.ok(&["delete", "-f", file.to_str().unwrap()]).contains("deployment.apps \"web\" deleted"));
    let err = s.fails(&["get", "deployment", "web"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn label_and_field_selectors_filter_lists_and_watches() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[OWN_CONFIGMAPS]);
    let file = tmp.path().join("cms.yaml");
    let cm = |name: &str, tier: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{tier: \"{tier}\"}}\n---\n")
    };
    fs::write(&file, [cm("a", "x"), cm("b", "y"), cm("c", "z")].concat()).unwrap();
    s.ok(&["create", "-f", file.to_str().unwrap()]);
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["get", "configmaps", "-o", "jsonpath={.items[*].metadata.name}"];
        all.extend_from_slice(args);
        s.ok(&all).split_whitespace().map(String::from).collect()
    };
    assert_eq!(names(&["-l", "tier=x"]), ["a"]);
    assert_eq!(names(&["-l", "tier in (x,y)"]), ["a", "b"]);
    assert_eq!(names(&["-l", "tier!=x,tier notin (z)"]), ["b"]);
    assert_eq!(names(&["--field-selector", "metadata.name=c"]), ["c"]);
    assert_eq!(names(&["--field-selector", "metadata.name!=c", "-l", "tier"]), ["a", "b"]);
    let err = s.fails(&["get", "configmaps", "--field-selector", "data.x=1"]);
    assert!(err.contains("field label not supported"), "{err}");
    let err = s.fails(&["get", "configmaps", "-l", "tier in x"]);
    assert!(err.contains("unable to parse requirement") || err.contains("unable to parse"), "{err}");

    // A watch with a selector: b leaving the selection is DELETED to it.
    let list: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"])).unwrap();
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    s.ok(&["label", "--overwrite", "configmap", "b", "tier=gone"]);
    s.ok(&["label", "--overwrite", "configmap", "c", "tier=y"]);
    let out = s.ok(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1&labelSelector=tier%3Dy"
        ),
    ]);
    let events: Vec<(String, String)> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|e| {
            (e["type"].as_str().unwrap().to_string(), e["object"]["metadata"]["name"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(events, [("DELETED".to_string(), "b".to_string()), ("ADDED".to_string(), "c".to_string())], "{out}");
}

#[test]
fn kubectl_get_prints_the_columns_users_know() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[NO_WORKLOAD_CONTROLLERS]);
    let file = tmp.path().join("app.yaml");
    fs::write(&file, APP).unwrap();
    s.ok(&["apply", "-f", file.to_str().unwrap()]);
    let header = |args: &[&str]| {
        s.ok(args).lines().next().unwrap_or_default().split_whitespace().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(header(&["get", "namespaces"]), ["NAME", "STATUS", "AGE"]);
    assert_eq!(header(&["get", "pods"]), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(
        header(&["get", "pods", "-o", "wide"]),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]
    );
    assert_eq!(header(&["get", "deployments"]), ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(header(&["get", "services"]), ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]);
    assert_eq!(header(&["get", "configmaps"]), ["NAME", "DATA", "AGE"]);
    let pods = s.ok(&["get", "pods"]);
    let row: Vec<&str> = pods.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["solo", "0/1", "Pending", "0"], "{pods}");
    let deploy = s.ok(&["get", "deployment", "web"]);
    let row: Vec<&str> = deploy.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "0/2", "0", "0"], "{deploy}");
    let cms = s.ok(&["get", "configmaps", "cfg"]);
    let row: Vec<&str> = cms.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["cfg", "1"], "{cms}");
    let described = s.ok(&["describe", "pod", "solo"]);
    let field = |name: &str| {
        described.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(str::trim)).unwrap_or_default()
    };
    assert_eq!(
        (field("Name"), field("Status"), field("Service Account")),
        ("solo", "Pending", "default"),
        "{described}"
    );
}

#[test]
fn kubectl_create_namespace_configmap_and_secret() {
    // These generators send protobuf bodies.
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    assert!(s.ok(&["create", "namespace", "team"]).contains("namespace/team created"));
    assert!(
        s.ok(&["-n", "team", "create", "configmap", "settings", "--from-literal=mode=fast", "--from-literal=level=3"])
            .contains("created")
    );
    assert!(
        s.ok(&["-n", "team", "create", "secret", "generic", "creds", "--from-literal=password=s3cr3t"])
            .contains("created")
    );
    let cm: serde_json::Value =
        serde_json::from_str(&s.ok(&["-n", "team", "get", "configmap", "settings", "-o", "json"])).unwrap();
    assert_eq!(cm["data"], serde_json::json!({"mode": "fast", "level": "3"}));
    let secret: serde_json::Value =
        serde_json::from_str(&s.ok(&["-n", "team", "get", "secret", "creds", "-o", "json"])).unwrap();
    assert_eq!(secret["type"], "Opaque");
    use base64::Engine as _;
    assert_eq!(secret["data"]["password"], base64::engine::general_purpose::STANDARD.encode("s3cr3t"));
    let header: Vec<String> =
        s.ok(&["-n", "team", "get", "secrets"]).lines().next().unwrap().split_whitespace().map(String::from).collect();
    assert_eq!(header, ["NAME", "TYPE", "DATA", "AGE"]);
    // stringData is folded into data, as the API server does.
    let file = tmp.path().join("s.yaml");
    fs::write(
        &file,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: plain\n  namespace: team\nstringData:\n  token: abc\n",
    )
    .unwrap();
    s.ok(&["apply", "-f", file.to_str().unwrap()]);
    let plain: serde_json::Value =
        serde_json::from_str(&s.ok(&["-n", "team", "get", "secret", "plain", "-o", "json"])).unwrap();
    assert_eq!(plain["data"]["token"], base64::engine::general_purpose::STANDARD.encode("abc"));
    assert!(plain.get("stringData").is_none());
}

#[test]
fn scale_status_and_deletecollection() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[NO_WORKLOAD_CONTROLLERS]);
    let file = tmp.path().join("app.yaml");
    fs::write(&file, APP).unwrap();
    s.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(s.ok(&["scale", "deployment", "web", "--replicas=5"]).contains("scaled"));
    let scale: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/apis/apps/v1/namespaces/default/deployments/web/scale"]))
            .unwrap();
    assert_eq!(
        (scale["kind"].as_str(), scale["spec"]["replicas"].as_i64(), scale["status"]["selector"].as_str()),
        (Some("Scale"), Some(5), Some("app=web"))
    );
    let err = s.fails(&["scale", "deployment", "web", "--replicas=-1"]);
    assert!(err.contains("replicas"), "{err}");

    // Status goes through /status only; through the object it is ignored.
    s.ok(&[
        "patch",
        "deployment",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":5,"readyReplicas":3}}"#,
    ]);
    s.ok(&["patch", "deployment", "web", "--type=merge", "-p", r#"{"status":{"readyReplicas":0}}"#]);
    let d: serde_json::Value = serde_json::from_str(&s.ok(&["get", "deployment", "web", "-o", "json"])).unwrap();
    assert_eq!((d["status"]["readyReplicas"].as_i64(), d["spec"]["replicas"].as_i64()), (Some(3), Some(5)));
    assert!(s.ok(&["get", "deployment", "web"]).contains("3/5"));
    let err = s.fails(&["get", "--raw", "/api/v1/namespaces/default/configmaps/cfg/scale"]);
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");

    // deletecollection with a selector.
    let cms = tmp.path().join("cms.yaml");
    let cm = |name: &str, team: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{team: {team}}}\n---\n")
    };
    fs::write(&cms, [cm("a1", "red"), cm("a2", "red"), cm("b1", "blue")].concat()).unwrap();
    s.ok(&["apply", "-f", cms.to_str().unwrap()]);
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.dir.join("admin.kubeconfig"))
        .args(["delete", "--raw", "/api/v1/namespaces/default/configmaps?labelSelector=team%3Dred"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let left = s.ok(&["get", "configmaps", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(left.split_whitespace().collect::<Vec<_>>(), ["b1", "cfg"]);
}

#[test]
fn finalizers_and_graceful_pod_deletion() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let file = tmp.path().join("objs.yaml");
    fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: bound\nspec:\n  nodeName: node-1\n  terminationGracePeriodSeconds: 20\n  containers: [{name: c, image: busybox}]\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: unbound\nspec:\n  containers: [{name: c, image: busybox}]\n",
    )
    .unwrap();
    s.ok(&["apply", "-f", file.to_str().unwrap()]);

    // A finalizer holds the object, marked for deletion, until it is removed.
    s.ok(&["delete", "configmap", "held", "--wait=false"]);
    let held: serde_json::Value = serde_json::from_str(&s.ok(&["get", "configmap", "held", "-o", "json"])).unwrap();
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    s.ok(&["patch", "configmap", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    assert!(s.fails(&["get", "configmap", "held"]).contains("not found"));

    // A pod on a node waits for its kubelet, for its grace period; a pod nowhere goes at once.
    s.ok(&["delete", "pod", "bound", "--wait=false"]);
    let pod: serde_json::Value = serde_json::from_str(&s.ok(&["get", "pod", "bound", "-o", "json"])).unwrap();
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 20);
    assert!(s.ok(&["get", "pods", "bound"]).contains("Terminating"));
    s.ok(&["delete", "pod", "bound", "--grace-period=0", "--force"]);
    assert!(s.fails(&["get", "pod", "bound"]).contains("not found"));
    s.ok(&["delete", "pod", "unbound", "--wait=false"]);
    assert!(s.fails(&["get", "pod", "unbound"]).contains("not found"));
}

/// After compaction, the past is gone as the API server says it: a watch from a compacted
/// resourceVersion is answered 200 with one ERROR event carrying a 410 Expired Status (what
/// client-go reads as "list again"), an Exact list there and a continue token from before
/// are 410, while a list "not older than" it and a watch from the present still work.
#[test]
fn a_compacted_resource_version_answers_410_gone() {
    use nodectl::server::store::sqlite::Sqlite;
    use nodectl::server::store::{Backend, CompactionPolicy};
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[OWN_CONFIGMAPS]);
    let token = s.admin_token();
    let get = |path: &str| {
        let (code, body) = s.request("GET", path, Some(&token), None);
        (code, serde_json::from_str::<serde_json::Value>(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
    };
    let list_rv = |v: &serde_json::Value| v["metadata"]["resourceVersion"].as_str().unwrap().parse::<i64>().unwrap();
    let (_, list) = get("/api/v1/namespaces/default/configmaps");
    let rv0 = list_rv(&list);
    for name in ["a", "b", "c"] {
        s.ok(&["create", "configmap", name, "--from-literal=v=0"]);
    }
    let (code, page) = get("/api/v1/namespaces/default/configmaps?limit=1");
    assert_eq!(code, 200);
    let token_before = page["metadata"]["continue"].as_str().expect("a continue token").to_string();
    for i in 1..=5 {
        s.ok(&["patch", "configmap", "a", "--type=merge", "-p", &format!("{{\"data\":{{\"v\":\"{i}\"}}}}")]);
    }

    // Another process compacts the server's store (SQLite allows it; the server reads the
    // horizon from the file on every read), as the server's own compactor would.
    let store = Sqlite::open(
        &s.dir.join("state.db"),
        CompactionPolicy { retain: 1_000_000, interval: std::time::Duration::from_secs(3600) },
    )
    .unwrap();
    let horizon = store.current_revision().unwrap();
    store.compact(horizon).unwrap();
    drop(store);

    let (code, body) = s.request(
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv0}"),
        Some(&token),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let events: Vec<serde_json::Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 1, "{body}");
    let status = &events[0]["object"];
    assert_eq!(events[0]["type"], "ERROR", "{body}");
    assert_eq!(
        (status["kind"].as_str(), status["code"].as_i64(), status["reason"].as_str()),
        (Some("Status"), Some(410), Some("Expired")),
        "{body}"
    );
    assert_eq!(status["message"], format!("too old resource version: {rv0} ({horizon})"));

    let (code, status) =
        get(&format!("/api/v1/namespaces/default/configmaps?resourceVersion={rv0}&resourceVersionMatch=Exact"));
    assert_eq!((code, status["reason"].as_str()), (410, Some("Expired")), "{status}");
    let (code, status) = get(&format!("/api/v1/namespaces/default/configmaps?limit=1&continue={token_before}"));
    assert_eq!((code, status["reason"].as_str()), (410, Some("Expired")), "{status}");
    assert!(status["message"].as_str().unwrap().contains("continue parameter is too old"), "{status}");
    // Not older than rv0: the present will do.
    let (code, list) = get(&format!("/api/v1/namespaces/default/configmaps?resourceVersion={rv0}"));
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    assert!(list_rv(&list) >= horizon);
    // A resourceVersion the store has not reached yet: 504 Timeout, as the API server says.
    let (code, status) = get(&format!("/api/v1/namespaces/default/configmaps?resourceVersion={}", horizon + 1000));
    assert_eq!((code, status["reason"].as_str()), (504, Some("Timeout")), "{status}");

    // From the horizon on, watches work: the next write arrives.
    s.ok(&["create", "configmap", "d"]);
    let (code, body) = s.request(
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={horizon}&timeoutSeconds=1"),
        Some(&token),
        None,
    );
    assert_eq!(code, 200);
    let events: Vec<serde_json::Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("d")),
        "{body}"
    );
}

#[test]
fn health_endpoints_answer_anyone_as_kube_apiserver_does() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    // No token: health is public, the API is not.
    assert_eq!(s.request("GET", "/livez", None, None), (200, "ok".to_string()));
    assert_eq!(s.request("GET", "/healthz", None, None), (200, "ok".to_string()));
    assert_eq!(s.request("GET", "/readyz/store", None, None), (200, "ok".to_string()));
    assert_eq!(
        s.request("GET", "/readyz?verbose", None, None),
        (200, "[+]ping ok\n[+]store ok\nreadyz check passed\n".to_string())
    );
    assert_eq!(s.request("GET", "/readyz/nope", None, None).0, 404);
    // kubectl reads them the same way.
    assert_eq!(s.ok(&["get", "--raw", "/livez?verbose"]), "[+]ping ok\nlivez check passed\n");
}

#[test]
fn a_request_without_credentials_is_system_anonymous_unless_anonymous_auth_is_off() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    // As kube-apiserver's defaults: system:public-info-viewer lets system:unauthenticated
    // read /version; discovery and resources are 403 (not 401: the user is known).
    let (code, body) = s.request("GET", "/version", None, None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("gitVersion"), "{body}");
    let (code, body) = s.request("GET", "/api/v1/namespaces", None, None);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(r#"namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"#),
        "{body}"
    );
    let (code, body) = s.request("GET", "/api", None, None);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains(r#"forbidden: User \"system:anonymous\" cannot get path \"/api\""#), "{body}");
    // A token that is no one's is 401, never anonymous.
    assert_eq!(s.request("GET", "/version", Some("no-such-token"), None).0, 401);
    // RBAC can grant system:unauthenticated more, as in Kubernetes.
    s.ok(&["create", "clusterrolebinding", "anon-view", "--clusterrole=view", "--group=system:unauthenticated"]);
    let (code, body) = s.request("GET", "/api/v1/namespaces/default/configmaps", None, None);
    assert_eq!(code, 200, "{body}");
    drop(s);

    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &["--anonymous-auth=false"]);
    for path in ["/version", "/api/v1/namespaces", "/livez"] {
        let (code, body) = s.request("GET", path, None, None);
        assert_eq!(code, 401, "{path}: {body}");
    }
    assert_eq!(s.request("GET", "/livez", Some(&s.admin_token()), None), (200, "ok".to_string()));
}

#[test]
fn kubectl_get_all_lists_the_kinds_of_the_all_category() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let file = tmp.path().join("all.yaml");
    fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: busybox}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  \
         template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: c, image: busybox}]\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: b}\n",
    )
    .unwrap();
    s.ok(&["apply", "-f", file.to_str().unwrap()]);
    let all = s.ok(&["get", "all"]);
    for name in ["pod/web", "service/web", "deployment.apps/web"] {
        assert!(all.contains(name), "{name} missing from:\n{all}");
    }
    // A ConfigMap is not in the category, as with kube-apiserver.
    assert!(!all.contains("configmap"), "{all}");

    // -o wide adds the columns kube-apiserver's printers add.
    let deploy = s.ok(&["get", "deploy", "web", "-o", "wide"]);
    let header: Vec<&str> = deploy.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]);
    let row: Vec<&str> = deploy.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[5..], ["c", "busybox", "app=web"], "{deploy}");
    let pod = s.ok(&["get", "pod", "web", "-o", "wide"]);
    assert!(pod.lines().next().unwrap().contains("NOMINATED NODE   READINESS GATES"), "{pod}");
    let svc = s.ok(&["get", "svc", "web", "-o", "wide"]);
    assert!(svc.lines().next().unwrap().trim_end().ends_with("SELECTOR"), "{svc}");
    assert!(svc.lines().nth(1).unwrap().trim_end().ends_with("<none>"), "{svc}");
}

/// For a `kind: List` file kubectl validates on its side, with the schemas of `/openapi/v2`
/// fetched in gnostic's protobuf (it asks for nothing else): the file is created, and an
/// unknown field is refused before anything is sent, in kubectl's words.
#[test]
fn kubectl_validates_a_list_with_the_servers_openapi_v2_in_protobuf() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[NO_WORKLOAD_CONTROLLERS]);
    let list = tmp.path().join("list.yaml");
    fs::write(
        &list,
        "apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}, data: {k: v}}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: d}
  spec:
    selector: {matchLabels: {app: d}}
    template:
      metadata: {labels: {app: d}}
      spec: {containers: [{name: c, image: busybox}]}
",
    )
    .unwrap();
    let out = s.ok(&["create", "-f", list.to_str().unwrap()]);
    assert!(out.contains("configmap/a created") && out.contains("deployment.apps/d created"), "{out}");
    s.ok(&["apply", "-f", list.to_str().unwrap()]);

    fs::write(
        &list,
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}, dataa: {k: v}}\n",
    )
    .unwrap();
    let err = s.fails(&["create", "-f", list.to_str().unwrap()]);
    assert!(err.contains(r#"unknown field "dataa" in io.k8s.api.core.v1.ConfigMap"#), "{err}");
    s.fails(&["get", "configmap", "b"]);
}

/// kubectl's imperative generators send protobuf bodies (client-go's typed clients): each
/// kind they make is decoded with the field numbers of the kube-rs project's generated
/// k8s-pb messages and stored as the JSON the same object would have been.
#[test]
fn kubectl_create_generators_send_protobuf_for_every_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[NO_WORKLOAD_CONTROLLERS]);
    let get = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&s.ok(&all)).unwrap()
    };

    s.ok(&["create", "deployment", "web", "--image=busybox", "--replicas=3", "--port=8080"]);
    let d = get(&["deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!((c["name"].as_str(), c["image"].as_str()), (Some("busybox"), Some("busybox")), "{d}");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate", "defaults apply as to JSON: {d}");
    // replicas 0 is a value (a pointer in Go, written only when set).
    s.ok(&["create", "deployment", "none", "--image=busybox", "--replicas=0"]);
    assert_eq!(get(&["deployment", "none"])["spec"]["replicas"], 0);

    s.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let svc = get(&["service", "web"]);
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "an IntOrString: {svc}");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["selector"]["app"], "web");
    s.ok(&["create", "service", "nodeport", "np", "--tcp=80:http"]);
    assert_eq!(get(&["service", "np"])["spec"]["ports"][0]["targetPort"], "http");

    s.ok(&["create", "job", "once", "--image=busybox", "--", "echo", "hi"]);
    let job = get(&["job", "once"]);
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["command"], serde_json::json!(["echo", "hi"]));
    s.ok(&["create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *"]);
    assert_eq!(get(&["cronjob", "tick"])["spec"]["schedule"], "*/5 * * * *");

    s.ok(&["create", "serviceaccount", "robot"]);
    s.ok(&["create", "role", "reader", "--verb=get,list", "--resource=pods"]);
    let role = get(&["role", "reader"]);
    assert_eq!(role["rules"][0]["verbs"], serde_json::json!(["get", "list"]));
    s.ok(&["create", "rolebinding", "robot-reads", "--role=reader", "--serviceaccount=default:robot"]);
    let rb = get(&["rolebinding", "robot-reads"]);
    assert_eq!(rb["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(rb["roleRef"]["name"], "reader");
    s.ok(&["create", "clusterrole", "node-reader", "--verb=get", "--resource=nodes"]);
    s.ok(&["create", "clusterrolebinding", "ops", "--clusterrole=node-reader", "--user=ops"]);
    assert_eq!(get(&["clusterrolebinding", "ops"])["subjects"][0]["name"], "ops");

    s.ok(&["create", "poddisruptionbudget", "web", "--selector=app=web", "--min-available=2"]);
    assert_eq!(get(&["pdb", "web"])["spec"]["minAvailable"], 2);
    s.ok(&["create", "priorityclass", "high", "--value=1000", "--description=important"]);
    assert_eq!(get(&["priorityclass", "high"])["value"], 1000);
    s.ok(&["autoscale", "deployment", "web", "--min=2", "--max=5", "--cpu-percent=80"]);
    let hpa = get(&["hpa", "web"]);
    assert_eq!(hpa["spec"]["maxReplicas"], 5);
    s.ok(&["create", "ingress", "site", "--rule=example.com/=web:80"]);
    let ing = get(&["ingress", "site"]);
    assert_eq!(ing["spec"]["rules"][0]["host"], "example.com");
    assert_eq!(ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"], 80);
    s.ok(&["expose", "deployment", "web", "--name=exposed", "--port=81", "--target-port=8080"]);
    assert_eq!(get(&["service", "exposed"])["spec"]["ports"][0]["port"], 81);
    assert!(s.ok(&["auth", "can-i", "create", "deployments"]).starts_with("yes"));
}

/// client-go's protobuf clients (`Accept: application/vnd.kubernetes.protobuf, */*`): a
/// create with a protobuf body, a get, a list, a 404 and a watch all answered in protobuf,
/// read here with the kube-rs project's k8s-pb types; JSON and Tables still JSON.
#[test]
fn protobuf_clients_get_protobuf_answers() {
    use k8s_pb::api::core::v1::{ConfigMap, ConfigMapList};
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Status, WatchEvent};
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use prost::Message;

    const PB: &str = "application/vnd.kubernetes.protobuf";
    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: Some("v1".into()), kind: Some(kind.into()) }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [b"k8s\0".as_slice(), &unknown.encode_to_vec()].concat()
    }
    fn open<M: Message + Default>(body: &[u8], kind: &str) -> M {
        let unknown = Unknown::decode(body.strip_prefix(b"k8s\0").expect("the protobuf magic")).unwrap();
        assert_eq!(unknown.type_meta.unwrap().kind.as_deref(), Some(kind));
        M::decode(unknown.raw.unwrap().as_slice()).unwrap()
    }

    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[OWN_CONFIGMAPS]);
    let token = s.admin_token();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = s.http_client();
    let send = |method: &str, path: &str, accept: &str, body: Option<Vec<u8>>| {
        let mut req = client.request(method.parse().unwrap(), s.url(path)).bearer_auth(&token).header("Accept", accept);
        if let Some(b) = body {
            req = req.header("Content-Type", PB).body(b);
        }
        rt.block_on(async {
            let resp = req.send().await.unwrap();
            let code = resp.status().as_u16();
            let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            (code, ct, resp.bytes().await.unwrap().to_vec())
        })
    };
    let accept = "application/vnd.kubernetes.protobuf, */*";
    let base = "/api/v1/namespaces/default/configmaps";

    let (code, _, body) = send("GET", base, "application/json", None);
    assert_eq!(code, 200);
    let rv0: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let rv0 = rv0["metadata"]["resourceVersion"].as_str().unwrap().to_string();

    // Create: protobuf in, protobuf out.
    let cm = ConfigMap {
        metadata: Some(ObjectMeta { name: Some("pb".into()), ..Default::default() }),
        data: [("greeting".to_string(), "hello".to_string())].into(),
        ..Default::default()
    };
    let (code, ct, body) = send("POST", base, accept, Some(envelope("ConfigMap", cm.encode_to_vec())));
    assert_eq!((code, ct.as_str()), (201, PB), "{}", String::from_utf8_lossy(&body));
    let created: ConfigMap = open(&body, "ConfigMap");
    let md = created.metadata.unwrap();
    assert_eq!(md.namespace.as_deref(), Some("default"));
    assert!(md.uid.is_some_and(|u| !u.is_empty()) && md.creation_timestamp.is_some_and(|t| t.seconds.unwrap_or(0) > 0));

    // Get and list.
    let (code, ct, body) = send("GET", &format!("{base}/pb"), accept, None);
    assert_eq!((code, ct.as_str()), (200, PB));
    let got: ConfigMap = open(&body, "ConfigMap");
    assert_eq!(got.data.get("greeting").map(String::as_str), Some("hello"));
    let (code, ct, body) = send("GET", base, "application/vnd.kubernetes.protobuf;q=0.9, application/json;q=0.5", None);
    assert_eq!((code, ct.as_str()), (200, PB));
    let list: ConfigMapList = open(&body, "ConfigMapList");
    let names: Vec<_> = list.items.iter().filter_map(|c| c.metadata.as_ref()?.name.clone()).collect();
    assert!(names.contains(&"pb".to_string()), "{names:?}");
    assert!(list.metadata.unwrap().resource_version.is_some_and(|rv| rv.parse::<i64>().unwrap() > 0));

    // An error is a Status.
    let (code, ct, body) = send("GET", &format!("{base}/missing"), accept, None);
    assert_eq!((code, ct.as_str()), (404, PB));
    let status: Status = open(&body, "Status");
    assert_eq!((status.code, status.reason.as_deref()), (Some(404), Some("NotFound")));

    // A watch: length-prefixed WatchEvents, each object in its own envelope.
    let (code, _, body) = send("DELETE", &format!("{base}/pb"), accept, None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (code, ct, body) = send("GET", &format!("{base}?watch=1&resourceVersion={rv0}&timeoutSeconds=1"), accept, None);
    assert_eq!((code, ct.as_str()), (200, "application/vnd.kubernetes.protobuf;stream=watch"));
    let mut rest = body.as_slice();
    let mut seen = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        let event = WatchEvent::decode(&tail[..len]).unwrap();
        rest = &tail[len..];
        let obj: ConfigMap = open(&event.object.unwrap().raw.unwrap(), "ConfigMap");
        seen.push((event.r#type.unwrap(), obj.metadata.unwrap().name.unwrap()));
    }
    assert_eq!(seen, [("ADDED".to_string(), "pb".to_string()), ("DELETED".into(), "pb".into())]);

    // Asked for JSON, or for a Table: JSON.
    let (code, ct, body) = send("GET", base, "application/json, application/vnd.kubernetes.protobuf", None);
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io, application/vnd.kubernetes.protobuf, */*";
    let (code, ct, body) = send("GET", "/api/v1/namespaces", table, None);
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    let t: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(t["kind"], "Table");
}
