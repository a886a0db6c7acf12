//! Services' cluster IPs (issue 12): allocated from --service-cluster-ip-range as
//! kube-apiserver does, a requested one honoured, refused with kube's words when outside
//! the range or taken, none for headless and ExternalName ones, released on delete and on
//! a change to ExternalName. The nodes' pod ranges (node IPAM) and the ConfigMap
//! kube-system/nodectl-cluster that tells the nodes the cluster's ranges. Driven by the
//! real kubectl.

mod common;

use common::server::{FakeNodes, Server, free_port, wait_until};
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

/// The node's pod range, once it has one (podCIDR and podCIDRs agree).
fn pod_cidr(s: &Server, node: &str) -> Option<String> {
    let n = s.json(&["get", "node", node]);
    let one = n["spec"]["podCIDR"].as_str()?.to_string();
    assert_eq!(n["spec"]["podCIDRs"], serde_json::json!([one]), "{node}");
    Some(one)
}

/// A Node object with nobody behind it (enough for the controller, which reads only Nodes).
fn node_yaml(name: &str, pod_cidr: Option<&str>) -> String {
    let spec = pod_cidr.map(|c| format!("spec: {{podCIDR: {c}}}\n")).unwrap_or_default();
    format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n{spec}")
}

fn events_of(s: &Server, node: &str) -> Vec<Value> {
    let list = s.json(&["get", "events", "-n", "default", "--field-selector", &format!("involvedObject.name={node}")]);
    list["items"].as_array().unwrap().clone()
}

#[test]
fn nodes_get_distinct_pod_ranges_freed_on_delete_and_a_full_range_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    // A /22 cut into /24s: four node ranges.
    let s = Server::start(
        &tmp.path().join("data"),
        free_port(),
        &["--cluster-cidr", "10.250.0.0/22", "--node-cidr-mask-size", "24", "--service-node-port-range", "31000-31999"],
    );
    let dir = tmp.path();

    // The nodes' ConfigMap says the server's flags.
    let cm = s.json(&["get", "configmap", "-n", "kube-system", "nodectl-cluster"]);
    assert_eq!(
        cm["data"],
        serde_json::json!({"clusterCIDR": "10.250.0.0/22", "serviceCIDR": "10.96.0.0/12", "clusterDomain": "cluster.local", "nodePortRange": "31000-31999"})
    );

    let _fake = FakeNodes::start(&dir.join("root"), &s.dir.join("admin.kubeconfig"), 3);
    let names: Vec<String> = (0..3).map(|i| format!("fake-node-{i}")).collect();
    let ranges: std::collections::BTreeSet<String> = wait_until("the fake nodes have pod ranges", 60, || {
        let got: Option<Vec<String>> = names
            .iter()
            .map(|n| s.kubectl(&["get", "node", n]).status.success().then(|| pod_cidr(&s, n)).flatten())
            .collect();
        got.map(|g| g.into_iter().collect())
    });
    assert_eq!(ranges.len(), 3, "distinct: {ranges:?}");
    let cluster: ipnet::Ipv4Net = "10.250.0.0/22".parse().unwrap();
    for r in &ranges {
        let net: ipnet::Ipv4Net = r.parse().unwrap();
        assert!(cluster.contains(&net) && net.prefix_len() == 24, "{r}");
    }

    // The fourth and last range; then none is left, and the node is told so.
    let last = format!("last-{pid}");
    let starved = format!("starved-{pid}");
    assert!(apply(&s, dir, &node_yaml(&last, None)).status.success());
    let fourth = wait_until("the fourth node has a range", 30, || pod_cidr(&s, &last));
    assert!(!ranges.contains(&fourth), "{fourth} is given twice");
    assert!(apply(&s, dir, &node_yaml(&starved, None)).status.success());
    let event = wait_until("the starved node has a CIDRNotAvailable event", 30, || {
        events_of(&s, &starved).into_iter().find(|e| e["reason"] == "CIDRNotAvailable")
    });
    assert_eq!(event["message"], format!("Node {starved} status is now: CIDRNotAvailable"));
    assert_eq!(event["involvedObject"]["kind"], "Node");
    assert_eq!(pod_cidr(&s, &starved), None);

    // Deleting a node frees its range, and the waiting node gets it.
    s.ok(&["delete", "node", &last]);
    let reused = wait_until("the starved node gets the freed range", 30, || pod_cidr(&s, &starved));
    assert_eq!(reused, fourth);

    // Once set, a range is fixed (kube's words).
    let patch = r#"{"spec":{"podCIDR":"10.250.3.0/25","podCIDRs":["10.250.3.0/25"]}}"#;
    let err = s.fails(&["patch", "node", &starved, "--type", "merge", "-p", patch]);
    assert!(
        err.contains("spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"),
        "{err}"
    );
    let err = s.fails(&[
        "patch",
        "node",
        "fake-node-0",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/podCIDRs"},{"op":"remove","path":"/spec/podCIDR"}]"#,
    ]);
    assert!(err.contains("node updates may not change podCIDR"), "{err}");

    // A node that brings its own range keeps it when it is free and inside; one outside
    // the cluster range, or taken, is told why.
    s.ok(&["delete", "node", &starved]);
    let own = format!("own-{pid}");
    assert!(apply(&s, dir, &node_yaml(&own, Some(&fourth))).status.success());
    let taken = format!("taken-{pid}");
    assert!(apply(&s, dir, &node_yaml(&taken, Some(&fourth))).status.success());
    let outside = format!("outside-{pid}");
    assert!(apply(&s, dir, &node_yaml(&outside, Some("10.9.0.0/24"))).status.success());
    for (node, why) in
        [(&taken, "is already taken by another node"), (&outside, "is not inside the cluster range 10.250.0.0/22")]
    {
        let event = wait_until("a refused own range is told", 30, || {
            events_of(&s, node).into_iter().find(|e| e["reason"] == "CIDRNotAvailable")
        });
        assert!(event["message"].as_str().unwrap().contains(why), "{event}");
    }
    assert_eq!(pod_cidr(&s, &own), Some(fourth.clone()));
    assert!(events_of(&s, &own).is_empty());
    let err = s.fails(&["patch", "node", &own, "--type", "merge", "-p", r#"{"spec":{"podCIDRs":["ten"]}}"#]);
    assert!(err.contains("must be a valid CIDR value"), "{err}");
    for n in [&own, &taken, &outside] {
        s.ok(&["delete", "node", n]);
    }
}
