//! What a pod's owner and its monitor say to each other: one JSON object per line over a
//! unix stream socket. The owner sends [`Request`]s and gets one reply each, in order;
//! [`Message::Exited`] comes whenever a container ends, between replies.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::node::reconcile::Terminated;

/// The longest line either side accepts: a request or message is small; more is garbage.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Create and start a container from the bundle its owner prepared (config.json and a
    /// mounted root filesystem), as run number `restart`. With `echo`, its output is also
    /// passed to the monitor's stdout and stderr, each line prefixed by it.
    /// `stdin` keeps the container's stdin open for attach (else it reads /dev/null);
    /// `stdin_once` closes it when the first attached client is done with it.
    #[serde(rename_all = "camelCase")]
    Start {
        name: String,
        id: String,
        bundle: PathBuf,
        restart: u32,
        echo: Option<String>,
        #[serde(default)]
        stdin: bool,
        #[serde(default)]
        stdin_once: bool,
    },
    /// Send a signal to a container's processes (all of them with SIGKILL).
    Signal { name: String, signal: i32 },
    /// Run a command in a running container, as its process runs (user, environment,
    /// capabilities, seccomp), its stdio as `io` says. Answered with ExecStarted, then
    /// ExecExited when it ends.
    Exec { name: String, command: Vec<String>, io: ExecIo },
    /// Attach to a running container: what it writes from now on is copied to the two
    /// descriptors sent with the request (SCM_RIGHTS; its terminal's output to the first),
    /// until it ends or this connection closes. Answered with Attached, which carries the
    /// container's stdin (a pipe's write end, or its terminal's master) if it keeps one.
    Attach { name: String },
    /// The attached client's input ended: with stdinOnce, the container's stdin closes.
    CloseStdin { name: String },
    /// Set the size of a container's terminal.
    Resize { name: String, rows: u16, cols: u16 },
    /// Kill every container, remove the sandbox and the pod's directory, and exit.
    Teardown,
}

/// Where an exec's stdin, stdout and stderr go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExecIo {
    /// stdin from /dev/null; stdout and stderr captured (at most probe::MAX_OUTPUT bytes
    /// kept) and sent with ExecExited; killed after `timeout_ms` (a probe, a hook).
    #[serde(rename_all = "camelCase")]
    Capture { timeout_ms: u64 },
    /// The three descriptors sent with the request (SCM_RIGHTS): pipes of the client's,
    /// never its own terminal or files (a container could reopen them through /proc).
    Passed,
    /// A new terminal in the container, of this size; its master comes with ExecStarted.
    Tty { rows: u16, cols: u16 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Message {
    /// The sandbox is made: the first message of a new monitor.
    #[serde(rename_all = "camelCase")]
    Ready { ip: Option<Ipv4Addr>, hostname: String },
    /// The sandbox could not be made (the first message; the monitor then exits).
    Failed { error: String },
    /// Reply to Start.
    #[serde(rename_all = "camelCase")]
    Started { name: String, pid: i32, started_at: SystemTime },
    /// Reply to Signal, and to Teardown (with what could not be removed, if anything).
    Done { error: Option<String> },
    /// Reply to a request that failed.
    Error { error: String },
    /// A container ended (not a reply).
    Exited { name: String, terminated: Terminated },
    /// Reply to Attach: whether the container has a terminal, and whether its stdin came
    /// with this message.
    Attached { tty: bool, stdin: bool },
    /// Reply to Exec: its process runs.
    ExecStarted { exec: u64, pid: i32 },
    /// An Exec's process ended (not a reply): its exit code (-1 if it was killed at its
    /// timeout) and what it wrote.
    #[serde(rename_all = "camelCase")]
    ExecExited { exec: u64, code: i32, timed_out: bool, output: String },
}

impl Message {
    pub fn is_reply(&self) -> bool {
        !matches!(self, Message::Exited { .. } | Message::ExecExited { .. })
    }
}

/// One line of JSON, with its newline.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    v.push(b'\n');
    v
}

/// Cuts whole lines off the front of `buf`.
pub fn take_lines(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(i) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=i).collect();
        out.push(line[..line.len() - 1].to_vec());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_messages_are_single_lines_of_json_that_read_back() {
        let r = Request::Start {
            name: "c".into(),
            id: "p-1.c".into(),
            bundle: "/b".into(),
            restart: 2,
            echo: Some("[c] ".into()),
            stdin: true,
            stdin_once: false,
        };
        let line = encode(&r);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let mut buf = line.clone();
        buf.extend_from_slice(b"{\"op\":\"teardown\"}\n{\"op\"");
        let lines = take_lines(&mut buf);
        assert_eq!(serde_json::from_slice::<Request>(&lines[0]).unwrap(), r);
        assert_eq!(serde_json::from_slice::<Request>(&lines[1]).unwrap(), Request::Teardown);
        assert_eq!(buf, b"{\"op\"");
        assert!(
            !Message::Exited {
                name: "c".into(),
                terminated: Terminated {
                    exit_code: 0,
                    signal: None,
                    oom_killed: false,
                    message: None,
                    started_at: None,
                    finished_at: SystemTime::UNIX_EPOCH,
                    unknown: false,
                }
            }
            .is_reply()
        );
    }
}
