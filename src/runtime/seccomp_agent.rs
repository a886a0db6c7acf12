//! Handing a seccomp notify listener to its agent, as runc does: connect to the profile's
//! `listenerPath` (a unix stream socket), send the container process state JSON with the
//! listener attached (SCM_RIGHTS) in one message, close our copy. The agent answers the
//! container's notified syscalls from then on; once every copy of the listener is closed
//! (the agent died), those syscalls fail with ENOSYS instead of blocking.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// The name of the listener in the state's `fds` (the spec's SeccompFdName).
const SECCOMP_FD_NAME: &str = "seccompFd";

/// The runtime spec's ContainerProcessState: `pid` is the process whose filter this is,
/// `state` the container's state, `metadata` the profile's `listenerMetadata`.
pub fn process_state(
    oci_version: &str,
    pid: i32,
    metadata: Option<&str>,
    state: serde_json::Value,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ociVersion": oci_version,
        "fds": [SECCOMP_FD_NAME],
        "pid": pid,
        "state": state,
    });
    // omitempty in the spec's Go type, which agents are written against.
    if let Some(m) = metadata.filter(|m| !m.is_empty()) {
        v["metadata"] = serde_json::Value::String(m.to_string());
    }
    v
}

/// Sends `state` and `listener` to the agent at `path`; the errors name the step, in
/// runc's words where callers look for them ("failed to connect with seccomp agent").
pub fn send(path: &Path, state: &serde_json::Value, listener: BorrowedFd<'_>) -> Result<(), String> {
    let sock = UnixStream::connect(path).map_err(|e| {
        format!("failed to connect with seccomp agent specified in the seccomp profile ({}): {e}", path.display())
    })?;
    let bytes = serde_json::to_vec(state).map_err(|e| format!("seccomp state: {e}"))?;
    let fds = [listener.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(&bytes)], &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|e| format!("cannot send seccomp fd to {}: {e}", path.display()))?;
    if sent != bytes.len() {
        return Err(format!(
            "cannot send seccomp fd to {}: short write ({sent} of {} bytes)",
            path.display(),
            bytes.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSliceMut;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_agent_gets_the_state_and_the_listener_in_one_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let state = process_state("1.2.0", 42, Some("bar"), serde_json::json!({"id": "c1", "status": "creating"}));
        send(&path, &state, w.as_fd()).expect("send");
        let (conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 4096];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
            .expect("recvmsg");
        let mut got = None;
        for c in msg.cmsgs().expect("cmsgs") {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: received with SCM_RIGHTS, owned by nothing else.
                got = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
            }
        }
        let n = msg.bytes;
        let v: serde_json::Value = serde_json::from_slice(&buf[..n]).expect("json");
        assert_eq!(v["fds"], serde_json::json!(["seccompFd"]));
        assert_eq!(v["pid"], 42);
        assert_eq!(v["metadata"], "bar");
        assert_eq!(v["state"]["id"], "c1");
        // The descriptor is the pipe's write end: what goes in comes out of `r`.
        drop(w);
        nix::unistd::write(got.expect("an fd came with the message"), b"x").expect("write");
        let mut b = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut b).expect("read"), 1);
    }

    #[test]
    fn no_agent_is_runcs_connect_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_r, w) = nix::unistd::pipe().expect("pipe");
        let e = send(&dir.path().join("none.sock"), &serde_json::json!({}), w.as_fd()).unwrap_err();
        assert!(e.contains("failed to connect with seccomp agent"), "{e}");
    }
}
