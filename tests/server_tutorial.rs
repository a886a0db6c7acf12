//! A Kubernetes tutorial's kubectl session against `nodectl server`, each output line
//! compared with what kubectl 1.32 prints against kube-apiserver 1.32 (with no nodes: the
//! pods stay Pending). The transcripts below are kube's; a `*` in a word stands for what
//! differs from run to run (ages, addresses, generated names, resourceVersions, temp
//! files), and words are compared with runs of spaces taken as one, since kubectl pads its
//! columns to the widest value.

mod common;

use std::fs;
use std::path::Path;

use common::server::{Server, free_port, wait_until};

/// Whether `word` matches `pattern`, where `*` stands for any run of characters.
fn matches(pattern: &str, word: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == word;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !word.starts_with(first) || !word[first.len()..].ends_with(last) || word.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &word[first.len()..word.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Runs `kubectl ARGS` (split on spaces) and compares its output, stdout then stderr, line
/// by line with `expected`; `code` is the exit code kubectl must give.
fn session(s: &Server, args: &str, code: i32, expected: &str) {
    let argv: Vec<&str> = args.split(' ').collect();
    let out = s.kubectl(&argv);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Blank lines at the end are kubectl's templates' and are left out on both sides.
    let got: Vec<&str> = text.trim_end().lines().collect();
    let want: Vec<&str> = expected.trim_start_matches('\n').trim_end().lines().collect();
    let shown = || format!("$ kubectl {args}\n--- kube-apiserver's:\n{expected}\n--- ours:\n{text}");
    assert_eq!(out.status.code(), Some(code), "exit code\n{}", shown());
    assert_eq!(got.len(), want.len(), "line count\n{}", shown());
    for (g, w) in got.iter().zip(&want) {
        let (gw, ww): (Vec<&str>, Vec<&str>) = (g.split_whitespace().collect(), w.split_whitespace().collect());
        let same = gw.len() == ww.len() && gw.iter().zip(&ww).all(|(g, w)| matches(w, g));
        assert!(same, "line {g:?} is not kube's {w:?}\n{}", shown());
    }
}

fn write(dir: &Path, name: &str, yaml: &str) -> String {
    let file = dir.join(name);
    fs::write(&file, yaml).unwrap();
    file.to_str().unwrap().to_string()
}

/// A generated name's random part uses apimachinery's alphabet (no vowels, no 0, 1, 3).
fn kube_suffix(name: &str) -> bool {
    let suffix = name.rsplit('-').next().unwrap_or_default();
    suffix.len() == 5 && suffix.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
}

#[test]
fn a_tutorial_session_prints_what_kube_apiserver_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);

    session(&s, "create deployment web --image=busybox -- sleep 3600", 0, "deployment.apps/web created");
    session(&s, "expose deployment web --port=80 --target-port=8080", 0, "service/web exposed");
    wait_until("the ReplicaSet has its pod and its status", 60, || {
        let rs = s.json(&["get", "rs", "-l", "app=web"]);
        (rs["items"][0]["status"]["replicas"] == 1).then_some(())
    });
    wait_until("the Deployment's status counts it", 60, || {
        (s.json(&["get", "deploy", "web"])["status"]["updatedReplicas"] == 1).then_some(())
    });
    let pod = s.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
    assert!(kube_suffix(pod.trim()), "{pod}");
    session(
        &s,
        "get deployment web -o wide",
        0,
        "
NAME   READY   UP-TO-DATE   AVAILABLE   AGE   CONTAINERS   IMAGES    SELECTOR
web    0/1     1            0           *     busybox      busybox   app=web",
    );
    session(
        &s,
        "get service web -o wide",
        0,
        "
NAME   TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE   SELECTOR
web    ClusterIP   10.*         <none>        80/TCP    *     app=web",
    );
    session(
        &s,
        "get all",
        0,
        "
NAME                       READY   STATUS    RESTARTS   AGE
pod/web-*-*                0/1     Pending   0          *

NAME                 TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE
service/kubernetes   ClusterIP   10.96.0.1    <none>        443/TCP   *
service/web          ClusterIP   10.*         <none>        80/TCP    *

NAME                  READY   UP-TO-DATE   AVAILABLE   AGE
deployment.apps/web   0/1     1            0           *

NAME                             DESIRED   CURRENT   READY   AGE
replicaset.apps/web-*            1         1         0       *",
    );
    session(
        &s,
        "api-resources --api-group=apps",
        0,
        "
NAME                  SHORTNAMES   APIVERSION   NAMESPACED   KIND
controllerrevisions                apps/v1      true         ControllerRevision
daemonsets            ds           apps/v1      true         DaemonSet
deployments           deploy       apps/v1      true         Deployment
replicasets           rs           apps/v1      true         ReplicaSet
statefulsets          sts          apps/v1      true         StatefulSet",
    );
    session(
        &s,
        "explain deployment.spec.replicas",
        0,
        "
GROUP:      apps
KIND:       Deployment
VERSION:    v1

FIELD: replicas <integer>


DESCRIPTION:
    Number of desired pods. This is a pointer to distinguish between explicit
    zero and not specified. Defaults to 1.
    ",
    );

    // Scale, roll out a new image, see the history.
    session(&s, "scale deployment web --replicas=2", 0, "deployment.apps/web scaled");
    session(&s, "set image deployment/web busybox=busybox:1.36", 0, "deployment.apps/web image updated");
    session(&s, "label deployment web tier=frontend", 0, "deployment.apps/web labeled");
    wait_until("the rollout made a second ReplicaSet", 60, || {
        (s.json(&["get", "rs", "-l", "app=web"])["items"].as_array().map_or(0, Vec::len) == 2).then_some(())
    });
    session(
        &s,
        "rollout history deployment/web",
        0,
        "
deployment.apps/web 
REVISION  CHANGE-CAUSE
1         <none>
2         <none>
",
    );

    // Server-side apply, diff, server dry runs.
    let cm = write(
        tmp.path(),
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tutorial\ndata:\n  color: blue\n",
    );
    session(&s, &format!("apply --server-side -f {cm}"), 0, "configmap/tutorial serverside-applied");
    session(&s, &format!("apply --server-side -f {cm}"), 0, "configmap/tutorial serverside-applied");
    let red = write(
        tmp.path(),
        "red.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tutorial\ndata:\n  color: red\n",
    );
    session(
        &s,
        &format!("diff --server-side -f {red}"),
        1,
        "
diff -u -N /tmp/LIVE-*/v1.ConfigMap.default.tutorial /tmp/MERGED-*/v1.ConfigMap.default.tutorial
--- /tmp/LIVE-*/v1.ConfigMap.default.tutorial * * *
+++ /tmp/MERGED-*/v1.ConfigMap.default.tutorial * * *
@@ -1,6 +1,6 @@
 apiVersion: v1
 data:
-  color: blue
+  color: red
 kind: ConfigMap
 metadata:
   creationTimestamp: \"*\"",
    );
    session(
        &s,
        &format!("apply --server-side --dry-run=server -f {red}"),
        0,
        "configmap/tutorial serverside-applied (server dry run)",
    );
    session(&s, "delete configmap tutorial --dry-run=server", 0, "configmap \"tutorial\" deleted (server dry run)");
    session(&s, "get configmap tutorial -o jsonpath={.data.color}", 0, "blue");

    // Errors, in kube's words.
    session(&s, "get pod nope", 1, "Error from server (NotFound): pods \"nope\" not found");
    session(
        &s,
        "create configmap tutorial",
        1,
        "error: failed to create configmap: configmaps \"tutorial\" already exists",
    );
    let bad = write(
        tmp.path(),
        "bad.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bad\nspec:\n  selector:\n    matchLabels: {app: bad}\n  template:\n    metadata:\n      labels: {app: other}\n    spec:\n      containers: [{name: c, image: busybox}]\n",
    );
    session(
        &s,
        &format!("create -f {bad}"),
        1,
        "The Deployment \"bad\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`",
    );

    // Who may do what.
    session(&s, "auth can-i create pods", 0, "yes");
    session(&s, "auth can-i list pods --as=jane", 1, "no");
    session(
        &s,
        "create rolebinding jane-view --clusterrole=view --user=jane",
        0,
        "rolebinding.rbac.authorization.k8s.io/jane-view created",
    );
    session(&s, "auth can-i list pods --as=jane", 0, "yes");
    session(&s, "auth can-i create pods --as=jane", 1, "no");
    session(&s, "auth can-i list pods --as=jane -n kube-system", 1, "no");
    session(
        &s,
        "auth whoami --as=jane --as-group=developers",
        0,
        "
ATTRIBUTE   VALUE
Username    jane
Groups      [developers system:authenticated]",
    );
    session(&s, "get --raw /healthz", 0, "ok");
}
