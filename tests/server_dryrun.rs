//! dryRun=All (issue 13): a write runs through defaulting and validation and stores nothing.
//! Driven by the real kubectl: apply --dry-run=server, delete --dry-run=server and diff
//! leave the live object as it was.

mod common;

use std::process::Command;

use common::server::{Server, free_port};
use serde_json::Value;

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {k: v1}\n";
const CHANGED: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {k: v2}\n";

fn live(s: &Server) -> Value {
    serde_json::from_str(&s.ok(&["get", "configmap", "cm", "-o", "json"])).unwrap()
}

#[test]
fn server_side_dry_runs_of_apply_delete_and_diff_leave_the_live_object_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port(), &[]);
    let (first, changed) = (tmp.path().join("cm.yaml"), tmp.path().join("changed.yaml"));
    std::fs::write(&first, CM).unwrap();
    std::fs::write(&changed, CHANGED).unwrap();
    // A create that is only a dry run stores nothing.
    let out = s.ok(&["apply", "--dry-run=server", "-f", first.to_str().unwrap()]);
    assert!(out.contains("server dry run"), "{out}");
    assert!(s.fails(&["get", "configmap", "cm"]).contains("NotFound"));
    s.ok(&["apply", "-f", first.to_str().unwrap()]);
    let before = live(&s);
    let out = s.ok(&["apply", "--dry-run=server", "-f", changed.to_str().unwrap(), "-o", "json"]);
    let answered: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answered["data"]["k"], "v2", "the dry run answers the object as it would be");
    assert_eq!(live(&s), before, "and stores nothing");
    // kubectl diff patches with dryRun=All: it shows the change and leaves it unmade.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.dir.join("admin.kubeconfig"))
        .args(["diff", "-f", changed.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "differences found: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("+  k: v2"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(live(&s), before);
    let out = s.ok(&["delete", "--dry-run=server", "configmap", "cm"]);
    assert!(out.contains("server dry run"), "{out}");
    assert_eq!(live(&s), before, "a dry-run delete deletes nothing");
    // An unknown dryRun value is refused.
    let admin = s.admin_token();
    let (code, answer) =
        s.request("DELETE", "/api/v1/namespaces/default/configmaps/cm?dryRun=Some", Some(&admin), None);
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("Unsupported value"), "{answer}");
    assert_eq!(live(&s), before);
}
