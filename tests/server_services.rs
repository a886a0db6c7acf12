//! Services' cluster IPs (issue 12): allocated from --service-cluster-ip-range as
//! kube-apiserver does, a requested one honoured, refused with kube's words when outside
//! the range or taken, none for headless and ExternalName ones, released on delete and on
//! a change to ExternalName. Driven by the real kubectl.

mod common;

use common::server::{Server, free_port};
use serde_json::Value;

fn svc(s: &Server, name: &str) -> Value {
    serde_json::from_str(&s.ok(&["get", "service", name, "-o", "json"])).unwrap()
}

fn apply(s: &Server, dir: &std::path::Path, yaml: &str) -> std::process::Output {
    let f = dir.join("obj.yaml");
    std::fs::write(&f, yaml).unwrap();
    s.kubectl(&["apply", "-f", f.to_str().unwrap()])
}

fn service(name: &str, extra: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{port: 80}}]\n{extra}")
}

#[test]
fn cluster_ips_are_allocated_honoured_refused_and_released_as_kube_does() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port(), &["--service-cluster-ip-range", "10.100.0.0/24"]);
    let dir = tmp.path();

    // Allocated: an address of the range, never the network or the first (the
    // `kubernetes` Service's) address; kube's single-stack defaults.
    // (kubectl create service sends protobuf, which the server takes for a few kinds only.)
    let out = apply(&s, dir, &service("web", ""));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let web = svc(&s, "web");
    let ip: std::net::Ipv4Addr = web["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
    let range: ipnet::Ipv4Net = "10.100.0.0/24".parse().unwrap();
    assert!(range.contains(&ip) && ip.octets()[3] > 1 && ip.octets()[3] < 255, "{ip}");
    assert_eq!(web["spec"]["clusterIPs"], serde_json::json!([ip.to_string()]));
    assert_eq!(web["spec"]["ipFamilies"], serde_json::json!(["IPv4"]));
    assert_eq!(web["spec"]["ipFamilyPolicy"], "SingleStack");

    // Requested: honoured; taken: refused, naming the field.
    let out = apply(&s, dir, &service("fixed", "  clusterIP: 10.100.0.10\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(svc(&s, "fixed")["spec"]["clusterIP"], "10.100.0.10");
    let out = apply(&s, dir, &service("again", "  clusterIP: 10.100.0.10\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "spec.clusterIPs: Invalid value: []string{\"10.100.0.10\"}: failed to allocate IP 10.100.0.10: provided IP is already allocated"
        ),
        "{err}"
    );
    let out = apply(&s, dir, &service("outside", "  clusterIP: 10.0.0.1\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "spec.clusterIPs: Invalid value: []string{\"10.0.0.1\"}: failed to allocate IP 10.0.0.1: the provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 10.100.0.0/24"
        ),
        "{err}"
    );
    let out = apply(&s, dir, &service("bad", "  clusterIP: ten\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.clusterIPs[0]: Invalid value: \"ten\": must be a valid IP address"), "{err}");

    // The API's Status names the field in details.causes.
    let body = br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"raw"},"spec":{"clusterIP":"10.100.0.10","ports":[{"port":80}]}}"#;
    let token = s.admin_token();
    let (code, answer) =
        s.request("POST", "/api/v1/namespaces/default/services", Some(&token), Some(("application/json", body)));
    assert_eq!(code, 422, "{answer}");
    let status: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(status["details"]["causes"][0]["field"], "spec.clusterIPs", "{answer}");

    // dryRun allocates nothing: the address stays free for a real create.
    let f = dir.join("dry.yaml");
    std::fs::write(&f, service("dry", "  clusterIP: 10.100.0.20\n")).unwrap();
    s.ok(&["create", "--dry-run=server", "-f", f.to_str().unwrap()]);
    s.ok(&["create", "-f", f.to_str().unwrap()]);
    assert_eq!(svc(&s, "dry")["spec"]["clusterIP"], "10.100.0.20");

    // Headless and ExternalName Services get none.
    let out = apply(&s, dir, &service("headless", "  clusterIP: None\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(svc(&s, "headless")["spec"]["clusterIP"], "None");
    let ext =
        "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {type: ExternalName, externalName: example.org}\n";
    let out = apply(&s, dir, ext);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(svc(&s, "ext")["spec"].get("clusterIP").is_none());

    // Delete releases: the address can be asked for again.
    s.ok(&["delete", "service", "fixed"]);
    let out = apply(&s, dir, &service("again", "  clusterIP: 10.100.0.10\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A change to ExternalName releases; a change back allocates.
    let patch = r#"{"spec":{"type":"ExternalName","externalName":"example.org","clusterIP":"","clusterIPs":null,"ports":null}}"#;
    let out = s.kubectl(&["patch", "service", "again", "--type", "merge", "-p", patch]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(svc(&s, "again")["spec"].get("clusterIP").is_none());
    let out = apply(&s, dir, &service("taker", "  clusterIP: 10.100.0.10\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
