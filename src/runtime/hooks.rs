//! OCI hooks: a program run with the container's state JSON on stdin, its own argv and
//! env, and an optional timeout after which it is killed.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::spec::Hook;

pub fn run(hook: &Hook, state_json: &[u8]) -> Result<(), String> {
    let mut cmd = Command::new(&hook.path);
    if let Some(arg0) = hook.args.first() {
        cmd.arg0(arg0);
    }
    cmd.args(hook.args.iter().skip(1)).env_clear().stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    for e in &hook.env {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    let name = hook.path.display();
    let mut child = cmd.spawn().map_err(|e| format!("hook {name}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(state_json);
    }
    let deadline = hook.timeout.map(|t| Instant::now() + Duration::from_secs(t));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("hook {name}: wait: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("hook {name}: timed out after {}s", hook.timeout.unwrap_or(0)));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    Err(format!("hook {name}: {status}: {}", err.trim()))
}

pub fn run_all(hooks: &[Hook], state_json: &[u8]) -> Result<(), String> {
    for h in hooks {
        run(h, state_json)?;
    }
    Ok(())
}

/// Runs every hook even when some fail, each failure a warning: what the spec asks of
/// poststart and poststop hooks, which come too late to undo anything.
pub fn run_all_warning(hooks: &[Hook], state_json: &[u8], container: &str) {
    for h in hooks {
        if let Err(e) = run(h, state_json) {
            tracing::warn!("container {container}: {e}");
        }
    }
}
