//! `kubectl exec` on the node: the kubelet's `/exec/NS/POD/CONTAINER?command=…`, which the
//! API server proxies to, over WebSocket with Kubernetes' channel protocol
//! (`v5.channel.k8s.io`, or `v4.channel.k8s.io`). Every binary message starts with its
//! channel: 0 stdin, 1 stdout, 2 stderr, 3 the outcome (a `v1.Status`), 4 a terminal's
//! size (`{"Width":…,"Height":…}`); with v5, `[255, channel]` says that channel is done
//! (the client's stdin ended).
//!
//! The command runs as `nodectl exec` runs it: the pod's monitor starts it in the
//! container, its stdio on pipes of ours (or a terminal it makes), never on anything of the
//! daemon's own.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use super::Daemon;
use crate::node::monitor::client::{self, Monitor};
use crate::node::monitor::protocol::{ExecIo, Message, Request};
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

/// What the request asks for.
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    /// From the query, in kubectl's words (`stdin=true`) or the kubelet's (`input=1`).
    pub fn parse(query: &str) -> Result<Options, String> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|e| format!("malformed query string: {e}"))?;
        let mut o = Options::default();
        for (k, v) in pairs {
            let on = matches!(v.as_str(), "1" | "true" | "True" | "TRUE");
            match k.as_str() {
                "command" => o.command.push(v),
                "stdin" | "input" => o.stdin = on,
                "stdout" | "output" => o.stdout = on,
                "stderr" | "error" => o.stderr = on,
                "tty" => o.tty = on,
                _ => {}
            }
        }
        if o.command.is_empty() {
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

/// Why an exec cannot start, as the kubelet answers before upgrading.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
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
pub fn monitor_of(d: &Daemon, ns: &str, name: &str, container: &str) -> Result<Monitor, ExecError> {
    let entry = d.get(ns, name).ok_or_else(|| ExecError::NoPod(name.into()))?;
    let view = entry.view().clone();
    let status = view
        .statuses
        .iter()
        .find(|c| c.name == container)
        .ok_or_else(|| ExecError::NoContainer { pod: name.into(), container: container.into() })?;
    if !matches!(status.state, ContainerState::Running { .. }) {
        return Err(ExecError::NotRunning(container.into()));
    }
    let socket = crate::node::pod_state::pod_dir(&d.opts.root, &entry.uid).join("monitor.sock");
    client::connect(&socket).map_err(|e| ExecError::Monitor { pod: name.into(), message: e.to_string() })
}

/// Upgrades to the channel protocol and runs the command until it ends.
pub fn upgrade(ws: WebSocketUpgrade, mon: Monitor, container: String, o: Options) -> axum::response::Response {
    ws.protocols(PROTOCOLS).on_upgrade(move |socket| run(socket, mon, container, o))
}

/// The command's stdio on our side.
struct Started {
    exec: u64,
    stdin: Option<File>,
    /// Channel and descriptor of each output.
    outputs: Vec<(u8, File)>,
    /// The terminal's master, for resizes.
    terminal: Option<Arc<AsyncFd<File>>>,
}

fn pipe() -> io::Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(r), File::from(w)))
}

/// Asks the monitor to start the command (blocking: the monitor answers at once).
fn start(mon: &mut Monitor, container: String, o: &Options) -> Result<Started, String> {
    let command = o.command.clone();
    if o.tty {
        let io = ExecIo::Tty { rows: 24, cols: 80 };
        let answer = mon.request(&Request::Exec { name: container, command, io }).map_err(|e| e.to_string())?;
        let exec = started(answer)?;
        let master: OwnedFd = mon.take_fd().ok_or("the pod's monitor sent no terminal")?;
        let master = File::from(master);
        let write_side = master.try_clone().map_err(|e| e.to_string())?;
        let outputs = if o.stdout { vec![(STDOUT, master)] } else { vec![] };
        let terminal = Some(Arc::new(nonblocking(write_side.try_clone().map_err(|e| e.to_string())?)?));
        return Ok(Started { exec, stdin: o.stdin.then_some(write_side), outputs, terminal });
    }
    let (in_r, in_w) = pipe().map_err(|e| e.to_string())?;
    let (out_r, out_w) = pipe().map_err(|e| e.to_string())?;
    let (err_r, err_w) = pipe().map_err(|e| e.to_string())?;
    let fds: [BorrowedFd<'_>; 3] = [in_r.as_fd(), out_w.as_fd(), err_w.as_fd()];
    let answer = mon
        .request_with(&Request::Exec { name: container, command, io: ExecIo::Passed }, &fds)
        .map_err(|e| e.to_string())?;
    drop((in_r, out_w, err_w));
    let exec = started(answer)?;
    // Both outputs are read even when not asked for (the command must not block on a full
    // pipe); what is not asked for is dropped.
    Ok(Started {
        exec,
        stdin: o.stdin.then_some(in_w),
        outputs: vec![(STDOUT, out_r), (STDERR, err_r)],
        terminal: None,
    })
}

fn started(answer: Message) -> Result<u64, String> {
    match answer {
        Message::ExecStarted { exec, .. } => Ok(exec),
        Message::Error { error } => Err(error),
        other => Err(format!("the pod's monitor answered {other:?}")),
    }
}

/// Blocks until the monitor says exec `exec` ended: its exit code.
fn wait_exit(mut mon: Monitor, exec: u64) -> Result<i32, String> {
    loop {
        let events = mon.events().map_err(|e| e.to_string())?;
        if let Some(code) = events.into_iter().find_map(|m| match m {
            Message::ExecExited { exec: e, code, .. } if e == exec => Some(code),
            _ => None,
        }) {
            return Ok(code);
        }
        if mon.pending() {
            continue;
        }
        let mut fds = [nix::poll::PollFd::new(mon.fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
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

async fn run(socket: WebSocket, mut mon: Monitor, container: String, o: Options) {
    let v5 = socket.protocol().and_then(|p| p.to_str().ok()) == Some(PROTOCOLS[0]);
    let (mut tx, mut rx) = socket.split();
    let (mon, started) = match tokio::task::spawn_blocking(move || {
        let s = start(&mut mon, container, &o).map(|s| (s, o));
        (mon, s)
    })
    .await
    {
        Ok((mon, Ok(s))) => (mon, s),
        Ok((_, Err(message))) => {
            let _ = tx.send(WsMessage::Binary(outcome(&Err(message)).into())).await;
            let _ = tx.send(normal_close()).await;
            return;
        }
        Err(_) => return,
    };
    let (Started { exec, stdin, outputs, terminal }, o) = started;
    let (exit_tx, mut exit_rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let _ = exit_tx.send(wait_exit(mon, exec));
    });
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
                None => outputs_done = true,
            },
            c = &mut exit_rx, if code.is_none() => {
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
                        if let (Some(t), Ok(size)) = (&terminal, serde_json::from_slice::<serde_json::Value>(&data[1..])) {
                            let cols = size["Width"].as_u64().and_then(|w| u16::try_from(w).ok()).unwrap_or(80);
                            let rows = size["Height"].as_u64().and_then(|h| u16::try_from(h).ok()).unwrap_or(24);
                            let _ = crate::sys::tty::set_window_size(t.get_ref().as_fd(), rows, cols);
                        }
                    }
                    // The client's stdin ended: so does the command's (with a terminal, an EOF character).
                    Some(CLOSE) if v5 && data.get(1) == Some(&STDIN) => {
                        if let (Some(f), Some(_)) = (&stdin, &terminal) {
                            let _ = write_all(f, &[4]).await;
                        }
                        stdin = None;
                    }
                    _ => {}
                },
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                    // The client is gone: the command's input ends; it runs on as the kubelet's does.
                    client_open = false;
                    stdin = None;
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
        let o = Options::parse("command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&tty=true&container=c")
            .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.tty && !o.stderr, "{o:?}");
        let o = Options::parse("command=ls&output=1&error=1").unwrap();
        assert!(!o.stdin && o.stdout && o.stderr);
        assert!(Options::parse("stdout=true").unwrap_err().contains("at least 1 command"));
        assert!(Options::parse("command=ls").unwrap_err().contains("stdin, stdout, stderr"));
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
