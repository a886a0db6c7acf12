//! The endpoint and EndpointSlice controllers inside `nodectl server`, driven with the real
//! kubectl: a Service's Endpoints and EndpointSlices follow the pods its selector picks
//! (ready or not, terminating, relabelled away, deleted), named target ports resolve per
//! pod, large Services spread over slices of 100, headless and selector-less Services are
//! treated as Kubernetes treats them, and Endpoints left by a Service deleted while the
//! server was down are removed when it starts. No node runs these pods: the test writes
//! their status (address, readiness) through pods/status as a kubelet would.

mod common;

use std::time::{Duration, Instant};

use common::server::{Server, free_port};
use serde_json::{Value, json};

/// No node runs these pods; the scheduler's FailedScheduling events are noise here.
const FLAGS: &[&str] = &["--disable-scheduler"];

fn apply(s: &Server, dir: &std::path::Path, yaml: &str) {
    let path = dir.join("apply.yaml");
    std::fs::write(&path, yaml).unwrap();
    s.ok(&["apply", "-f", path.to_str().unwrap()]);
}

fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pod(name: &str, app: &str, extra_meta: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}{extra_meta}}}\nspec:\n  nodeName: n1\n  \
         containers: [{{name: c, image: busybox, ports: [{{name: http, containerPort: 8080}}]}}]\n---\n"
    )
}

/// Writes the pod's status as its kubelet would: running at `ip`, ready or not.
fn set_status(s: &Server, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
    s.ok(&["patch", "pod", name, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
}

fn get(s: &Server, args: &[&str]) -> Option<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = s.kubectl(&all);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// (ready, not ready) addresses of the Endpoints `name`, as "ip:port" sorted.
fn endpoints(s: &Server, name: &str) -> Option<(Vec<String>, Vec<String>)> {
    let ep = get(s, &["get", "endpoints", name])?;
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for sub in ep["subsets"].as_array().into_iter().flatten() {
        let port = sub["ports"][0]["port"].as_i64().map(|p| format!(":{p}")).unwrap_or_default();
        for (field, out) in [("addresses", &mut ready), ("notReadyAddresses", &mut not_ready)] {
            for a in sub[field].as_array().into_iter().flatten() {
                out.push(format!("{}{port}", a["ip"].as_str().unwrap()));
            }
        }
    }
    ready.sort();
    not_ready.sort();
    Some((ready, not_ready))
}

fn slices(s: &Server, service: &str) -> Vec<Value> {
    let list = get(s, &["get", "endpointslices", "-l", &format!("kubernetes.io/service-name={service}")]).unwrap();
    list["items"].as_array().unwrap().clone()
}

/// Every endpoint of the Service's slices as (ip, ready, serving, terminating), sorted.
fn slice_endpoints(s: &Server, service: &str) -> Vec<(String, bool, bool, bool)> {
    let mut out: Vec<_> = slices(s, service)
        .iter()
        .flat_map(|sl| sl["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            let c = &e["conditions"];
            let flag = |k: &str| c[k].as_bool().unwrap();
            (e["addresses"][0].as_str().unwrap().to_string(), flag("ready"), flag("serving"), flag("terminating"))
        })
        .collect();
    out.sort();
    out
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn endpoints_and_slices_follow_the_pods_a_service_selects() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), FLAGS);
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {tier: front}}\nspec:\n  \
                   selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n---\n";
    let held = ", finalizers: [example.com/hold]";
    apply(
        &s,
        tmp.path(),
        &[
            service,
            &pod("a", "web", ""),
            &pod("b", "web", ""),
            &pod("c", "web", ""),
            &pod("d", "web", held),
            &pod("z", "db", ""),
        ]
        .concat(),
    );
    set_status(&s, "a", "10.1.0.1", true);
    set_status(&s, "b", "10.1.0.2", false);
    set_status(&s, "d", "10.1.0.4", true);
    set_status(&s, "z", "10.1.0.9", true);
    // c has no address yet: it is no endpoint.
    let want = (strs(&["10.1.0.1:8080", "10.1.0.4:8080"]), strs(&["10.1.0.2:8080"]));
    wait_until("the Endpoints list a, d ready and b not", || (endpoints(&s, "web")? == want).then_some(()));
    let ep = get(&s, &["get", "endpoints", "web"]).unwrap();
    assert_eq!(ep["metadata"]["labels"], json!({"tier": "front"}));
    let addr = &ep["subsets"][0]["addresses"][0];
    assert_eq!(
        (addr["nodeName"].as_str(), addr["targetRef"]["kind"].as_str(), addr["targetRef"]["name"].as_str()),
        (Some("n1"), Some("Pod"), Some("a"))
    );
    assert_eq!(ep["subsets"][0]["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));

    wait_until("one slice lists a, b and d", || (slice_endpoints(&s, "web").len() == 3).then_some(()));
    let all = slices(&s, "web");
    assert_eq!(all.len(), 1);
    let slice = &all[0];
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["labels"]["tier"], "front");
    assert!(slice["metadata"]["name"].as_str().unwrap().starts_with("web-"));
    let owner = &slice["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str(), owner["controller"].as_bool()),
        (Some("Service"), Some("web"), Some(true))
    );
    let out = s.ok(&["describe", "service", "web"]);
    assert!(out.lines().any(|l| l.starts_with("Endpoints:") && l.contains("10.1.0.1:8080,10.1.0.4:8080")), "{out}");
    let out = s.ok(&["get", "endpointslices"]);
    assert!(out.contains("IPv4") && out.contains("8080") && out.contains("10.1.0.1,10.1.0.2,10.1.0.4"), "{out}");

    // b becomes ready; c gets an address; a is relabelled away.
    set_status(&s, "b", "10.1.0.2", true);
    set_status(&s, "c", "10.1.0.3", true);
    s.ok(&["label", "pod", "a", "app=other", "--overwrite"]);
    let want = (strs(&["10.1.0.2:8080", "10.1.0.3:8080", "10.1.0.4:8080"]), vec![]);
    wait_until("the Endpoints follow", || (endpoints(&s, "web")? == want).then_some(()));
    let ips = |v: Vec<(String, bool, bool, bool)>| v.into_iter().map(|e| e.0).collect::<Vec<_>>();
    wait_until("the slices follow", || {
        (ips(slice_endpoints(&s, "web")) == ["10.1.0.2", "10.1.0.3", "10.1.0.4"]).then_some(())
    });

    // A terminating pod leaves the Endpoints; its slice entry says it is terminating.
    s.ok(&["delete", "pod", "d", "--wait=false"]);
    let want = (strs(&["10.1.0.2:8080", "10.1.0.3:8080"]), vec![]);
    wait_until("d leaves the Endpoints", || (endpoints(&s, "web")? == want).then_some(()));
    wait_until("d is terminating in its slice", || {
        slice_endpoints(&s, "web").contains(&("10.1.0.4".into(), false, true, true)).then_some(())
    });
    // No kubelet confirms the deletion here: the test lets go of the pod itself.
    s.ok(&["patch", "pod", "d", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    s.ok(&["delete", "pod", "d", "--grace-period=0", "--force"]);
    wait_until("d leaves the slices", || (slice_endpoints(&s, "web").len() == 2).then_some(()));

    // Endpoints deleted by hand are written again; so is a slice.
    s.ok(&["delete", "endpoints", "web"]);
    wait_until("the Endpoints are back", || (endpoints(&s, "web")?.0.len() == 2).then_some(()));
    let name = slices(&s, "web")[0]["metadata"]["name"].as_str().unwrap().to_string();
    s.ok(&["delete", "endpointslice", &name]);
    wait_until("a slice is back", || (slice_endpoints(&s, "web").len() == 2).then_some(()));

    // The Service goes, and its endpoints with it.
    s.ok(&["delete", "service", "web"]);
    wait_until("the Endpoints are gone", || endpoints(&s, "web").is_none().then_some(()));
    wait_until("the slices are gone", || slices(&s, "web").is_empty().then_some(()));
}

#[test]
fn a_large_service_spreads_over_slices_of_a_hundred() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), FLAGS);
    let token = s.admin_token();
    apply(
        &s,
        tmp.path(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: big}\nspec:\n  selector: {app: big}\n  ports: [{port: 80}]\n",
    );
    for i in 0..150 {
        let p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("big-{i}"), "labels": {"app": "big", "half": (i % 2).to_string()}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}});
        let (code, body) = s.request(
            "POST",
            "/api/v1/namespaces/default/pods",
            Some(&token),
            Some(("application/json", p.to_string().as_bytes())),
        );
        assert_eq!(code, 201, "{body}");
        let ip = format!("10.2.{}.{}", i / 100, i % 100 + 1);
        let st =
            json!({"status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}});
        let path = format!("/api/v1/namespaces/default/pods/big-{i}/status");
        let (code, body) =
            s.request("PATCH", &path, Some(&token), Some(("application/merge-patch+json", st.to_string().as_bytes())));
        assert_eq!(code, 200, "{body}");
    }
    let sizes = |s: &Server| {
        let mut v: Vec<usize> =
            slices(s, "big").iter().map(|sl| sl["endpoints"].as_array().map_or(0, Vec::len)).collect();
        v.sort();
        v
    };
    // How the 150 split depends on how far the controller had got when each pod turned
    // ready (30 then 120 gives 30+90, then 60+90), as with kube's: never more than 100 a
    // slice, each address once, and never more slices than needed (two).
    wait_until("150 endpoints in two slices of at most 100", || {
        let v = sizes(&s);
        (v.len() == 2 && v.iter().sum::<usize>() == 150 && v.iter().all(|&n| n <= 100)).then_some(())
    });
    let mut addresses: Vec<String> = slices(&s, "big")
        .iter()
        .flat_map(|sl| sl["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| e["addresses"][0].as_str().unwrap_or_default().to_string())
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 150, "an address is in two slices");
    wait_until("150 addresses in the Endpoints", || (endpoints(&s, "big")?.0.len() == 150).then_some(()));
    // Half of the pods go: every slice is written at most once, and none is left empty.
    s.ok(&["delete", "pods", "-l", "half=1", "--grace-period=0", "--force"]);
    wait_until("75 endpoints remain", || (sizes(&s).iter().sum::<usize>() == 75).then_some(()));
    assert!(!sizes(&s).contains(&0), "{:?}", sizes(&s));
    wait_until("75 addresses remain", || (endpoints(&s, "big")?.0.len() == 75).then_some(()));
}

#[test]
fn headless_selectorless_and_podless_services_are_kept_as_kubernetes_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let s = Server::start(&dir, port, FLAGS);
    let yaml = [
        // Headless without ports: bare addresses, and the pod's hostname under its subdomain.
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {clusterIP: None, selector: {app: db}}\n---\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: db-0, labels: {app: db}}\nspec:\n  nodeName: n1\n  hostname: db-0\n  subdomain: db\n  containers: [{name: c, image: busybox}]\n---\n",
        // Without a selector: the user's own Endpoints stay as written, and no slices.
        "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {ports: [{port: 5432}]}\n---\n",
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: ext}\nsubsets: [{addresses: [{ip: 192.0.2.10}], ports: [{port: 5432}]}]\n---\n",
        // With a selector that picks nothing: empty Endpoints and one placeholder slice.
        "apiVersion: v1\nkind: Service\nmetadata: {name: idle}\nspec: {selector: {app: none}, ports: [{port: 80}]}\n---\n",
        // Going to be deleted behind the server's back.
        "apiVersion: v1\nkind: Service\nmetadata: {name: gone}\nspec: {selector: {app: db}, ports: [{port: 80}]}\n",
    ]
    .concat();
    apply(&s, tmp.path(), &yaml);
    set_status(&s, "db-0", "10.3.0.1", true);
    wait_until("the headless Service's Endpoints list db-0", || {
        let ep = get(&s, &["get", "endpoints", "db"])?;
        (ep["subsets"][0]["addresses"][0]["ip"] == "10.3.0.1").then_some(ep)
    });
    let ep = get(&s, &["get", "endpoints", "db"]).unwrap();
    assert_eq!(ep["subsets"][0]["addresses"][0]["hostname"], "db-0");
    assert!(ep["subsets"][0]["ports"].is_null(), "{ep}");
    assert_eq!(ep["metadata"]["labels"]["service.kubernetes.io/headless"], "");
    wait_until("the headless Service's slice lists db-0", || (slice_endpoints(&s, "db").len() == 1).then_some(()));
    assert_eq!(slices(&s, "db")[0]["metadata"]["labels"]["service.kubernetes.io/headless"], "");

    wait_until("the idle Service has a placeholder slice", || {
        let all = slices(&s, "idle");
        (all.len() == 1 && all[0]["endpoints"].as_array().is_none_or(Vec::is_empty)).then_some(())
    });
    wait_until("the idle Service has empty Endpoints", || get(&s, &["get", "endpoints", "idle"]).map(|_| ()));
    assert_eq!(endpoints(&s, "idle").unwrap(), (vec![], vec![]));
    wait_until("the gone Service has its Endpoints", || (endpoints(&s, "gone")?.0.len() == 1).then_some(()));
    assert_eq!(endpoints(&s, "ext").unwrap().0, ["192.0.2.10:5432"]);
    assert!(slices(&s, "ext").is_empty());

    // The Service goes while the server is down: nothing will tell the next one, which
    // finds the Endpoints left over when it starts and deletes them.
    std::thread::sleep(Duration::from_millis(1100));
    s.stop();
    {
        use nodectl::server::store::Backend;
        use nodectl::server::store::sqlite::{CompactionPolicy, Sqlite};
        let store = Sqlite::open(&dir.join("state.db"), CompactionPolicy::default()).unwrap();
        store.delete("/registry/core/services/default/gone", None).unwrap();
    }
    let s = Server::start(&dir, port, FLAGS);
    wait_until("the leftover Endpoints are deleted", || endpoints(&s, "gone").is_none().then_some(()));
    wait_until("the leftover slices are collected", || slices(&s, "gone").is_empty().then_some(()));
    // The user's Endpoints stay.
    assert_eq!(endpoints(&s, "ext").unwrap().0, ["192.0.2.10:5432"]);
}
