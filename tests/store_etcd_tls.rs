//! `nodectl server --etcd https://…` with kube-apiserver's etcd TLS flags, against Debian's
//! etcd serving its clients over TLS and asking each for a certificate
//! (`--client-cert-auth`), with certificates made here: with `--etcd-cafile`,
//! `--etcd-certfile` and `--etcd-keyfile` the server keeps its objects there; without the
//! client certificate, or trusting another CA, it does not start and names the member; bad
//! files are named with their flag before any connection is tried.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::etcd::{Cluster, ServingTls};
use common::server::{Server, free_port};
use nodectl::server::store::etcd::{Etcd, Tls};
use nodectl::server::store::{Backend, CompactionPolicy};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// The files of a test PKI: a CA that signs etcd's serving certificate and the server's
/// client certificate, and another CA that signs neither.
struct Files {
    ca: PathBuf,
    other_ca: PathBuf,
    etcd_cert: PathBuf,
    etcd_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    cn: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    (params.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
}

fn make_pki(dir: &Path) -> Files {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (ca_pem, issuer) = ca("etcd-ca");
    let (other_pem, _) = ca("another-ca");
    let (etcd_cert, etcd_key) = leaf(&issuer, "etcd", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf(&issuer, "nodectl", &[], ExtendedKeyUsagePurpose::ClientAuth);
    Files {
        ca: write("ca.crt", &ca_pem),
        other_ca: write("other-ca.crt", &other_pem),
        etcd_cert: write("etcd.crt", &etcd_cert),
        etcd_key: write("etcd.key", &etcd_key),
        client_cert: write("client.crt", &client_cert),
        client_key: write("client.key", &client_key),
    }
}

fn tls_cluster(files: &Files) -> Cluster {
    Cluster::start_tls(
        1,
        ServingTls { cert: files.etcd_cert.clone(), key: files.etcd_key.clone(), client_ca: files.ca.clone() },
    )
}

/// Runs `nodectl server` with `args` to its end (it is expected to fail).
fn server_output(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .args(["server", "--data-dir"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn failed_saying(out: &Output, words: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the server did not fail: {stderr}");
    for w in words {
        assert!(stderr.contains(w), "the error does not say {w:?}: {stderr}");
    }
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn server_keeps_its_objects_in_etcd_over_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let files = make_pki(tmp.path());
    let c = tls_cluster(&files);
    let endpoint = c.endpoints().join(",");
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let flags = [
        "--etcd",
        endpoint.as_str(),
        "--etcd-cafile",
        s(&files.ca),
        "--etcd-certfile",
        s(&files.client_cert),
        "--etcd-keyfile",
        s(&files.client_key),
    ];
    let data = tmp.path().join("data");
    let server = Server::start(&data, free_port(), &flags);

    server.ok(&["create", "configmap", "cfg", "--from-literal=greeting=hello"]);
    let cm = server.json(&["get", "configmap", "cfg", "-o", "json"]);
    assert_eq!(cm["data"]["greeting"], "hello");
    assert!(!data.join("state.db").exists(), "the server made a SQLite store beside etcd");

    // The object is in etcd, read back over TLS by the store itself.
    let tls = Tls {
        ca: Some(std::fs::read(&files.ca).unwrap()),
        identity: Some((std::fs::read(&files.client_cert).unwrap(), std::fs::read(&files.client_key).unwrap())),
    };
    let store = Etcd::connect_with(&c.endpoints(), Some(tls), CompactionPolicy::default()).unwrap();
    let kv = store.get("/registry/core/configmaps/default/cfg").unwrap().expect("the configmap is in etcd");
    assert_eq!(cm["metadata"]["resourceVersion"], kv.mod_revision.to_string());
}

#[test]
fn server_does_not_start_without_its_client_certificate_or_trusting_another_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let files = make_pki(tmp.path());
    let c = tls_cluster(&files);
    let endpoint = c.endpoints().join(",");

    // etcd asks for a client certificate and none is shown.
    let out = server_output(&tmp.path().join("a"), &["--etcd", &endpoint, "--etcd-cafile", s(&files.ca)]);
    failed_saying(&out, &[&endpoint]);
    assert!(!tmp.path().join("a/admin.kubeconfig").exists(), "a kubeconfig says the server is ready");

    // etcd's certificate is signed by a CA the server does not trust.
    let out = server_output(
        &tmp.path().join("b"),
        &[
            "--etcd",
            &endpoint,
            "--etcd-cafile",
            s(&files.other_ca),
            "--etcd-certfile",
            s(&files.client_cert),
            "--etcd-keyfile",
            s(&files.client_key),
        ],
    );
    failed_saying(&out, &[&endpoint, "certificate"]);
}

/// Each mistake is caught from the flags and files alone: no etcd runs (nothing listens on
/// the endpoint), so a server that got past them would fail otherwise.
#[test]
fn bad_etcd_tls_flags_and_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let files = make_pki(tmp.path());
    let endpoint = format!("https://127.0.0.1:{}", free_port());
    let data = tmp.path().join("data");
    let not_pem = tmp.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let missing = tmp.path().join("missing.crt");
    let run = |extra: &[&str]| {
        let mut args = vec!["--etcd", endpoint.as_str()];
        args.extend_from_slice(extra);
        server_output(&data, &args)
    };

    let out = run(&["--etcd-cafile", s(&missing)]);
    failed_saying(&out, &["--etcd-cafile", s(&missing), "No such file"]);

    let out = run(&["--etcd-cafile", s(&not_pem)]);
    failed_saying(&out, &["--etcd-cafile", s(&not_pem), "PEM"]);

    let out = run(&["--etcd-certfile", s(&files.client_cert)]);
    failed_saying(&out, &["--etcd-keyfile"]);

    let out = run(&["--etcd-keyfile", s(&files.client_key)]);
    failed_saying(&out, &["--etcd-certfile"]);

    // A key in place of a certificate, and a certificate in place of a key.
    let out = run(&["--etcd-certfile", s(&files.client_key), "--etcd-keyfile", s(&files.client_key)]);
    failed_saying(&out, &["--etcd-certfile", s(&files.client_key), "CERTIFICATE"]);
    let out = run(&["--etcd-certfile", s(&files.client_cert), "--etcd-keyfile", s(&files.client_cert)]);
    failed_saying(&out, &["--etcd-keyfile", s(&files.client_cert), "private key"]);

    // Another certificate's key.
    let out = run(&["--etcd-certfile", s(&files.client_cert), "--etcd-keyfile", s(&files.etcd_key)]);
    failed_saying(&out, &["--etcd-keyfile", s(&files.etcd_key), "--etcd-certfile", s(&files.client_cert)]);

    // TLS files without --etcd (the SQLite store) are a mistake too.
    let out = server_output(&data, &["--etcd-cafile", s(&files.ca)]);
    failed_saying(&out, &["--etcd"]);

    let mixed = format!("{endpoint},http://127.0.0.1:{}", free_port());
    let out = server_output(&data, &["--etcd", &mixed, "--etcd-cafile", s(&files.ca)]);
    failed_saying(&out, &["--etcd", &mixed, "https://"]);

    assert!(!data.join("admin.kubeconfig").exists(), "a server got as far as writing its kubeconfig");
}
