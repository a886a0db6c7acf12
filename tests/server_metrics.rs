//! `/metrics` as kube-apiserver serves it, read with the real kubectl (`get --raw`) and
//! parsed as the Prometheus text format: request counts and latencies labelled by verb,
//! resource, scope and code, the open watches, the stored objects per resource, and the
//! process's memory; readable by the admin and the system:monitoring group, no one else.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use common::server::{Server, free_port, wait_until};

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text format strictly: every line is a comment or a sample, every sample's
/// family was announced by a `# TYPE` line before it.
fn parse(text: &str) -> Vec<Sample> {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let end = loop {
                let (start, _) = *chars.peek().expect("unterminated labels");
                let eq = inner[start..].find("=\"").unwrap_or_else(|| panic!("label without =\": {line}")) + start;
                let key = inner[start..eq].to_string();
                while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    match chars.next().expect("unterminated value") {
                        (_, '\\') => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            c => value.push(c),
                        },
                        (_, '"') => break,
                        (_, c) => value.push(c),
                    }
                }
                assert!(labels.insert(key, value).is_none(), "repeated label: {line}");
                match chars.next().expect("after a label") {
                    (_, ',') => continue,
                    (i, '}') => break i,
                    (_, c) => panic!("unexpected {c:?} in {line}"),
                }
            };
            rest = &inner[end + 1..];
        }
        let value: f64 = rest.trim().parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.get(*f).is_some_and(|k| k == "histogram")))
            .unwrap_or(name);
        assert!(typed.contains_key(family), "no # TYPE before {line}");
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    samples
}

fn scrape(s: &Server) -> Vec<Sample> {
    parse(&s.ok(&["get", "--raw", "/metrics"]))
}

/// The value of the one sample named `name` whose labels include `want`; 0 if none.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && want.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect();
    assert!(found.len() <= 1, "{name} {want:?} matches several samples: {found:?}");
    found.first().map_or(0.0, |s| s.value)
}

/// The labels of a request on configmaps in a namespace, as kube-apiserver sets them.
fn configmaps(verb: &'static str, scope: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("verb", verb),
        ("group", ""),
        ("version", "v1"),
        ("resource", "configmaps"),
        ("subresource", ""),
        ("scope", scope),
        ("component", "apiserver"),
        ("dry_run", ""),
    ]
}

fn with(
    mut labels: Vec<(&'static str, &'static str)>,
    more: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    labels.extend_from_slice(more);
    labels
}

#[test]
fn metrics_count_requests_time_them_and_gauge_open_watches_with_kube_apiserver_labels() {
    let tmp = tempfile::tempdir().unwrap();
    // Counts its own ConfigMaps: without the one every namespace gets (kube-root-ca.crt).
    let s = Server::start(&tmp.path().join("data"), free_port(), &["--controllers=*,-root-ca-cert-publisher"]);
    s.ok(&["create", "namespace", "metrics"]);
    let before = scrape(&s);
    let created = with(configmaps("POST", "resource"), &[("code", "201")]);
    let got = with(configmaps("GET", "resource"), &[("code", "200")]);
    let missing = with(configmaps("GET", "resource"), &[("code", "404")]);
    let listed = with(configmaps("LIST", "namespace"), &[("code", "200")]);
    for name in ["one", "two", "three"] {
        s.ok(&["-n", "metrics", "create", "configmap", name, "--from-literal=k=v"]);
    }
    s.ok(&["-n", "metrics", "get", "configmap", "one"]);
    s.fails(&["-n", "metrics", "get", "configmap", "none"]);
    s.ok(&["-n", "metrics", "get", "configmaps"]);
    let after = scrape(&s);
    let grew = |labels: &[(&str, &str)]| {
        value(&after, "apiserver_request_total", labels) - value(&before, "apiserver_request_total", labels)
    };
    assert_eq!(grew(&created), 3.0);
    assert!(grew(&got) >= 1.0, "GET 200 not counted");
    assert!(grew(&missing) >= 1.0, "GET 404 not counted");
    assert!(grew(&listed) >= 1.0, "LIST not counted");

    // Latency: a histogram with kube's buckets, cumulative, whose +Inf bucket is its count.
    let timed = configmaps("POST", "resource");
    let count = value(&after, "apiserver_request_duration_seconds_count", &timed);
    assert!(count >= 3.0, "{count}");
    let buckets: Vec<&Sample> = after
        .iter()
        .filter(|x| {
            x.name == "apiserver_request_duration_seconds_bucket"
                && timed.iter().all(|(k, v)| x.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    let bounds: Vec<&str> = buckets.iter().map(|b| b.labels["le"].as_str()).collect();
    assert_eq!(
        bounds,
        [
            "0.005", "0.025", "0.05", "0.1", "0.2", "0.4", "0.6", "0.8", "1", "1.25", "1.5", "2", "3", "4", "5", "6",
            "8", "10", "15", "20", "30", "45", "60", "+Inf"
        ]
    );
    assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value), "buckets are not cumulative");
    assert_eq!(buckets.last().unwrap().value, count);
    assert!(value(&after, "apiserver_request_duration_seconds_sum", &timed) > 0.0);

    // A watch is gauged while open, counted once it ends, and never timed.
    let watch_labels = configmaps("WATCH", "namespace");
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.dir.join("admin.kubeconfig"))
        .args(["get", "--raw", "/api/v1/namespaces/metrics/configmaps?watch=true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the watch is gauged", 60, || {
        (value(&scrape(&s), "apiserver_longrunning_requests", &watch_labels) == 1.0).then_some(())
    });
    let watched = with(watch_labels.clone(), &[("code", "200")]);
    assert_eq!(value(&scrape(&s), "apiserver_request_total", &watched), 0.0, "counted before it ended");
    watch.kill().unwrap();
    watch.wait().unwrap();
    let mut nudge = 0;
    wait_until("the ended watch is counted", 60, || {
        // An event to write makes the server notice a connection gone quietly.
        nudge += 1;
        s.ok(&["-n", "metrics", "create", "configmap", &format!("nudge-{nudge}")]);
        let now = scrape(&s);
        (value(&now, "apiserver_longrunning_requests", &watch_labels) == 0.0
            && value(&now, "apiserver_request_total", &watched) == 1.0)
            .then_some(())
    });
    let now = scrape(&s);
    assert!(!now.iter().any(|x| x.name.starts_with("apiserver_request_duration_seconds")
        && x.labels.get("verb").map(String::as_str) == Some("WATCH")));

    // Stored objects per resource, counted from the store (kube's `resource.group` names).
    let stored = |r: &str| value(&scrape(&s), "apiserver_storage_objects", &[("resource", r)]);
    wait_until("the configmaps are counted", 60, || {
        let listed = s.ok(&["get", "configmaps", "-A", "-o", "name"]).lines().count() as f64;
        (stored("configmaps") == listed).then_some(())
    });
    let roles = s.ok(&["get", "clusterroles", "-o", "name"]).lines().count() as f64;
    assert_eq!(stored("clusterroles.rbac.authorization.k8s.io"), roles);
    let in_ns = s.ok(&["-n", "metrics", "get", "configmaps", "-o", "name"]).lines().count() as f64;
    let all = stored("configmaps");
    s.ok(&["-n", "metrics", "delete", "configmaps", "--all"]);
    wait_until("deleted configmaps are no longer counted", 60, || (stored("configmaps") == all - in_ns).then_some(()));

    // The process.
    let now = scrape(&s);
    assert!(value(&now, "process_resident_memory_bytes", &[]) > 1_000_000.0);
    let started = value(&now, "process_start_time_seconds", &[]);
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(started <= epoch && started > epoch - 3600.0, "started at {started}, now {epoch}");
}

#[test]
fn only_the_admin_and_the_system_monitoring_group_may_read_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let err = s.fails(&["--as", "jane", "get", "--raw", "/metrics"]);
    assert!(err.contains("(Forbidden)"), "{err}");
    assert!(err.contains(r#"User "jane" cannot get path "/metrics""#), "{err}");
    let text = s.ok(&["--as", "prometheus", "--as-group", "system:monitoring", "get", "--raw", "/metrics"]);
    assert!(!parse(&text).is_empty());
    // The refusal itself is counted, under the path's own label.
    let samples = scrape(&s);
    let refused =
        value(&samples, "apiserver_request_total", &[("verb", "GET"), ("subresource", "/metrics"), ("code", "403")]);
    assert_eq!(refused, 1.0);
    let subjects = s.ok(&["get", "clusterrolebinding", "system:monitoring", "-o", "jsonpath={.subjects[*].name}"]);
    assert_eq!(subjects, "system:monitoring");
}
