//! Two servers on one etcd (Debian's etcd-server on loopback) hand out Services' node
//! ports and load-balancer addresses from one book, the store: concurrent creates through
//! both never give one twice. Both list themselves in the `kubernetes` Service's
//! endpoints; one that stops cleanly is dropped at once, one that dies once its record
//! expires.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use common::etcd::Cluster;
use common::server::{Server, free_port, wait_until};
use serde_json::Value;

/// A second server shares the first one's CA and tokens, as servers of one cluster do.
fn share_credentials(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["ca.crt", "ca.key", "admin-token", "node-token"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

fn endpoint_ips(s: &Server) -> Vec<String> {
    let out = s.kubectl(&["get", "endpoints", "kubernetes", "-o", "json"]);
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["subsets"][0]["addresses"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["ip"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn two_servers_on_one_etcd_never_give_one_node_port_or_address_twice_and_both_serve_kubernetes() {
    let c = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let endpoints = c.endpoints().join(",");
    let port = free_port();
    let flags = [
        "--etcd",
        endpoints.as_str(),
        "--service-node-port-range",
        "31300-31359",
        "--service-lb-pool",
        "10.251.0.0/26",
    ];
    let (ip_a, ip_b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let a = Server::start_on(&a_dir, ip_a, port, &flags);
    share_credentials(&a_dir, &b_dir);
    let b = Server::start_on(&b_dir, ip_b, port, &flags);

    // Both list themselves.
    let both = vec![ip_a.to_string(), ip_b.to_string()];
    wait_until("the kubernetes endpoints list both servers", 40, || (endpoint_ips(&a) == both).then_some(()));

    // 40 LoadBalancer Services, created at once through both servers.
    let count = 40;
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (s, dir) = (if t % 2 == 0 { &a } else { &b }, tmp.path().join(format!("w{t}")));
            scope.spawn(move || {
                std::fs::create_dir_all(&dir).unwrap();
                for i in (t..count).step_by(4) {
                    let f = dir.join("svc.yaml");
                    let yaml = format!(
                        "apiVersion: v1\nkind: Service\nmetadata: {{name: lb-{i}}}\nspec:\n  type: LoadBalancer\n  ports: [{{port: 80}}]\n"
                    );
                    std::fs::write(&f, yaml).unwrap();
                    s.ok(&["create", "-f", f.to_str().unwrap()]);
                }
            });
        }
    });
    let list = a.json(&["get", "services", "-l", "!component", "-o", "json"]);
    let services = list["items"].as_array().unwrap();
    assert_eq!(services.len(), count);
    let ports: BTreeSet<i64> = services.iter().map(|s| s["spec"]["ports"][0]["nodePort"].as_i64().unwrap()).collect();
    assert_eq!(ports.len(), count, "a node port given twice: {ports:?}");
    assert!(ports.iter().all(|p| (31300..=31359).contains(p)), "{ports:?}");
    let ips: BTreeSet<String> = wait_until("every LoadBalancer has an address", 60, || {
        let list = b.json(&["get", "services", "-l", "!component", "-o", "json"]);
        let got: Option<Vec<String>> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"].as_str().map(str::to_string))
            .collect();
        got
    })
    .into_iter()
    .collect();
    assert_eq!(ips.len(), count, "an address given twice: {ips:?}");

    // A clean stop drops the server at once; a killed one once its record expires (15 s).
    b.terminate();
    wait_until("the stopped server is dropped", 10, || (endpoint_ips(&a) == [ip_a.to_string()]).then_some(()));
    let b = Server::start_on(&b_dir, ip_b, port, &flags);
    wait_until("the restarted server is back", 40, || (endpoint_ips(&b) == both).then_some(()));
    drop(b);
    let killed = std::time::Instant::now();
    wait_until("the killed server is dropped after its record expires", 40, || {
        (endpoint_ips(&a) == [ip_a.to_string()]).then_some(())
    });
    assert!(killed.elapsed() >= std::time::Duration::from_secs(4), "dropped before its record could expire");
}
