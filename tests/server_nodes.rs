//! Nodes and the control plane, driven by the real kubectl: a node registers with the join
//! token and gets a token of its own, with which it may read what its node needs and
//! write only its own Node, its own Lease, events and the status of pods bound to it; the
//! pods/binding subresource; pods/log and pods/exec answered with the node they need.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::server::{Server, free_port};
use serde_json::{Value, json};

const SETUP: &str = "
apiVersion: v1
kind: Secret
metadata: {name: s-used}
stringData: {k: v}
---
apiVersion: v1
kind: Secret
metadata: {name: s-other}
stringData: {k: v}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm-used}
data: {k: v}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm-other}
data: {k: v}
---
apiVersion: v1
kind: Pod
metadata: {name: p1}
spec:
  nodeName: n1
  containers:
  - name: c
    image: busybox
    env:
    - name: K
      valueFrom: {secretKeyRef: {name: s-used, key: k}}
  volumes:
  - name: cfg
    configMap: {name: cm-used}
---
apiVersion: v1
kind: Pod
metadata: {name: p2}
spec:
  nodeName: n2
  containers:
  - {name: c, image: busybox, envFrom: [{secretRef: {name: s-other}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p3}
spec:
  containers:
  - {name: c, image: busybox}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
";

/// Registers `node` with the join token through `kubectl create --raw`: the answer.
fn register(s: &Server, tmp: &Path, token: &str, node: &str, password: &str) -> Result<Value, String> {
    let body = tmp.join(format!("register-{node}.json"));
    fs::write(&body, json!({"nodeName": node, "password": password}).to_string()).unwrap();
    let out = s.kubectl_with_token(token, &["create", "--raw", "/v1-nodectl/register", "-f", body.to_str().unwrap()]);
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// kubectl with the kubeconfig a registration answered.
struct Node {
    kubeconfig: PathBuf,
}

impl Node {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl is installed")
    }

    fn may(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "the node should be allowed: kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Refused with 403, as kubectl prints it: the message.
    fn may_not(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "the node should be refused: kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(err.contains("Forbidden") || err.contains("is forbidden"), "kubectl {args:?}: not a 403: {err}");
        err
    }
}

fn write(tmp: &Path, name: &str, text: &str) -> String {
    let p = tmp.join(name);
    fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn a_registered_node_may_do_what_its_node_needs_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let join = fs::read_to_string(s.dir.join("node-token")).unwrap().trim().to_string();
    s.ok(&["create", "-f", &write(tmp.path(), "setup.yaml", SETUP)]);

    // The join token registers, and nothing else.
    let creds = register(&s, tmp.path(), &join, "n1", "n1-password").unwrap();
    assert_eq!((creds["nodeName"].as_str(), creds["user"].as_str()), (Some("n1"), Some("system:node:n1")), "{creds}");
    assert_eq!(creds["caCert"].as_str().unwrap(), fs::read_to_string(s.dir.join("ca.crt")).unwrap());
    let out = s.kubectl_with_token(&join, &["get", "pods"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Forbidden") && err.contains("system:bootstrap"), "{err}");
    let out = s.kubectl_with_token(
        "not-a-token",
        &["create", "--raw", "/v1-nodectl/register", "-f", tmp.path().join("register-n1.json").to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"), "{}", String::from_utf8_lossy(&out.stderr));
    let err = register(&s, tmp.path(), &join, "Not_A_Name", "pw").unwrap_err();
    assert!(err.contains("Invalid") && err.contains("nodeName"), "{err}");

    let kubeconfig = tmp.path().join("n1.kubeconfig");
    fs::write(&kubeconfig, creds["kubeconfig"].as_str().unwrap()).unwrap();
    let n1 = Node { kubeconfig };

    let whoami = n1.may(&["auth", "whoami"]);
    assert!(whoami.contains("system:node:n1") && whoami.contains("system:nodes"), "{whoami}");
    assert!(s.ok(&["auth", "whoami"]).contains("system:masters"));

    // Reads a node needs.
    for p in ["p1", "p2", "p3"] {
        assert!(n1.may(&["get", "pods", "-A"]).contains(p));
    }
    assert_eq!(n1.may(&["get", "pods", "--field-selector", "spec.nodeName=n1", "-o", "name"]).trim(), "pod/p1");
    n1.may(&["get", "nodes"]);
    n1.may(&["get", "services,endpoints,endpointslices", "-A"]);
    n1.may(&["get", "--raw", "/apis/discovery.k8s.io/v1/endpointslices?watch=1&timeoutSeconds=1"]);
    n1.may(&["get", "namespaces"]);
    n1.may(&["get", "--raw", "/api/v1/pods?watch=1&timeoutSeconds=1"]);
    assert!(n1.may(&["get", "secret", "s-used", "-o", "jsonpath={.data.k}"]).contains("dg=="));
    n1.may(&["get", "configmap", "cm-used"]);
    // The cluster's network settings, which the server writes at start and every node reads.
    let cfg = n1.may(&["get", "configmap", "-n", "kube-system", "nodectl-cluster", "-o", "jsonpath={.data}"]);
    assert!(cfg.contains("clusterCIDR"), "{cfg}");
    n1.may_not(&["get", "configmap", "-n", "kube-system", "other"]);
    let one: Value = serde_json::from_str(&n1.may(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Ds-used",
    ]))
    .unwrap();
    assert_eq!(one["items"].as_array().unwrap().len(), 1, "{one}");
    // Secrets and configmaps of pods elsewhere, or of no pod, or all at once: no.
    let err = n1.may_not(&["get", "secret", "s-other"]);
    assert!(
        err.contains("secrets \"s-other\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"),
        "{err}"
    );
    n1.may_not(&["get", "configmap", "cm-other"]);
    n1.may_not(&["get", "secrets"]);
    n1.may_not(&["get", "configmaps", "-A"]);
    n1.may_not(&["get", "--raw", "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Ds-other"]);

    // Its own Node: create, label (a patch), status. Any other: no.
    n1.may(&["create", "-f", &write(tmp.path(), "n1.yaml", "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n")]);
    n1.may(&["label", "node", "n1", "disk=ssd", "kubernetes.io/hostname=n1"]);
    // Not the labels placement trusts (NodeRestriction's rule).
    let err = n1.may_not(&["label", "node", "n1", "node-restriction.kubernetes.io/secure=true"]);
    assert!(
        err.contains(
            "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/secure"
        ),
        "{err}"
    );
    n1.may_not(&["label", "node", "n1", "node-role.kubernetes.io/control-plane="]);
    n1.may(&[
        "patch",
        "node",
        "n1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
    let node: Value = serde_json::from_str(&s.ok(&["get", "node", "n1", "-o", "json"])).unwrap();
    assert_eq!(
        (node["metadata"]["labels"]["disk"].as_str(), node["status"]["conditions"][0]["type"].as_str()),
        (Some("ssd"), Some("Ready")),
        "{node}"
    );
    // Its taints and ownerReferences are the cluster's to set, not its own.
    s.ok(&["taint", "node", "n1", "dedicated=db:NoSchedule"]);
    let err = n1.may_not(&["taint", "node", "n1", "dedicated-"]);
    assert!(err.contains("node \"n1\" is not allowed to modify taints"), "{err}");
    let owner =
        r#"{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"Namespace","name":"default","uid":"u"}]}}"#;
    let err = n1.may_not(&["patch", "node", "n1", "--type=merge", "-p", owner]);
    assert!(err.contains("node \"n1\" is not allowed to modify ownerReferences"), "{err}");
    let node: Value = serde_json::from_str(&s.ok(&["get", "node", "n1", "-o", "json"])).unwrap();
    assert_eq!(node["spec"]["taints"][0]["key"], "dedicated", "{node}");

    // Pods: only mirror pods of its own static pods, bound to itself, reading nothing.
    let mirror = |name: &str, node: &str, extra: &str| {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations: {{kubernetes.io/config.mirror: x}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: busybox{extra}}}]\n"
        );
        write(tmp.path(), &format!("{name}.yaml"), &yaml)
    };
    let plain = write(
        tmp.path(),
        "plain.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: busybox}]\n",
    );
    let err = n1.may_not(&["create", "-f", &plain]);
    assert!(err.contains("node \"n1\" can only create mirror pods"), "{err}");
    n1.may(&["create", "-f", &mirror("static-n1", "n1", "")]);
    let err = n1.may_not(&["create", "-f", &mirror("static-elsewhere", "n2", "")]);
    assert!(err.contains("can only create pods with spec.nodeName set to itself"), "{err}");
    let err = n1.may_not(&[
        "create",
        "-f",
        &mirror("static-secret", "n1", ", env: [{name: A, valueFrom: {secretKeyRef: {name: s-other, key: k}}}]"),
    ]);
    assert!(err.contains("can not create pods that reference secrets"), "{err}");
    s.ok(&["delete", "pod", "static-n1", "--grace-period=0", "--force"]);

    let err = n1.may_not(&["label", "node", "n2", "disk=ssd"]);
    assert!(err.contains("nodes \"n2\" is forbidden: User \"system:node:n1\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope"), "{err}");
    n1.may_not(&[
        "patch",
        "node",
        "n2",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    n1.may_not(&["create", "-f", &write(tmp.path(), "n3.yaml", "apiVersion: v1\nkind: Node\nmetadata:\n  name: n3\n")]);
    n1.may_not(&["delete", "node", "n1"]);

    // Its own Lease in kube-node-lease; no other.
    let lease = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: NAME\n  namespace: NS\nspec:\n  holderIdentity: n1\n  leaseDurationSeconds: 40\n";
    n1.may(&[
        "create",
        "-f",
        &write(tmp.path(), "lease.yaml", &lease.replace("NAME", "n1").replace("NS", "kube-node-lease")),
    ]);
    n1.may(&[
        "-n",
        "kube-node-lease",
        "patch",
        "lease",
        "n1",
        "--type=merge",
        "-p",
        r#"{"spec":{"renewTime":"2025-01-01T00:00:00.000000Z"}}"#,
    ]);
    n1.may(&["-n", "kube-node-lease", "get", "lease", "n1"]);
    let err = n1.may_not(&[
        "create",
        "-f",
        &write(tmp.path(), "lease2.yaml", &lease.replace("NAME", "n2").replace("NS", "kube-node-lease")),
    ]);
    assert!(err.contains("leases.coordination.k8s.io \"n2\" is forbidden"), "{err}");
    n1.may_not(&[
        "create",
        "-f",
        &write(tmp.path(), "lease3.yaml", &lease.replace("NAME", "n1").replace("NS", "default")),
    ]);
    n1.may_not(&["-n", "kube-node-lease", "get", "leases"]);

    // The status of pods bound to it; not their spec, not other pods.
    n1.may(&["patch", "pod", "p1", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Running"}}"#]);
    assert_eq!(s.ok(&["get", "pod", "p1", "-o", "jsonpath={.status.phase}"]), "Running");
    let err = n1.may_not(&[
        "patch",
        "pod",
        "p2",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    assert!(
        err.contains("pods \"p2\" is forbidden: User \"system:node:n1\" cannot patch resource \"pods/status\"")
            && err.contains("not bound to node \"n1\""),
        "{err}"
    );
    n1.may_not(&[
        "patch",
        "pod",
        "p3",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    n1.may_not(&["label", "pod", "p1", "a=b"]);
    n1.may_not(&["create", "-f", &write(tmp.path(), "pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: mine\nspec:\n  nodeName: n1\n  containers:\n  - {name: c, image: busybox}\n")]);
    let binding = write(
        tmp.path(),
        "binding.json",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p3"},"target":{"kind":"Node","name":"n1"}}"#,
    );
    n1.may_not(&["create", "--raw", "/api/v1/namespaces/default/pods/p3/binding", "-f", &binding]);

    // Events; nothing else of the cluster's.
    let event = "apiVersion: v1\nkind: Event\nmetadata:\n  name: n1.started\ninvolvedObject:\n  kind: Node\n  name: n1\nreason: Starting\nmessage: started\ntype: Normal\n";
    n1.may(&["create", "-f", &write(tmp.path(), "event.yaml", event)]);
    n1.may_not(&["create", "configmap", "mine"]);
    n1.may_not(&["delete", "configmap", "cm-used"]);
    n1.may_not(&["label", "namespace", "default", "a=b"]);
    n1.may_not(&["scale", "deployment", "web", "--replicas=0"]);
    let err = n1.may_not(&[
        "create",
        "--raw",
        "/v1-nodectl/register",
        "-f",
        tmp.path().join("register-n1.json").to_str().unwrap(),
    ]);
    assert!(err.contains("system:node:n1"), "{err}");

    // A graceful deletion of a pod bound to it is finished by the node; of others, no.
    s.ok(&["delete", "pod", "p1", "--wait=false"]);
    n1.may_not(&["delete", "pod", "p2", "--grace-period=0", "--force"]);
    n1.may(&["delete", "pod", "p1", "--grace-period=0", "--force"]);
    assert!(s.fails(&["get", "pod", "p1"]).contains("not found"));

    // Registering again: only with the same password, and then the old token is void.
    let err = register(&s, tmp.path(), &join, "n1", "a-guess").unwrap_err();
    assert!(err.contains("Forbidden") && err.contains("already registered"), "{err}");
    n1.may(&["get", "nodes"]);
    let again = register(&s, tmp.path(), &join, "n1", "n1-password").unwrap();
    assert_ne!(again["token"], creds["token"]);
    let out = n1.run(&["get", "nodes"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "the old token still works: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.kubectl_with_token(again["token"].as_str().unwrap(), &["get", "nodes", "-o", "name"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("node/n1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A restart keeps the credentials (they live in the store).
    let (dir, port) = (s.dir.clone(), s.port);
    s.stop();
    let s = Server::start(&dir, port, &[]);
    let token = again["token"].as_str().unwrap();
    let out = s.kubectl_with_token(token, &["get", "pods", "-o", "name"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The admin revokes them: the token is void, and the name registers anew with any
    // password. Neither the node nor the join token may revoke.
    let out = s.kubectl_with_token(token, &["delete", "--raw", "/v1-nodectl/register/n1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Forbidden"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = s.kubectl_with_token(&join, &["delete", "--raw", "/v1-nodectl/register/n1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Forbidden"), "{}", String::from_utf8_lossy(&out.stderr));
    s.ok(&["delete", "--raw", "/v1-nodectl/register/n1"]);
    assert!(s.fails(&["delete", "--raw", "/v1-nodectl/register/n1"]).contains("NotFound"));
    let out = s.kubectl_with_token(token, &["get", "pods"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"), "{}", String::from_utf8_lossy(&out.stderr));
    register(&s, tmp.path(), &join, "n1", "a-new-password").unwrap();
}

#[test]
fn binding_puts_a_pod_on_a_node_once_and_log_and_exec_name_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    s.ok(&["create", "-f", &write(tmp.path(), "pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - {name: a, image: busybox}\n  - {name: b, image: busybox}\n")]);
    let err = s.fails(&["logs", "p", "-c", "a"]);
    assert!(err.contains("BadRequest") && err.contains("pod p does not have a host assigned"), "{err}");

    let bind = |node: &str, kind: &str| {
        let body = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "annotations": {"scheduled-by": "test"}}, "target": {"kind": kind, "name": node}});
        let file = write(tmp.path(), "binding.json", &body.to_string());
        s.kubectl(&["create", "--raw", "/api/v1/namespaces/default/pods/p/binding", "-f", &file])
    };
    let out = bind("n1", "Pod");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("target.kind"), "{err}");
    let out = bind("n1", "Node");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["status"].as_str(), status["code"].as_i64()),
        (Some("Status"), Some("Success"), Some(201)),
        "{status}"
    );
    let pod: Value = serde_json::from_str(&s.ok(&["get", "pod", "p", "-o", "json"])).unwrap();
    assert_eq!(pod["spec"]["nodeName"], "n1");
    assert_eq!(pod["metadata"]["annotations"]["scheduled-by"], "test");
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .expect("a PodScheduled condition");
    assert_eq!(scheduled["status"], "True");
    let out = bind("n2", "Node");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Conflict") && err.contains("pod p is already assigned to node \"n1\""),
        "{err}"
    );
    assert_eq!(s.ok(&["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"]), "n1");

    // log and exec are the node's, found through its Node object, which no node has
    // registered here: NotFound naming it, as kube-apiserver answers (not a 404 that says
    // no such path). portforward is a streaming request: one that does not upgrade is told so.
    let err = s.fails(&["logs", "p", "-c", "a"]);
    assert!(err.contains("NotFound") && err.contains("nodes \"n1\" not found"), "{err}");
    let err = s.fails(&["exec", "p", "-c", "b", "--", "true"]);
    assert!(err.contains("NotFound") && err.contains("nodes \"n1\" not found"), "{err}");
    let err = s.fails(&["attach", "p", "-c", "b"]);
    assert!(err.contains("NotFound") && err.contains("nodes \"n1\" not found"), "{err}");
    let (code, body) =
        s.request("POST", "/api/v1/namespaces/default/pods/p/portforward?ports=80", Some(&s.admin_token()), None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("pods/portforward is a streaming request: upgrade the connection"), "{body}");
    let (code, body) =
        s.request("GET", "/api/v1/namespaces/default/pods/p/log?container=nope", Some(&s.admin_token()), None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("container nope is not valid for pod p"), "{body}");
    let (code, body) = s.request("GET", "/api/v1/namespaces/default/pods/p/log", Some(&s.admin_token()), None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("a container name must be specified for pod p, choose one of: [a b]"), "{body}");
    let (code, body) = s.request("GET", "/api/v1/namespaces/default/pods/gone/log", Some(&s.admin_token()), None);
    assert_eq!(code, 404, "{body}");
    // Discovery lists the subresources, as the API server does.
    let v1: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/api/v1"])).unwrap();
    let names: Vec<&str> = v1["resources"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    for sub in ["pods/binding", "pods/log", "pods/exec", "pods/status", "nodes/status"] {
        assert!(names.contains(&sub), "{sub} missing from discovery: {names:?}");
    }
}
