//! RBAC as kube-apiserver enforces it, driven by the real kubectl: Roles and ClusterRoles
//! granted by bindings to users, groups and service accounts (`kubectl --as`, which the
//! admin may), aggregated ClusterRoles, the default policy, kube's 403 wording, and
//! `kubectl auth can-i`.

mod common;

use std::fs;
use std::path::Path;

use common::server::{Server, free_port};
use serde_json::{Value, json};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// kubectl as the admin impersonating `user` (and `groups`): (success, stdout, stderr).
fn kubectl_as(s: &Server, user: &str, groups: &[&str], args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--as", user];
    for g in groups {
        all.extend(["--as-group", g]);
    }
    all.extend(args);
    let out = s.kubectl(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Binds ClusterRole `role` to User `user` in `ns`, from YAML so the test sees its
/// subject's apiGroup exactly.
fn bind(s: &Server, dir: &Path, name: &str, ns: &str, role: &str, user: &str) {
    let yaml = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {name}, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
    );
    s.ok(&["create", "-f", &write(dir, &format!("{name}.yaml"), &yaml)]);
}

fn may(s: &Server, user: &str, args: &[&str]) -> String {
    let (ok, out, err) = kubectl_as(s, user, &[], args);
    assert!(ok, "{user} should be allowed: kubectl {args:?}: {err}");
    out
}

/// Refused: kubectl's error line.
fn may_not(s: &Server, user: &str, args: &[&str]) -> String {
    let (ok, out, err) = kubectl_as(s, user, &[], args);
    assert!(!ok, "{user} should be refused: kubectl {args:?}: {out}");
    // kubectl words a 403 as "Error from server (Forbidden): …", or for its imperative
    // creates as "error: failed to create …: … is forbidden: …", against kube as here.
    assert!(err.contains("(Forbidden)") || err.contains(" is forbidden: "), "kubectl {args:?}: not a 403: {err}");
    err.trim().to_string()
}

const GRANTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: dev}
---
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: dev}
rules:
- apiGroups: [""]
  resources: [pods, pods/log]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [configmaps]
  resourceNames: [allowed]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: jane-reads, namespace: dev}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: jane}
- {kind: ServiceAccount, name: builder}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: allowed, namespace: dev}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other, namespace: dev}
"#;

const AGGREGATED: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: workloads}
aggregationRule:
  clusterRoleSelectors:
  - matchLabels: {example.com/aggregate-to-workloads: "true"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: devs-workloads}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: workloads}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: devs}
"#;

const DEPLOYMENT_READER: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: deployment-reader
  labels: {example.com/aggregate-to-workloads: "true"}
rules:
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list]
"#;

#[test]
fn a_binding_grants_its_roles_rules_to_its_subjects_at_once_and_nothing_more() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    // Nothing bound: kube's own wording.
    assert_eq!(
        may_not(&s, "jane", &["get", "pods", "-n", "dev"]),
        r#"Error from server (Forbidden): pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "dev""#
    );
    s.ok(&["apply", "-f", &write(tmp.path(), "grants.yaml", GRANTS)]);

    // The Role in dev, bound in dev: the very next request may.
    may(&s, "jane", &["get", "pods", "-n", "dev"]);
    may(&s, "jane", &["get", "--raw", "/api/v1/namespaces/dev/pods?watch=1&timeoutSeconds=1"]);
    assert_eq!(
        may_not(&s, "jane", &["get", "pods", "-n", "prod"]),
        r#"Error from server (Forbidden): pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "prod""#
    );
    may_not(&s, "jane", &["get", "pods", "-A"]);
    may_not(&s, "jane", &["get", "secrets", "-n", "dev"]);
    assert!(may_not(&s, "jane", &["delete", "pod", "p", "-n", "dev"]).contains(
        r#"pods "p" is forbidden: User "jane" cannot delete resource "pods" in API group "" in the namespace "dev""#
    ));
    // resourceNames: that one object only.
    may(&s, "jane", &["get", "configmap", "allowed", "-n", "dev"]);
    assert!(may_not(&s, "jane", &["get", "configmap", "other", "-n", "dev"]).contains(
        r#"configmaps "other" is forbidden: User "jane" cannot get resource "configmaps" in API group "" in the namespace "dev""#
    ));
    may_not(&s, "jane", &["get", "configmaps", "-n", "dev"]);
    // A ServiceAccount subject without a namespace is the binding's namespace's.
    may(&s, "system:serviceaccount:dev:builder", &["get", "pods", "-n", "dev"]);
    may_not(&s, "system:serviceaccount:prod:builder", &["get", "pods", "-n", "dev"]);
    may_not(&s, "bob", &["get", "pods", "-n", "dev"]);

    // Unbound: refused again at once.
    s.ok(&["delete", "rolebinding", "jane-reads", "-n", "dev"]);
    may_not(&s, "jane", &["get", "pods", "-n", "dev"]);

    // An aggregated ClusterRole, bound to a group, gets what a labelled role adds.
    s.ok(&["apply", "-f", &write(tmp.path(), "agg.yaml", AGGREGATED)]);
    let (ok, _, err) = kubectl_as(&s, "bob", &["devs"], &["get", "deployments", "-A"]);
    assert!(
        !ok && err.contains("cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"),
        "{err}"
    );
    s.ok(&["apply", "-f", &write(tmp.path(), "reader.yaml", DEPLOYMENT_READER)]);
    let rules = s.ok(&["get", "clusterrole", "workloads", "-o", "jsonpath={.rules}"]);
    assert!(rules.contains("deployments"), "{rules}");
    let (ok, _, err) = kubectl_as(&s, "bob", &["devs"], &["get", "deployments", "-A"]);
    assert!(ok, "{err}");
    let (ok, _, _) = kubectl_as(&s, "bob", &["devs"], &["delete", "deployment", "x", "-n", "dev"]);
    assert!(!ok);
    s.ok(&["label", "clusterrole", "deployment-reader", "example.com/aggregate-to-workloads-"]);
    let rules = s.ok(&["get", "clusterrole", "workloads", "-o", "jsonpath={.rules}"]);
    assert!(matches!(rules.trim(), "" | "[]"), "{rules}");
    let (ok, _, _) = kubectl_as(&s, "bob", &["devs"], &["get", "deployments", "-A"]);
    assert!(!ok, "the aggregated rule went with the label");
}

#[test]
fn the_default_roles_and_bindings_exist_and_grant_as_in_kube_and_edits_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(&tmp.path().join("data"), port, &[]);
    let names = [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:discovery",
        "system:basic-user",
        "system:public-info-viewer",
    ];
    for n in names {
        let annotation = s.ok(&[
            "get",
            "clusterrole",
            n,
            "-o",
            r"jsonpath={.metadata.annotations.rbac\.authorization\.kubernetes\.io/autoupdate}",
        ]);
        assert_eq!(annotation, "true", "{n}");
    }
    let subjects = |b: &str| s.ok(&["get", "clusterrolebinding", b, "-o", "jsonpath={.subjects[*].name}"]);
    assert_eq!(subjects("cluster-admin"), "system:masters");
    assert_eq!(subjects("system:discovery"), "system:authenticated");
    assert_eq!(subjects("system:basic-user"), "system:authenticated");
    assert_eq!(subjects("system:public-info-viewer"), "system:authenticated system:unauthenticated");
    // Aggregated as kube's controller does: view ⊂ edit ⊂ admin.
    let rules = |r: &str| s.ok(&["get", "clusterrole", r, "-o", "json"]);
    let view: Value = serde_json::from_str(&rules("view")).unwrap();
    let edit: Value = serde_json::from_str(&rules("edit")).unwrap();
    let admin: Value = serde_json::from_str(&rules("admin")).unwrap();
    for rule in view["rules"].as_array().unwrap() {
        assert!(edit["rules"].as_array().unwrap().contains(rule), "edit lacks {rule}");
        assert!(admin["rules"].as_array().unwrap().contains(rule), "admin lacks {rule}");
    }
    assert!(admin["rules"].to_string().contains("rolebindings") && !edit["rules"].to_string().contains("rolebindings"));

    // Everyone signed in may discover, and no more.
    may(&s, "jane", &["get", "--raw", "/apis"]);
    may(&s, "jane", &["version"]);
    assert_eq!(
        may_not(&s, "jane", &["get", "--raw", "/metrics"]),
        r#"Error from server (Forbidden): forbidden: User "jane" cannot get path "/metrics""#
    );
    may_not(&s, "jane", &["get", "pods"]);
    // view in default: read, not secrets, not write; edit: write.
    bind(&s, tmp.path(), "jane-view", "default", "view", "jane");
    may(&s, "jane", &["get", "pods,services,deployments,configmaps"]);
    may_not(&s, "jane", &["get", "secrets"]);
    may_not(&s, "jane", &["create", "configmap", "c"]);
    may_not(&s, "jane", &["get", "pods", "-n", "kube-system"]);
    bind(&s, tmp.path(), "jane-edit", "default", "edit", "jane");
    may(&s, "jane", &["create", "configmap", "c"]);
    may(&s, "jane", &["get", "secrets"]);
    may_not(&s, "jane", &["get", "rolebindings"]);

    // A user's edits of the defaults survive a restart.
    s.ok(&["label", "clusterrole", "system:basic-user", "example.com/kept=yes"]);
    s.ok(&["patch", "clusterrolebinding", "system:discovery", "--type=json", "-p",
        r#"[{"op":"add","path":"/subjects/-","value":{"kind":"Group","name":"extra","apiGroup":"rbac.authorization.k8s.io"}}]"#]);
    s.stop();
    let s = Server::start(&tmp.path().join("data"), port, &[]);
    assert_eq!(
        s.ok(&["get", "clusterrole", "system:basic-user", "-o", "jsonpath={.metadata.labels.example\\.com/kept}"]),
        "yes"
    );
    assert_eq!(subjects_of(&s, "system:discovery"), "system:authenticated extra");
}

fn subjects_of(s: &Server, b: &str) -> String {
    s.ok(&["get", "clusterrolebinding", b, "-o", "jsonpath={.subjects[*].name}"])
}

#[test]
fn kubectl_auth_can_i_answers_as_against_kube() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    s.ok(&["create", "namespace", "dev"]);
    assert_eq!(s.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    assert_eq!(s.ok(&["auth", "can-i", "*", "*"]).trim(), "yes");
    let (ok, out, err) = kubectl_as(&s, "jane", &[], &["auth", "can-i", "get", "pods", "-n", "dev"]);
    assert!(!ok && out.trim() == "no", "{out} {err}");

    bind(&s, tmp.path(), "jane-view", "dev", "view", "jane");
    assert_eq!(may(&s, "jane", &["auth", "can-i", "get", "pods", "-n", "dev"]).trim(), "yes");
    assert_eq!(may(&s, "jane", &["auth", "can-i", "get", "pods", "--subresource=log", "-n", "dev"]).trim(), "yes");
    for no in [
        &["auth", "can-i", "get", "pods", "-n", "default"][..],
        &["auth", "can-i", "get", "secrets", "-n", "dev"],
        &["auth", "can-i", "delete", "pods", "-n", "dev"],
        &["auth", "can-i", "get", "pods", "--subresource=exec", "-n", "dev"],
    ] {
        let (ok, out, _) = kubectl_as(&s, "jane", &[], no);
        assert!(!ok && out.trim() == "no", "{no:?}: {out}");
    }
    // The admin asks about jane.
    assert_eq!(s.ok(&["auth", "can-i", "list", "deployments", "--as=jane", "-n", "dev"]).trim(), "yes");
    assert_eq!(s.ok(&["auth", "can-i", "get", "/version", "--as=jane"]).trim(), "yes");

    // --list: the rules in the namespace, kubectl's table.
    let list = may(&s, "jane", &["auth", "can-i", "--list", "-n", "dev"]);
    let line =
        |what: &str| list.lines().find(|l| l.split_whitespace().next() == Some(what)).map(|l| l.trim_end().to_string());
    let pods = line("pods").unwrap_or_else(|| panic!("{list}"));
    assert!(pods.ends_with("[get list watch]"), "{list}");
    let ssar = line("selfsubjectaccessreviews.authorization.k8s.io").unwrap_or_else(|| panic!("{list}"));
    assert!(ssar.ends_with("[create]"), "{list}");
    assert!(list.lines().any(|l| l.contains("[/api/*]") && l.trim_end().ends_with("[get]")), "{list}");
    assert!(line("secrets").is_none(), "{list}");
    let admin = s.ok(&["auth", "can-i", "--list"]);
    assert!(admin.lines().any(|l| l.starts_with("*.*") && l.trim_end().ends_with("[*]")), "{admin}");

    // SubjectAccessReview: the admin may ask about anyone, with the reason; jane may not.
    let sar = write(
        tmp.path(),
        "sar.json",
        &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "jane", "resourceAttributes": {"namespace": "dev", "verb": "list", "resource": "pods"}}})
        .to_string(),
    );
    let answer: Value = serde_json::from_str(&s.ok(&[
        "create",
        "--raw",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        "-f",
        &sar,
    ]))
    .unwrap();
    assert_eq!(answer["status"]["allowed"], true, "{answer}");
    assert_eq!(
        answer["status"]["reason"],
        r#"RBAC: allowed by RoleBinding "jane-view/dev" of ClusterRole "view" to User "jane""#
    );
    let err =
        may_not(&s, "jane", &["create", "--raw", "/apis/authorization.k8s.io/v1/subjectaccessreviews", "-f", &sar]);
    assert!(err.ends_with(r#"subjectaccessreviews.authorization.k8s.io is forbidden: User "jane" cannot create resource "subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope"#), "{err}");
    let bad = write(
        tmp.path(),
        "bad.json",
        &json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "spec": {"user": "jane"}})
            .to_string(),
    );
    let err = s.fails(&["create", "--raw", "/apis/authorization.k8s.io/v1/subjectaccessreviews", "-f", &bad]);
    assert!(err.contains("exactly one of nonResourceAttributes or resourceAttributes must be specified"), "{err}");

    // whoami as jane: her name and system:authenticated.
    let whoami = may(&s, "jane", &["auth", "whoami"]);
    assert!(whoami.contains("jane") && whoami.contains("system:authenticated"), "{whoami}");
}

#[test]
fn impersonation_is_authorized_by_the_impersonate_verb() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    s.ok(&["create", "namespace", "dev"]);
    bind(&s, tmp.path(), "jane-view", "dev", "view", "jane");
    // A node's token: a user that is not the admin.
    let join = fs::read_to_string(s.dir.join("node-token")).unwrap().trim().to_string();
    let body = write(tmp.path(), "register.json", &json!({"nodeName": "n1", "password": "pw"}).to_string());
    let out = s.kubectl_with_token(&join, &["create", "--raw", "/v1-nodectl/register", "-f", &body]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = serde_json::from_slice::<Value>(&out.stdout).unwrap()["token"].as_str().unwrap().to_string();

    let as_jane = ["--as", "jane", "get", "pods", "-n", "dev"];
    let out = s.kubectl_with_token(&token, &as_jane);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(r#"users "jane" is forbidden: User "system:node:n1" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{err}"
    );
    let impersonator = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonate-jane}
rules:
- {apiGroups: [""], resources: [users], resourceNames: [jane], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: n1-impersonates-jane}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: impersonate-jane}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:node:n1"}
"#;
    s.ok(&["apply", "-f", &write(tmp.path(), "imp.yaml", impersonator)]);
    let out = s.kubectl_with_token(&token, &as_jane);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // As jane, the node has jane's rights, not its own.
    let out = s.kubectl_with_token(&token, &["--as", "jane", "get", "nodes"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains(r#"User "jane" cannot list resource "nodes""#)
    );
    // Not bob, nor a group jane is not in.
    let out = s.kubectl_with_token(&token, &["--as", "bob", "get", "pods", "-n", "dev"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"users "bob" is forbidden"#));
    let out = s.kubectl_with_token(&token, &["--as", "jane", "--as-group", "system:masters", "get", "secrets", "-A"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            r#"groups "system:masters" is forbidden: User "system:node:n1" cannot impersonate resource "groups""#
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The admin may impersonate anyone, a service account too.
    s.ok(&["get", "pods", "-n", "dev", "--as=jane"]);
    let whoami = s.ok(&["auth", "whoami", "--as=system:serviceaccount:dev:builder"]);
    assert!(whoami.contains("system:serviceaccounts:dev"), "{whoami}");
    // A node impersonated is that node: the node authorizer confines it, not RBAC.
    let as_node = ["--as=system:node:n1", "--as-group=system:nodes"];
    let whoami = s.ok(&[&as_node[..], &["auth", "whoami"]].concat());
    assert!(whoami.contains("system:node:n1") && whoami.contains("system:nodes"), "{whoami}");
    s.ok(&[&as_node[..], &["get", "nodes"]].concat());
    let err = s.fails(&[&as_node[..], &["get", "configmaps", "-n", "dev"]].concat());
    assert!(err.contains(r#"User "system:node:n1" cannot list resource "configmaps""#), "{err}");
    // Without the group it is an ordinary user, whom RBAC gives nothing here.
    let err = s.fails(&["--as=system:node:n1", "get", "nodes"]);
    assert!(err.contains(r#"User "system:node:n1" cannot list resource "nodes""#), "{err}");
}

#[test]
fn kubectl_create_token_gives_a_service_account_token_that_rbac_then_judges() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let sa = "apiVersion: v1\nkind: Namespace\nmetadata: {name: dev}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: builder, namespace: dev}\n";
    s.ok(&["create", "-f", &write(tmp.path(), "sa.yaml", sa)]);
    let token = s.ok(&["create", "token", "builder", "-n", "dev"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let whoami = String::from_utf8(s.kubectl_with_token(&token, &["auth", "whoami"]).stdout).unwrap();
    for want in ["system:serviceaccount:dev:builder", "system:serviceaccounts:dev", "system:authenticated"] {
        assert!(whoami.contains(want), "{want}: {whoami}");
    }
    let out = s.kubectl_with_token(&token, &["get", "pods", "-n", "dev"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"pods is forbidden: User "system:serviceaccount:dev:builder" cannot list resource "pods" in API group "" in the namespace "dev""#),
        "{err}"
    );
    bind(&s, tmp.path(), "builder-view", "dev", "view", "system:serviceaccount:dev:builder");
    assert!(s.kubectl_with_token(&token, &["get", "pods", "-n", "dev"]).status.success());
    // Too short a duration, as kube refuses it.
    assert!(s.fails(&["create", "token", "builder", "-n", "dev", "--duration=1m"]).contains("less than 10 minutes"));
    // A token altered, or of a ServiceAccount that is gone (even if made again), is no one.
    let (head, rest) = token.split_once('.').unwrap();
    let forged = format!("{head}.{}", rest.replacen(|c: char| c.is_ascii_alphanumeric(), "A", 1));
    let out = s.kubectl_with_token(&forged, &["auth", "whoami"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"));
    s.ok(&["delete", "serviceaccount", "builder", "-n", "dev"]);
    s.ok(&[
        "create",
        "-f",
        &write(
            tmp.path(),
            "sa2.yaml",
            &sa.replace("apiVersion: v1\nkind: Namespace\nmetadata: {name: dev}\n---\n", ""),
        ),
    ]);
    let out = s.kubectl_with_token(&token, &["auth", "whoami"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A WebSocket exec, attach or port-forward is a GET, but kube-apiserver 1.31+ authorizes it
/// as create (AuthorizePodWebsocketUpgradeCreatePermission): get on pods/exec is not enough.
#[test]
fn streaming_requests_made_as_gets_need_create() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &["--leader-elect=false"]);
    let yaml = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: exec-get}\n\
                rules: [{apiGroups: [\"\"], resources: [pods, pods/exec, pods/attach, pods/portforward], verbs: [get]}]\n---\n\
                apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: exec-create}\n\
                rules: [{apiGroups: [\"\"], resources: [pods/exec, pods/attach, pods/portforward], verbs: [create]}]\n";
    s.ok(&["apply", "-f", &write(tmp.path(), "roles.yaml", yaml)]);
    bind(&s, tmp.path(), "ann-get", "default", "exec-get", "ann");
    for sub in ["exec?command=true&stdout=true", "attach?stdout=true", "portforward?ports=80"] {
        let path = format!("/api/v1/namespaces/default/pods/p/{sub}");
        let what = sub.split('?').next().unwrap();
        let err = may_not(&s, "ann", &["get", "--raw", &path]);
        assert!(err.contains(&format!("cannot create resource \"pods/{what}\" in API group \"\"")), "{err}");
    }
    bind(&s, tmp.path(), "ann-create", "default", "exec-create", "ann");
    for sub in ["exec?command=true&stdout=true", "attach?stdout=true", "portforward?ports=80"] {
        // Past authorization: the pod does not exist.
        let (ok, _, err) =
            kubectl_as(&s, "ann", &[], &["get", "--raw", &format!("/api/v1/namespaces/default/pods/p/{sub}")]);
        assert!(!ok && err.contains("NotFound") && !err.contains("Forbidden"), "{err}");
    }
}
