//! Hostile requests against a real `nodectl server` over HTTPS (issue 14): each used to end
//! the whole process with one request; now each is answered 400 or 422 as kube-apiserver
//! answers it, and the server goes on answering. And connection floods: idle connections
//! do not keep a legitimate client out.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::server::{Server, free_port};
use serde_json::{Value, json};

/// Registers node `n1` with the join token and creates its Node: its token.
fn node_token(s: &Server) -> String {
    let join = std::fs::read_to_string(s.dir.join("node-token")).unwrap().trim().to_string();
    let body = json!({"nodeName": "n1", "password": "pw"}).to_string();
    let (code, answer) =
        s.request("POST", "/v1-nodectl/register", Some(&join), Some(("application/json", body.as_bytes())));
    assert_eq!(code, 201, "{answer}");
    let token = serde_json::from_str::<Value>(&answer).unwrap()["token"].as_str().unwrap().to_string();
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}).to_string();
    let (code, answer) = s.request("POST", "/api/v1/nodes", Some(&token), Some(("application/json", node.as_bytes())));
    assert_eq!(code, 201, "{answer}");
    token
}

/// The status code of a request, without reading its body (a watch streams on).
fn status_only(s: &Server, method: &str, path: &str, token: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let resp =
            s.http_client().request(method.parse().unwrap(), s.url(path)).bearer_auth(token).send().await.unwrap();
        resp.status().as_u16()
    })
}

fn alive(s: &Server, token: &str) {
    let (code, answer) = s.request("GET", "/api/v1/nodes/n1", Some(token), None);
    assert_eq!(code, 200, "the server still answers: {answer}");
}

#[test]
fn requests_that_used_to_abort_the_server_are_answered_400_or_422_and_it_lives_on() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port(), &[]);
    let node = node_token(&s);
    // timeoutSeconds near u64::MAX overflowed the watch's deadline.
    assert_eq!(status_only(&s, "GET", "/api/v1/pods?watch=true&timeoutSeconds=18446744073709551615", &node), 200);
    alive(&s, &node);
    assert_eq!(status_only(&s, "GET", "/api/v1/pods?watch=true&timeoutSeconds=18446744073709551616", &node), 400);
    assert_eq!(status_only(&s, "GET", "/api/v1/pods?watch=true&timeoutSeconds=soon", &node), 400);
    assert_eq!(status_only(&s, "GET", "/api/v1/pods?limit=18446744073709551615", &node), 200);
    alive(&s, &node);
    let patch = |content_type: &str, body: &str| {
        let (code, answer) = s.request("PATCH", "/api/v1/nodes/n1", Some(&node), Some((content_type, body.as_bytes())));
        let status: Value = serde_json::from_str(&answer).unwrap_or_else(|_| panic!("a Status: {answer}"));
        assert_eq!(status["kind"], "Status", "{answer}");
        assert_eq!(status["code"], code, "{answer}");
        alive(&s, &node);
        code
    };
    let merge = "application/merge-patch+json";
    let json_patch = "application/json-patch+json";
    let strategic = "application/strategic-merge-patch+json";
    for (content_type, body, want) in [
        // Merge patches whose body is not an object.
        (merge, "[1, 2]", 400),
        (merge, "\"x\"", 400),
        (merge, "null", 400),
        // Merge patches whose result is not an object where the server writes into it.
        (merge, r#"{"metadata": "x"}"#, 422),
        (merge, r#"{"status": 7}"#, 422),
        (merge, r#"{"metadata": {"labels": []}}"#, 422),
        // JSON patches replacing the whole document.
        (json_patch, r#"[{"op": "replace", "path": "", "value": 7}]"#, 422),
        (json_patch, r#"[{"op": "add", "path": "", "value": []}]"#, 422),
        (json_patch, r#"[{"op": "copy", "from": "/metadata/name", "path": ""}]"#, 422),
        (json_patch, r#"[{"op": "replace", "path": "/metadata", "value": "x"}]"#, 422),
        (json_patch, r#"{"op": "add"}"#, 400),
        // Strategic patches that are arrays, or that make the object something else.
        (strategic, "[]", 400),
        (strategic, r#"[{"op": "add"}]"#, 400),
        (strategic, r#"{"spec": ["x"]}"#, 422),
    ] {
        assert_eq!(patch(content_type, body), want, "{content_type} {body}");
    }
    // A body whose parts the server fills in are of another type.
    let admin = s.admin_token();
    for body in [
        json!({"metadata": {"name": "p"}, "status": "x", "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        json!({"metadata": {"name": "p", "labels": "x"}}),
    ] {
        let (code, answer) = s.request(
            "POST",
            "/api/v1/namespaces/default/pods",
            Some(&admin),
            Some(("application/json", body.to_string().as_bytes())),
        );
        assert_eq!(code, 400, "{answer}");
    }
    alive(&s, &node);
}

#[test]
fn a_thousand_idle_connections_do_not_keep_a_legitimate_client_out() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let tmp = tempfile::tempdir().unwrap();
    // The server starts with the usual soft open-files limit of 1,024, as from a login
    // shell or a systemd unit, and must raise its own.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 1024, hard).unwrap();
    let s = Server::start(tmp.path(), free_port(), &[]);
    // This process holds the other end of each connection.
    nodectl::server::conn::raise_nofile_limit();
    // 1,100 connections that never start TLS: more than the 1,024 descriptors the server
    // had, and more than it keeps unauthenticated. Closed when the test ends.
    let idle: Vec<TcpStream> =
        (0..1100).map(|_| TcpStream::connect(("127.0.0.1", s.port)).expect("the server accepts")).collect();
    let started = Instant::now();
    let out = s.ok(&["get", "namespaces", "--request-timeout=20s"]);
    assert!(out.contains("default"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered in {:?}", started.elapsed());
    // The oldest of them were closed to make room (evicted) or time out: reading one ends.
    let mut first = &idle[0];
    first.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let mut buf = [0u8; 1];
    let n = std::io::Read::read(&mut first, &mut buf);
    let closed = match &n {
        Ok(0) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        Ok(_) => false,
    };
    assert!(closed, "the server closed the oldest idle connection: {n:?}");
    drop(idle);
}

#[test]
fn bodies_over_3_mib_and_objects_over_1_5_mib_are_refused_413_and_long_lists_stream_whole() {
    let tmp = tempfile::tempdir().unwrap();
    // Counts its own ConfigMaps: without the one every namespace gets (kube-root-ca.crt).
    let s = Server::start(tmp.path(), free_port(), &["--controllers=*,-root-ca-cert-publisher"]);
    let admin = s.admin_token();
    let configmap = |name: &str, size: usize| {
        json!({"metadata": {"name": name}, "data": {"k": "x".repeat(size)}}).to_string().into_bytes()
    };
    let path = "/api/v1/namespaces/default/configmaps";
    let too_large = |(code, answer): (u16, String)| {
        assert_eq!(code, 413, "{answer}");
        let status: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(status["reason"], "RequestEntityTooLarge", "{answer}");
    };
    // Over the body limit: refused before it is read whole.
    too_large(s.request("POST", path, Some(&admin), Some(("application/json", &configmap("big", 4 << 20)))));
    // Under the body limit, over the object limit.
    too_large(s.request("POST", path, Some(&admin), Some(("application/json", &configmap("big", 2 << 20)))));
    // An object that a patch would grow over the limit.
    let (code, answer) =
        s.request("POST", path, Some(&admin), Some(("application/json", &configmap("grows", 1 << 20))));
    assert_eq!(code, 201, "{answer}");
    let patch = json!({"data": {"more": "y".repeat(1 << 20)}}).to_string();
    too_large(s.request(
        "PATCH",
        &format!("{path}/grows"),
        Some(&admin),
        Some(("application/merge-patch+json", patch.as_bytes())),
    ));
    // A list longer than a page of the stream comes whole, and kubectl reads it.
    for i in 0..70 {
        let (code, answer) =
            s.request("POST", path, Some(&admin), Some(("application/json", &configmap(&format!("c{i:03}"), 10))));
        assert_eq!(code, 201, "{answer}");
    }
    let (code, answer) = s.request("GET", path, Some(&admin), None);
    assert_eq!(code, 200, "{answer}");
    let list: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(list["kind"], "ConfigMapList");
    assert!(list["metadata"]["resourceVersion"].as_str().is_some_and(|v| !v.is_empty()), "{}", list["metadata"]);
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert_eq!(names.len(), 71, "{names:?}");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "in key order: {names:?}");
    let (_, selected) = s.request("GET", &format!("{path}?fieldSelector=metadata.name%3Dc042"), Some(&admin), None);
    let selected: Value = serde_json::from_str(&selected).unwrap();
    assert_eq!(selected["items"].as_array().map(Vec::len), Some(1), "{selected}");
    let out = s.ok(&["get", "configmaps", "-o", "name"]);
    assert_eq!(out.lines().filter(|l| l.starts_with("configmap/c")).count(), 70, "{out}");
}
