//! Users from client certificates, as kube-apiserver's `--client-ca-file` gives them: a
//! certificate the cluster CA signed for client use names its user (common name) and
//! groups (organizations); RBAC decides what they may do; a node's certificate is that
//! node; a certificate from another CA, or one not for client use, gets nowhere.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::server::{Server, free_port};

/// A key and a certificate for `subject`, signed by `ca` (its .crt and .key) with
/// `usage` as extendedKeyUsage; the paths of the certificate and the key.
fn issue(dir: &Path, name: &str, subject: &str, ca: (&Path, &Path), usage: &str) -> (String, String) {
    let (key, csr, crt, ext) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.ext")),
    );
    std::fs::write(&ext, format!("extendedKeyUsage={usage}\n")).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().expect("openssl is installed");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let p = |p: &Path| p.to_str().unwrap().to_string();
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
        "-subj",
        subject,
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(ca.0),
        "-CAkey",
        &p(ca.1),
        "-CAcreateserial",
        "-out",
        &p(&crt),
        "-days",
        "1",
        "-extfile",
        &p(&ext),
    ]);
    (p(&crt), p(&key))
}

/// kubectl as the holder of `cert`, with no token.
fn as_holder(s: &Server, (crt, key): &(String, String), args: &[&str]) -> Output {
    Command::new("kubectl")
        .args(["--server", &s.url(""), "--certificate-authority"])
        .arg(s.dir.join("ca.crt"))
        .args(["--client-certificate", crt, "--client-key", key])
        .args(args)
        .env("KUBECONFIG", "/dev/null")
        .output()
        .expect("kubectl is installed")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn client_certificates_signed_by_the_cluster_ca_name_their_users() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let ca = (s.dir.join("ca.crt"), s.dir.join("ca.key"));
    let ca = (ca.0.as_path(), ca.1.as_path());

    let jane = issue(tmp.path(), "jane", "/CN=jane/O=developers/O=testers", ca, "clientAuth");
    let who = as_holder(&s, &jane, &["auth", "whoami"]);
    assert!(who.status.success(), "{}", text(&who));
    let who = text(&who);
    assert!(who.contains("Username    jane"), "{who}");
    assert!(who.contains("Groups      [developers testers system:authenticated]"), "{who}");
    // RBAC decides: nothing yet, then what a binding to one of her groups gives.
    let denied = as_holder(&s, &jane, &["get", "pods"]);
    assert!(!denied.status.success());
    assert!(text(&denied).contains("User \"jane\" cannot list resource \"pods\""), "{}", text(&denied));
    s.ok(&["create", "rolebinding", "devs-view", "--clusterrole=view", "--group=developers"]);
    let listed = as_holder(&s, &jane, &["get", "pods"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(!as_holder(&s, &jane, &["create", "configmap", "x"]).status.success());

    // A node's certificate is the node.
    let node = issue(tmp.path(), "node", "/CN=system:node:n1/O=system:nodes", ca, "clientAuth");
    let who = text(&as_holder(&s, &node, &["auth", "whoami"]));
    assert!(who.contains("system:node:n1") && who.contains("system:nodes"), "{who}");

    // Another CA's certificate, and one of ours not for client use, get nowhere.
    let other = tempfile::tempdir().unwrap();
    let (other_key, other_crt) = (other.path().join("ca.key"), other.path().join("ca.crt"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other-ca",
        ])
        .arg("-keyout")
        .arg(&other_key)
        .arg("-out")
        .arg(&other_crt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let forged = issue(tmp.path(), "forged", "/CN=admin/O=system:masters", (&other_crt, &other_key), "clientAuth");
    let out = as_holder(&s, &forged, &["get", "pods"]);
    assert!(!out.status.success(), "a certificate from another CA was accepted: {}", text(&out));
    let server_only = issue(tmp.path(), "serving", "/CN=admin/O=system:masters", ca, "serverAuth");
    let out = as_holder(&s, &server_only, &["get", "pods"]);
    assert!(!out.status.success(), "a serving certificate was accepted as a client's: {}", text(&out));
    // Tokens still work beside certificates.
    assert!(s.ok(&["auth", "whoami"]).contains("system:admin"));
}
