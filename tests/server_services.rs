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

fn node_ports(v: &Value) -> Vec<i64> {
    v["spec"]["ports"].as_array().unwrap().iter().filter_map(|p| p["nodePort"].as_i64()).collect()
}

#[test]
fn node_ports_are_allocated_honoured_refused_kept_and_released_as_kube_does() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port(), &["--service-node-port-range", "31000-31009"]);
    let dir = tmp.path();
    let range = 31000..=31009;

    // Allocated in the configured range, for every port; TCP and UDP of one port number
    // share one node port, as kube gives them.
    let two = "apiVersion: v1\nkind: Service\nmetadata: {name: two}\nspec:\n  type: NodePort\n  ports: [{name: a, port: 53, protocol: TCP}, {name: b, port: 53, protocol: UDP}, {name: c, port: 80}]\n";
    let out = apply(&s, dir, two);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ports = node_ports(&svc(&s, "two"));
    assert_eq!(ports.len(), 3, "{ports:?}");
    assert!(ports.iter().all(|p| range.contains(p)), "{ports:?}");
    assert_eq!(ports[0], ports[1]);
    assert_ne!(ports[0], ports[2]);

    // Requested: honoured; taken: refused with kube's words; outside: the configured range.
    let want = range.clone().find(|p| !ports.contains(p)).unwrap();
    let out = apply(
        &s,
        dir,
        &service("fixed", "  type: NodePort\n").replace("{port: 80}", &format!("{{port: 80, nodePort: {want}}}")),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(node_ports(&svc(&s, "fixed")), vec![want]);
    let out = apply(
        &s,
        dir,
        &service("clash", "  type: NodePort\n").replace("{port: 80}", &format!("{{port: 80, nodePort: {want}}}")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("spec.ports[0].nodePort: Invalid value: {want}: provided port is already allocated")),
        "{err}"
    );
    let out =
        apply(&s, dir, &service("outside", "  type: NodePort\n").replace("{port: 80}", "{port: 80, nodePort: 30080}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.ports[0].nodePort: Invalid value: 30080: provided port is not in the valid range. The range of valid ports is 31000-31009"),
        "{err}"
    );

    // dryRun allocates nothing: the port it asks for is still free for a real create.
    let free = range.clone().find(|p| *p != want && !ports.contains(p)).unwrap();
    let f = dir.join("dry.yaml");
    let dry = service("dry", "  type: NodePort\n").replace("{port: 80}", &format!("{{port: 80, nodePort: {free}}}"));
    std::fs::write(&f, &dry).unwrap();
    s.ok(&["create", "--dry-run=server", "-f", f.to_str().unwrap()]);
    std::fs::write(&f, dry.replace("name: dry", "name: after-dry")).unwrap();
    s.ok(&["create", "-f", f.to_str().unwrap()]);
    assert_eq!(node_ports(&svc(&s, "after-dry")), vec![free]);

    // An update that leaves the node port out keeps it (kubectl apply of the same file).
    let out = apply(&s, dir, two);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(node_ports(&svc(&s, "two")), ports);

    // Delete frees: the port can be asked for again.
    s.ok(&["delete", "service", "two"]);
    let out = apply(
        &s,
        dir,
        &service("reuse", "  type: NodePort\n").replace("{port: 80}", &format!("{{port: 80, nodePort: {}}}", ports[2])),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // ClusterIP -> NodePort allocates; -> ClusterIP gives it back.
    let out = apply(&s, dir, &service("flip", ""));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.ok(&["patch", "service", "flip", "-p", r#"{"spec":{"type":"NodePort"}}"#]);
    let flip = node_ports(&svc(&s, "flip"));
    assert_eq!(flip.len(), 1);
    s.ok(&["patch", "service", "flip", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]);
    assert!(node_ports(&svc(&s, "flip")).is_empty());
    let out = apply(
        &s,
        dir,
        &service("flip-taker", "  type: NodePort\n")
            .replace("{port: 80}", &format!("{{port: 80, nodePort: {}}}", flip[0])),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A removed port gives its node port back.
    let multi = "apiVersion: v1\nkind: Service\nmetadata: {name: multi}\nspec:\n  type: NodePort\n  ports: [{name: a, port: 80}, {name: b, port: 81}]\n";
    let out = apply(&s, dir, multi);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mp = node_ports(&svc(&s, "multi"));
    s.ok(&["patch", "service", "multi", "--type", "json", "-p", r#"[{"op":"remove","path":"/spec/ports/1"}]"#]);
    assert_eq!(node_ports(&svc(&s, "multi")), vec![mp[0]]);
    let out = apply(
        &s,
        dir,
        &service("multi-taker", "  type: NodePort\n")
            .replace("{port: 80}", &format!("{{port: 80, nodePort: {}}}", mp[1])),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // kubectl expose --type=NodePort gets one too.
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: registry.k8s.io/pause:3.10}]}\n";
    assert!(apply(&s, dir, deploy).status.success());
    s.ok(&["expose", "deployment", "web", "--type=NodePort", "--port=80", "--target-port=8080"]);
    let web = node_ports(&svc(&s, "web"));
    assert!(web.len() == 1 && range.contains(&web[0]), "{web:?}");

    // allocateLoadBalancerNodePorts: false: a LoadBalancer without node ports.
    let lb = service("no-ports", "  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n");
    let out = apply(&s, dir, &lb);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(node_ports(&svc(&s, "no-ports")).is_empty());

    // The range is full: kube's words.
    let mut full = None;
    for i in 0..12 {
        let out = apply(&s, dir, &service(&format!("fill-{i}"), "  type: NodePort\n"));
        if !out.status.success() {
            full = Some(String::from_utf8_lossy(&out.stderr).to_string());
            break;
        }
    }
    let full = full.expect("the range of ten ports fills up");
    assert!(full.contains("failed to allocate a nodePort: range is full"), "{full}");
}

#[test]
fn health_check_node_ports_go_with_local_load_balancers() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port(), &["--service-node-port-range", "31100-31199"]);
    let dir = tmp.path();
    let local = "  type: LoadBalancer\n  externalTrafficPolicy: Local\n";
    let out = apply(&s, dir, &service("local", local));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = svc(&s, "local");
    let hc = v["spec"]["healthCheckNodePort"].as_i64().expect("a health check node port");
    assert!((31100..=31199).contains(&hc), "{hc}");
    assert!(!node_ports(&v).contains(&hc));

    // Kept by an update that leaves it out.
    let out = apply(&s, dir, &service("local", local));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(svc(&s, "local")["spec"]["healthCheckNodePort"], hc);

    // Taken: refused; not a Local LoadBalancer: forbidden (kube's words).
    let out = apply(&s, dir, &service("clash", &format!("{local}  healthCheckNodePort: {hc}\n")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("spec.healthCheckNodePort: Invalid value: {hc}: provided port is already allocated")),
        "{err}"
    );
    let out = apply(&s, dir, &service("cluster", "  type: LoadBalancer\n  healthCheckNodePort: 31150\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.healthCheckNodePort: Forbidden: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"),
        "{err}"
    );

    // Cluster policy: given back.
    s.ok(&["patch", "service", "local", "-p", r#"{"spec":{"externalTrafficPolicy":"Cluster"}}"#]);
    assert!(svc(&s, "local")["spec"].get("healthCheckNodePort").is_none());
    let out = apply(&s, dir, &service("taker", &format!("{local}  healthCheckNodePort: {hc}\n")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // And on delete.
    s.ok(&["delete", "service", "taker"]);
    let out = apply(&s, dir, &service("again", &format!("{local}  healthCheckNodePort: {hc}\n")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_kubernetes_service_lists_the_server_and_comes_back_when_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port(), &["--service-cluster-ip-range", "10.101.0.0/24"]);
    let kube = wait_until("the kubernetes Service exists", 30, || {
        let out = s.kubectl(&["get", "service", "kubernetes", "-o", "json"]);
        out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    assert_eq!(kube["spec"]["clusterIP"], "10.101.0.1");
    assert_eq!(kube["metadata"]["labels"], serde_json::json!({"component": "apiserver", "provider": "kubernetes"}));
    assert_eq!(
        kube["spec"]["ports"],
        serde_json::json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": s.port}])
    );
    let want = format!("{}:{}", s.ip, s.port);
    let shown = wait_until("kubectl shows the server's endpoint", 30, || {
        let out = s.ok(&["get", "endpoints", "kubernetes"]);
        out.contains(&want).then_some(out)
    });
    assert!(shown.contains("kubernetes"), "{shown}");
    let slice = s.json(&["get", "endpointslice", "kubernetes", "-n", "default"]);
    assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "kubernetes");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["endpoints"][0]["addresses"], serde_json::json!([s.ip.to_string()]));
    assert_eq!(slice["ports"][0]["port"], s.port);
    let ep = s.json(&["get", "endpoints", "kubernetes"]);
    assert_eq!(ep["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"], "true");

    // Deleted: back within the reconciler's period, with the same address (the endpoints
    // controller leaves this selector-less Service's Endpoints alone meanwhile).
    s.ok(&["delete", "service", "kubernetes"]);
    // (The endpoints controller may have deleted the Service's Endpoints with it.)
    s.ok(&["delete", "endpoints", "kubernetes", "--ignore-not-found"]);
    let back = wait_until("the kubernetes Service is back", 30, || {
        let out = s.kubectl(&["get", "service", "kubernetes", "-o", "json"]);
        out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    assert_eq!(back["spec"]["clusterIP"], "10.101.0.1");
    wait_until("the endpoints are back", 30, || {
        s.ok(&["get", "endpoints", "kubernetes"]).contains(&want).then_some(())
    });
}

/// A Node object whose status says Ready with `ip` (nobody heartbeats it: the tests that
/// use it run without the node lifecycle controller).
fn ready_node(s: &Server, dir: &std::path::Path, name: &str, ip: &str) {
    assert!(apply(s, dir, &node_yaml(name, None)).status.success());
    let status = format!(
        r#"{{"status":{{"conditions":[{{"type":"Ready","status":"True"}}],"addresses":[{{"type":"InternalIP","address":"{ip}"}},{{"type":"Hostname","address":"{name}"}}]}}}}"#
    );
    s.ok(&["patch", "node", name, "--subresource=status", "--type", "merge", "-p", &status]);
}

fn ingress(s: &Server, name: &str) -> Vec<String> {
    let v = svc(s, name);
    v["status"]["loadBalancer"]["ingress"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["ip"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn service_lb_gives_load_balancers_the_ready_nodes_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port(), &["--controllers", "*,-nodelifecycle"]);
    let dir = tmp.path();
    let pid = std::process::id();
    let (a, b) = (format!("lb-a-{pid}"), format!("lb-b-{pid}"));
    ready_node(&s, dir, &a, "10.77.0.12");
    ready_node(&s, dir, &b, "10.77.0.9");
    let out = apply(&s, dir, &service("lb", "  type: LoadBalancer\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = vec!["10.77.0.9".to_string(), "10.77.0.12".to_string()];
    wait_until("the LoadBalancer lists both nodes", 30, || (ingress(&s, "lb") == want).then_some(()));

    // A cordoned node is left out; a deleted one too.
    s.ok(&["cordon", &b]);
    wait_until("the cordoned node is left out", 30, || (ingress(&s, "lb") == ["10.77.0.12"]).then_some(()));
    s.ok(&["uncordon", &b]);
    wait_until("the node is back", 30, || (ingress(&s, "lb") == want).then_some(()));
    s.ok(&["delete", "node", &a]);
    wait_until("the deleted node is left out", 30, || (ingress(&s, "lb") == ["10.77.0.9"]).then_some(()));

    // Another class is not ours; a change to ClusterIP clears the status.
    let other = service("other", "  type: LoadBalancer\n  loadBalancerClass: example.com/lb\n");
    assert!(apply(&s, dir, &other).status.success());
    s.ok(&["patch", "service", "lb", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]);
    wait_until("the status is cleared", 30, || ingress(&s, "lb").is_empty().then_some(()));
    assert!(ingress(&s, "other").is_empty());
    s.ok(&["delete", "node", &b]);
}

#[test]
fn service_lb_gives_each_load_balancer_an_address_of_the_pool() {
    let tmp = tempfile::tempdir().unwrap();
    // A /30: two addresses.
    let s = Server::start(tmp.path(), free_port(), &["--service-lb-pool", "10.250.0.0/30"]);
    let dir = tmp.path();
    let lb = "  type: LoadBalancer\n";
    assert!(apply(&s, dir, &service("one", &format!("{lb}  loadBalancerIP: 10.250.0.2\n"))).status.success());
    wait_until("the requested address", 30, || (ingress(&s, "one") == ["10.250.0.2"]).then_some(()));
    assert!(apply(&s, dir, &service("two", lb)).status.success());
    wait_until("the other address", 30, || (ingress(&s, "two") == ["10.250.0.1"]).then_some(()));

    // Exhausted: an Event says so, and the Service waits.
    assert!(apply(&s, dir, &service("three", lb)).status.success());
    let event = wait_until("the exhausted pool is told", 30, || {
        let list = s.json(&["get", "events", "--field-selector", "involvedObject.name=three"]);
        list["items"].as_array().unwrap().iter().find(|e| e["reason"] == "AllocationFailed").cloned()
    });
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["involvedObject"]["kind"], "Service");
    assert!(event["message"].as_str().unwrap().contains("no available IPs in the pool 10.250.0.0/30"), "{event}");
    assert!(ingress(&s, "three").is_empty());

    // A deleted Service's address goes to the one waiting; a change to NodePort gives its
    // address back and clears the status.
    s.ok(&["delete", "service", "one"]);
    wait_until("the waiting Service gets the freed address", 30, || {
        (ingress(&s, "three") == ["10.250.0.2"]).then_some(())
    });
    s.ok(&["patch", "service", "two", "-p", r#"{"spec":{"type":"NodePort"}}"#]);
    wait_until("the NodePort's status is cleared", 30, || ingress(&s, "two").is_empty().then_some(()));
    assert!(apply(&s, dir, &service("four", &format!("{lb}  loadBalancerIP: 10.250.0.1\n"))).status.success());
    wait_until("the freed address is taken again", 30, || (ingress(&s, "four") == ["10.250.0.1"]).then_some(()));
}
