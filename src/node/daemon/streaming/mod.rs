//! `kubectl exec` and `kubectl attach` on the node: the kubelet's
//! `/exec/NS/POD/CONTAINER?command=…` and `/attach/NS/POD/CONTAINER`, which the API server
//! proxies to, over WebSocket with Kubernetes' channel protocol (`v5.channel.k8s.io`, or
//! `v4.channel.k8s.io`). Every binary message starts with its channel: 0 stdin, 1 stdout,
//! 2 stderr, 3 the outcome (a `v1.Status`), 4 a terminal's size
//! (`{"Width":…,"Height":…}`); with v5, `[255, channel]` says that channel is done (the
//! client's stdin ended).
//!
//! This module is the session, the same for both; [`exec`] and [`attach`] say how the
//! process's stdio is reached through the pod's monitor, and how the session ends.
//!
//! `kubectl port-forward` (`/portForward/NS/POD`) is SPDY/3.1 instead, plain or inside a
//! WebSocket: [`portforward`], on the framing of [`spdy`].

mod attach;
mod exec;
pub mod portforward;
pub mod spdy;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use super::Daemon;
use crate::node::monitor::client::{self, Monitor};
use crate::node::reconcile::State as ContainerState;

/// The sub-protocols served, the newest first (kubectl 1.32 asks for v5 alone).
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// How long output is still read once the command ended: a child of it that keeps the
/// pipes open is not waited for.
const OUTPUT_GRACE: Duration = Duration::from_millis(100);

/// Which of the two is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Exec,
    Attach,
}

/// What the request asks for.
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    /// Exec's command; empty for attach.
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    /// From the query, in kubectl's words (`stdin=true`) or the kubelet's (`input=1`).
    pub fn parse(verb: Verb, query: &str) -> Result<Options, String> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|e| format!("malformed query string: {e}"))?;
        let mut o = Options::default();
        for (k, v) in pairs {
            let on = matches!(v.as_str(), "1" | "true" | "True" | "TRUE");
            match k.as_str() {
                "command" if verb == Verb::Exec => o.command.push(v),
                "stdin" | "input" => o.stdin = on,
                "stdout" | "output" => o.stdout = on,
                "stderr" | "error" => o.stderr = on,
                "tty" => o.tty = on,
                _ => {}
            }
        }
        if verb == Verb::Exec && o.command.is_empty() {
            return Err("you must specify at least 1 command".into());
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        // A terminal merges stderr into stdout, as the kubelet has it.
        if o.tty {
            o.stderr = false;
        }
        Ok(o)
    }
}

/// Why a session cannot start, as the kubelet answers before upgrading.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("pods \"{0}\" not found")]
    NoPod(String),
    #[error("container {container} is not valid for pod {pod}")]
    NoContainer { pod: String, container: String },
    #[error("unable to upgrade connection: container not found (\"{0}\")")]
    NotRunning(String),
    #[error("the monitor of pod {pod}: {message}")]
    Monitor { pod: String, message: String },
}

/// The pod's monitor, if `container` of pod NS/NAME runs.
pub fn monitor_of(d: &Daemon, ns: &str, name: &str, container: &str) -> Result<Monitor, StreamError> {
    let entry = d.get(ns, name).ok_or_else(|| StreamError::NoPod(name.into()))?;
    let view = entry.view().clone();
    let status = view
        .statuses
        .iter()
        .find(|c| c.name == container)
        .ok_or_else(|| StreamError::NoContainer { pod: name.into(), container: container.into() })?;
    if !matches!(status.state, ContainerState::Running { .. }) {
        return Err(StreamError::NotRunning(container.into()));
    }
    let socket = crate::node::pod_state::pod_dir(&d.opts.root, &entry.uid).join("monitor.sock");
    client::connect(&socket).map_err(|e| StreamError::Monitor { pod: name.into(), message: e.to_string() })
}

/// Upgrades to the channel protocol and serves the session until it ends.
pub fn upgrade(
    ws: WebSocketUpgrade,
    verb: Verb,
    mon: Monitor,
    container: String,
    o: Options,
) -> axum::response::Response {
    ws.protocols(PROTOCOLS).on_upgrade(move |socket| run(socket, verb, mon, container, o))
}

/// The process's stdio on our side, and how it is steered and ends.
struct Started {
    stdin: Option<File>,
    /// Channel and descriptor of each output.
    outputs: Vec<(u8, File)>,
    steering: Steering,
    /// The outcome (exec: the exit code); None: the session ends with the outputs.
    end: Option<oneshot::Receiver<Result<i32, String>>>,
}

/// Where a client's resizes and the end of its input go.
enum Steering {
    None,
    /// An exec's terminal, whose master we hold.
    Terminal(Arc<AsyncFd<File>>),
    /// An attached container's, through the thread that holds its monitor.
    Monitor(std::sync::mpsc::Sender<Steer>),
}

enum Steer {
    Resize { rows: u16, cols: u16 },
    InputEnded,
}

impl Steering {
    fn resize(&self, rows: u16, cols: u16) {
        match self {
            Steering::None => {}
            Steering::Terminal(t) => {
                let _ = crate::sys::tty::set_window_size(t.get_ref().as_fd(), rows, cols);
            }
            Steering::Monitor(tx) => {
                let _ = tx.send(Steer::Resize { rows, cols });
            }
        }
    }

    /// The client's input ended: so does the process's (`stdin` is then dropped).
    async fn input_ended(&self, stdin: &Option<AsyncFd<File>>) {
        match self {
            Steering::None => {}
            // The terminal's end-of-file character: a shell reading it sees its input end.
            Steering::Terminal(_) => {
                if let Some(f) = stdin {
                    let _ = write_all(f, &[4]).await;
                }
            }
            Steering::Monitor(tx) => {
                let _ = tx.send(Steer::InputEnded);
            }
        }
    }
}

fn pipe() -> io::Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(r), File::from(w)))
}

/// A descriptor tokio can wait on (pipes and terminal masters, made non-blocking).
fn nonblocking(f: File) -> Result<AsyncFd<File>, String> {
    let flags = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| e.to_string())?;
    // SAFETY: the File owns a valid descriptor, which nothing replaces or closes while the
    // AsyncFd holds it (it is only read and written through it).
    unsafe { AsyncFd::register(f) }.map_err(|e| e.to_string())
}

async fn read_some(f: &AsyncFd<File>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut ready = f.readable().await?;
        match ready.try_io(|f| f.get_ref().read(buf)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_all(f: &AsyncFd<File>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut ready = f.writable().await?;
        match ready.try_io(|f| f.get_ref().write(data)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// The outcome on the error channel, as the kubelet writes it.
fn outcome(result: &Result<i32, String>) -> Vec<u8> {
    let status = match result {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => json!({
            "metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500,
        }),
    };
    let mut frame = vec![ERROR];
    frame.extend_from_slice(status.to_string().as_bytes());
    frame
}

fn frame(channel: u8, data: &[u8]) -> WsMessage {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    WsMessage::Binary(v.into())
}

/// A close frame with status 1000: kubectl takes any other (even none) as a broken stream.
fn normal_close() -> WsMessage {
    WsMessage::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}

async fn run(socket: WebSocket, verb: Verb, mon: Monitor, container: String, o: Options) {
    let v5 = socket.protocol().and_then(|p| p.to_str().ok()) == Some(PROTOCOLS[0]);
    let (mut tx, mut rx) = socket.split();
    let started = tokio::task::spawn_blocking(move || {
        let s = match verb {
            Verb::Exec => exec::start(mon, container, &o),
            Verb::Attach => attach::start(mon, container, &o),
        };
        s.map(|s| (s, o))
    })
    .await
    .unwrap_or_else(|e| Err(format!("starting: {e}")));
    let (Started { stdin, outputs, mut steering, end }, o) = match started {
        Ok(s) => s,
        Err(message) => {
            let _ = tx.send(WsMessage::Binary(outcome(&Err(message)).into())).await;
            let _ = tx.send(normal_close()).await;
            return;
        }
    };
    let ends_with_outputs = end.is_none();
    // Without an end of its own the session's never comes: the sender stays here.
    let (_never, mut end) = match end {
        Some(r) => (None, r),
        None => {
            let (t, r) = oneshot::channel();
            (Some(t), r)
        }
    };
    let mut stdin = match stdin.map(nonblocking).transpose() {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(WsMessage::Binary(outcome(&Err(e)).into())).await;
            let _ = tx.send(normal_close()).await;
            return;
        }
    };
    // Each output read by a task of its own; what is not asked for is read and dropped.
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
    for (channel, file) in outputs {
        let wanted = (channel == STDOUT && o.stdout) || (channel == STDERR && o.stderr);
        let Ok(file) = nonblocking(file) else { continue };
        let out_tx = out_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            // EOF, or EIO from a terminal whose other side is gone, ends it.
            while let Ok(n @ 1..) = read_some(&file, &mut buf).await {
                if wanted && out_tx.send((channel, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(out_tx);
    let mut code: Option<Result<i32, String>> = None;
    let mut outputs_done = false;
    let mut client_open = true;
    let grace = tokio::time::sleep(Duration::from_secs(86400));
    tokio::pin!(grace);
    while !(code.is_some() && outputs_done) {
        tokio::select! {
            out = out_rx.recv(), if !outputs_done => match out {
                Some((channel, data)) => {
                    if code.is_some() {
                        grace.as_mut().reset(tokio::time::Instant::now() + OUTPUT_GRACE);
                    }
                    if tx.send(frame(channel, &data)).await.is_err() {
                        return;
                    }
                }
                None => {
                    outputs_done = true;
                    if ends_with_outputs {
                        code = Some(Ok(0));
                    }
                }
            },
            c = &mut end, if code.is_none() => {
                code = Some(c.unwrap_or_else(|_| Err("the pod's monitor went away".into())));
                grace.as_mut().reset(tokio::time::Instant::now() + OUTPUT_GRACE);
            }
            () = &mut grace, if code.is_some() => break,
            m = rx.next(), if client_open => match m {
                Some(Ok(WsMessage::Binary(data))) => match data.first().copied() {
                    Some(STDIN) => {
                        if let Some(f) = &stdin && write_all(f, &data[1..]).await.is_err() {
                            stdin = None;
                        }
                    }
                    Some(RESIZE) => {
                        if let Ok(size) = serde_json::from_slice::<serde_json::Value>(&data[1..]) {
                            let cols = size["Width"].as_u64().and_then(|w| u16::try_from(w).ok()).unwrap_or(80);
                            let rows = size["Height"].as_u64().and_then(|h| u16::try_from(h).ok()).unwrap_or(24);
                            steering.resize(rows, cols);
                        }
                    }
                    Some(CLOSE) if v5 && data.get(1) == Some(&STDIN) => {
                        steering.input_ended(&stdin).await;
                        stdin = None;
                    }
                    _ => {}
                },
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                    // The client is gone: the process's input ends. A command runs on, as
                    // the kubelet's does; an attachment ends (the monitor lets our pipes go).
                    client_open = false;
                    stdin = None;
                    steering = Steering::None;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    drop(stdin);
    let result = code.unwrap_or_else(|| Err("the command's end was not heard".into()));
    if client_open {
        let _ = tx.send(WsMessage::Binary(outcome(&result).into())).await;
        let _ = tx.send(normal_close()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_in_kubectls_words_or_the_kubelets() {
        let o = Options::parse(
            Verb::Exec,
            "command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&tty=true&container=c",
        )
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.tty && !o.stderr, "{o:?}");
        let o = Options::parse(Verb::Exec, "command=ls&output=1&error=1").unwrap();
        assert!(!o.stdin && o.stdout && o.stderr);
        assert!(Options::parse(Verb::Exec, "stdout=true").unwrap_err().contains("at least 1 command"));
        assert!(Options::parse(Verb::Exec, "command=ls").unwrap_err().contains("stdin, stdout, stderr"));
        // attach takes no command, and a command does not make it an exec.
        let o = Options::parse(Verb::Attach, "command=ls&stdout=true&stderr=true").unwrap();
        assert!(o.command.is_empty() && o.stdout && o.stderr && !o.stdin);
        assert!(Options::parse(Verb::Attach, "tty=true").unwrap_err().contains("stdin, stdout, stderr"));
    }

    #[test]
    fn a_non_zero_exit_is_reported_with_its_code() {
        let f = outcome(&Ok(3));
        assert_eq!(f[0], ERROR);
        let s: serde_json::Value = serde_json::from_slice(&f[1..]).unwrap();
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        let s: serde_json::Value = serde_json::from_slice(&outcome(&Ok(0))[1..]).unwrap();
        assert_eq!(s["status"], "Success");
    }
}
