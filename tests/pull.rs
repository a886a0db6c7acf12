//! `nodectl image pull` against Debian's docker-registry on loopback (anonymous and
//! htpasswd), and against a small registry written here that speaks bearer-token auth and
//! can lie (wrong bytes, wrong digests, too many bytes).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{fails, images, nodectl, ok, run_in_image, tree};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts connections on `port` (bounded; not a timing assertion).
fn wait_for_port(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("registry exited early: {status}");
        }
        assert!(Instant::now() < deadline, "registry did not start listening on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Debian's docker-registry on 127.0.0.1 with its own storage; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    creds: Option<(&'static str, &'static str)>,
}

impl Registry {
    fn start(creds: Option<(&'static str, &'static str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = creds {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils) is needed");
            fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: nodectl-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is needed (Debian package docker-registry)");
        wait_for_port(port, &mut child);
        Registry { child, port, dir, creds }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies an OCI layout from the test images into the registry with skopeo.
    fn push(&self, layout: &str, repo: &str, all: bool) -> String {
        let policy = self.dir.path().join("policy.json");
        fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        let dest = format!("docker://{}/{repo}", self.host());
        let mut cmd = Command::new("skopeo");
        cmd.arg("--policy").arg(&policy).args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        if let Some((u, p)) = self.creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        let out = cmd.arg(format!("oci:{}:latest", images().join(layout).display())).arg(&dest).output().unwrap();
        assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
        format!("{}/{repo}", self.host())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pull(root: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["image", "pull"];
    all.extend_from_slice(args);
    nodectl(root, &all)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn anonymous_pull_lists_inspects_and_runs() {
    let reg = Registry::start(None);
    let name = reg.push("busybox", "test/busybox:v1", false);
    let root = tempfile::tempdir().unwrap();
    let out = pull(root.path(), &["--insecure", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ok(root.path(), &["image", "ls"]).contains(&name));
    let config: serde_json::Value = serde_json::from_str(&ok(root.path(), &["image", "inspect", &name])).unwrap();
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(run_in_image(root.path(), &name, &["/bin/echo", "pulled"]).trim(), "pulled");

    // The same image again: nothing to download.
    let again = pull(root.path(), &["--insecure", &name]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(!stderr(&again).contains("pulled sha256"), "downloaded again: {}", stderr(&again));
}

#[test]
fn pull_by_digest_and_through_an_index() {
    let reg = Registry::start(None);
    let name = reg.push("busybox-index", "test/multi:v1", true);
    let root = tempfile::tempdir().unwrap();
    let out = pull(root.path(), &["--insecure", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config: serde_json::Value = serde_json::from_str(&ok(root.path(), &["image", "inspect", &name])).unwrap();
    assert_eq!(config["architecture"], "amd64", "the index's amd64 entry, not the arm64 one listed first");

    // The index's digest, as `skopeo inspect --raw` gives its bytes.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(raw.status.success());
    let digest = nodectl::image::digest::Digest::of_bytes(&raw.stdout);
    let by_digest = format!("{}/test/multi@{digest}", reg.host());
    let out = pull(root.path(), &["--insecure", &by_digest]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ok(root.path(), &["image", "ls"]).contains(&by_digest));
}

#[test]
fn basic_auth_from_a_credentials_file() {
    let reg = Registry::start(Some(("alice", "s3cr3t")));
    let name = reg.push("busybox", "private/busybox:v1", false);
    let root = tempfile::tempdir().unwrap();
    ok(root.path(), &["image", "import", images().join("multilayer").to_str().unwrap(), "--name", "keep"]);
    let before = tree(root.path());
    let err = stderr(&pull(root.path(), &["--insecure", &name]));
    assert!(err.contains("access denied") && err.contains("no credentials"), "{err}");
    assert_eq!(tree(root.path()), before, "a refused pull changed the store");

    // Wrong password: refused, and said so.
    let auth = |user: &str, pass: &str| {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        format!(r#"{{"auths":{{"{}":{{"auth":"{token}"}}}}}}"#, reg.host())
    };
    fs::write(root.path().join("auth.json"), auth("alice", "wrong")).unwrap();
    let err = stderr(&pull(root.path(), &["--insecure", &name]));
    assert!(err.contains("refused our credentials"), "{err}");

    fs::write(root.path().join("auth.json"), auth("alice", "s3cr3t")).unwrap();
    let out = pull(root.path(), &["--insecure", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    run_in_image(root.path(), &name, &["/bin/true"]);
}

#[test]
fn insecure_registries_from_the_environment_and_the_config_file() {
    let reg = Registry::start(None);
    let name = reg.push("busybox", "test/busybox:v1", false);
    let root = tempfile::tempdir().unwrap();
    let err = stderr(&pull(root.path(), &[&name]));
    assert!(err.contains("plain HTTP"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .arg("--root")
        .arg(root.path())
        .args(["image", "pull", &name])
        .env("NODECTL_INSECURE_REGISTRIES", format!("other:1,{}", reg.host()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("registries.json"), format!(r#"{{"insecure":["{}"]}}"#, reg.host())).unwrap();
    let out = pull(root.path(), &[&name]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_dead_registry_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let err = stderr(&pull(root.path(), &["--insecure", &format!("127.0.0.1:{port}/test/busybox:v1")]));
    assert!(err.contains("Connection refused"), "{err}");
    let reg = Registry::start(None);
    let err = stderr(&pull(root.path(), &["--insecure", &format!("{}/test/absent:v1", reg.host())]));
    assert!(err.contains("404") && err.contains("MANIFEST_UNKNOWN"), "{err}");
    assert_eq!(ok(root.path(), &["image", "ls", "-q"]), "");
}

#[test]
fn pull_and_import_at_once() {
    let reg = Registry::start(None);
    let name = reg.push("busybox", "test/busybox:v1", false);
    for _ in 0..3 {
        let root = tempfile::tempdir().unwrap();
        let spawn = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_nodectl"))
                .arg("--root")
                .arg(root.path())
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let a = spawn(&["image", "pull", "--insecure", &name]);
        let b = spawn(&["image", "import", images().join("busybox.oci.tar").to_str().unwrap(), "--name", "local"]);
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
        }
        assert_eq!(ok(root.path(), &["image", "ls", "-q"]).lines().count(), 2);
        assert_eq!(fs::read_dir(root.path().join("images/layers")).unwrap().count(), 1);
        run_in_image(root.path(), &name, &["/bin/true"]);
    }
}

/// What the fake registry does wrong, if anything.
#[derive(Clone, Copy, PartialEq)]
enum Lie {
    None,
    /// Flips a byte in every layer blob.
    CorruptLayer,
    /// States a Docker-Content-Digest the manifest does not have.
    WrongManifestDigest,
    /// Sends more bytes than the descriptor's size.
    LongLayer,
}

/// A registry of one image (`test/busybox:v1`, from the busybox layout) behind bearer-token
/// auth: GET /token with basic credentials alice:s3cr3t gives the token.
struct FakeRegistry {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const TOKEN: &str = "t0k3n-for-test";

impl FakeRegistry {
    fn start(lie: Lie) -> FakeRegistry {
        let layout = images().join("busybox");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let _ = serve(stream, &layout, port, lie);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeRegistry { port, stop, thread: Some(thread) }
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(mut s: &TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    s.write_all(head.as_bytes())?;
    s.write_all(body)
}

fn serve(stream: TcpStream, layout: &Path, port: u16, lie: Lie) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let auth = headers.get("authorization").cloned().unwrap_or_default();
    if path.starts_with("/token") {
        use base64::Engine as _;
        let good = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:s3cr3t"));
        if auth != good || !path.contains("scope=repository%3Atest%2Fbusybox%3Apull") {
            return respond(&stream, "401 Unauthorized", &[], br#"{"details":"bad credentials"}"#);
        }
        return respond(
            &stream,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            format!(r#"{{"token":"{TOKEN}"}}"#).as_bytes(),
        );
    }
    if auth != format!("Bearer {TOKEN}") {
        let challenge = format!(
            r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:test/busybox:pull""#
        );
        return respond(
            &stream,
            "401 Unauthorized",
            &[("WWW-Authenticate", challenge)],
            br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
        );
    }
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let blob = |hex: &str| fs::read(layout.join("blobs/sha256").join(hex));
    if path == "/v2/test/busybox/manifests/v1" {
        let body = blob(&manifest_digest[7..])?;
        let stated = if lie == Lie::WrongManifestDigest {
            format!("sha256:{}", "1".repeat(64))
        } else {
            manifest_digest.clone()
        };
        return respond(
            &stream,
            "200 OK",
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json".into()), ("Docker-Content-Digest", stated)],
            &body,
        );
    }
    if let Some(digest) = path.strip_prefix("/v2/test/busybox/blobs/sha256:") {
        let manifest: serde_json::Value = serde_json::from_slice(&blob(&manifest_digest[7..])?)?;
        let is_layer = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["digest"].as_str() == Some(&format!("sha256:{digest}")));
        let Ok(mut body) = blob(digest) else {
            return respond(&stream, "404 Not Found", &[], br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#);
        };
        if is_layer && lie == Lie::CorruptLayer {
            let mid = body.len() / 2;
            body[mid] ^= 0xff;
        }
        if is_layer && lie == Lie::LongLayer {
            body.extend_from_slice(&[0u8; 4096]);
        }
        return respond(&stream, "200 OK", &[], &body);
    }
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    respond(&stream, "404 Not Found", &[], br#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#)
}

fn auth_file(root: &Path, host: &str) {
    fs::write(
        root.join("auth.json"),
        format!(r#"{{"auths":{{"{host}":{{"username":"alice","password":"s3cr3t"}}}}}}"#),
    )
    .unwrap();
}

#[test]
fn bearer_token_auth() {
    let reg = FakeRegistry::start(Lie::None);
    let host = format!("127.0.0.1:{}", reg.port);
    let name = format!("{host}/test/busybox:v1");
    let root = tempfile::tempdir().unwrap();
    let err = stderr(&pull(root.path(), &["--insecure", &name]));
    assert!(err.contains("token service") && err.contains("401"), "{err}");
    auth_file(root.path(), &host);
    let out = pull(root.path(), &["--insecure", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    run_in_image(root.path(), &name, &["/bin/true"]);
}

#[test]
fn a_lying_registry_changes_nothing() {
    for (lie, needle) in [
        (Lie::CorruptLayer, "hashes to"),
        (Lie::WrongManifestDigest, "Docker-Content-Digest"),
        (Lie::LongLayer, "expected"),
    ] {
        let reg = FakeRegistry::start(lie);
        let host = format!("127.0.0.1:{}", reg.port);
        let root = tempfile::tempdir().unwrap();
        ok(root.path(), &["image", "import", images().join("multilayer").to_str().unwrap(), "--name", "keep"]);
        auth_file(root.path(), &host);
        let before = tree(root.path());
        let err = fails(root.path(), &["image", "pull", "--insecure", &format!("{host}/test/busybox:v1")]);
        assert!(err.contains(needle), "expected {needle:?} in {err}");
        assert_eq!(tree(root.path()), before, "a failed pull changed the store");
    }
}

#[test]
fn nodectl_run_pulls_an_image_the_store_lacks_when_the_policy_allows() {
    let reg = Registry::start(None);
    let name = reg.push("busybox", "test/runme:v1", false);
    let root = tempfile::tempdir().unwrap();
    let manifest = root.path().join("pod.yaml");
    let run = |policy: &str| {
        fs::write(
            &manifest,
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: pulled}}\nspec:\n  hostNetwork: true\n  restartPolicy: Never\n  containers:\n  - {{name: c, image: \"{name}\", imagePullPolicy: {policy}, command: [echo, ran]}}\n"),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_nodectl"))
            .arg("--root")
            .arg(root.path())
            .arg("run")
            .arg(&manifest)
            .env("NODECTL_INSECURE_REGISTRIES", reg.host())
            .output()
            .unwrap()
    };
    // Never: the store does not have it, and nothing is fetched.
    let out = run("Never");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not in the store and imagePullPolicy is Never"), "{}", stderr(&out));
    assert!(!ok(root.path(), &["image", "ls"]).contains(&name));
    // IfNotPresent: pulled from the registry, then run.
    let out = run("IfNotPresent");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    assert!(ok(root.path(), &["image", "ls"]).contains(&name));
}
