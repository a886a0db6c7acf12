//! OCI hooks: a program run with the container's state JSON on stdin, its own argv and
//! env, and an optional timeout after which it is killed.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::spec::Hook;

/// Runs one hook; one without an `env` of its own gets `inherit` (the process's
/// environment for hooks run in the container, none for the runtime's own: runc would pass
/// on its own environment there, which is the caller's business, not the hook's). It runs
/// in `dir`, or in our working directory without one.
pub fn run(hook: &Hook, state_json: &[u8], inherit: &[String], dir: Option<&Path>) -> Result<(), String> {
    let mut cmd = Command::new(&hook.path);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    if let Some(arg0) = hook.args.first() {
        cmd.arg0(arg0);
    }
    cmd.args(hook.args.iter().skip(1)).env_clear().stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    for e in hook.env.as_deref().unwrap_or(inherit) {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    // Only stdio: the descriptors the runtime's caller left open (and ours) are not the
    // hook's, as with runc, whose hooks are Go exec's children (seccomp-notify.bats counts
    // a startContainer hook's descriptors).
    // SAFETY: close_range is async-signal-safe, and with CLOSE_RANGE_CLOEXEC it only marks
    // the descriptors, so std's own exec-error pipe (already close-on-exec) keeps working.
    unsafe {
        cmd.pre_exec(|| {
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let name = hook.path.display();
    let mut child = cmd.spawn().map_err(|e| format!("error running hook {name}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(state_json);
    }
    let deadline = hook.timeout.map(|t| Instant::now() + Duration::from_secs(t));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("error running hook {name}: wait: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("error running hook {name}: timed out after {}s", hook.timeout.unwrap_or(0)));
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
    // runc's words ("error running hook", Go's name for a signal), which callers and
    // runc's seccomp.bats look for.
    let how = match status.signal() {
        Some(sig) => format!("signal: {} (signal {sig})", signal_words(sig)),
        None => status.to_string(),
    };
    Err(format!("error running hook {name}: {how}, stderr: {}", err.trim()))
}

/// Go's (and so runc's) text for the signals a hook is likely to die of.
fn signal_words(sig: i32) -> &'static str {
    match sig {
        libc::SIGSYS => "bad system call",
        libc::SIGKILL => "killed",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGTERM => "terminated",
        libc::SIGABRT => "aborted",
        libc::SIGINT => "interrupt",
        libc::SIGHUP => "hangup",
        libc::SIGPIPE => "broken pipe",
        libc::SIGBUS => "bus error",
        libc::SIGILL => "illegal instruction",
        libc::SIGFPE => "floating point exception",
        libc::SIGQUIT => "quit",
        libc::SIGXCPU => "CPU time limit exceeded",
        libc::SIGXFSZ => "file size limit exceeded",
        _ => "other",
    }
}

/// The runtime's own hooks of `create` (prestart, createRuntime), run in the bundle
/// directory: runc's `create` and `run` chdir there first, and hooks inherit it.
pub fn run_all_in(hooks: &[Hook], state_json: &[u8], bundle: &Path) -> Result<(), String> {
    for h in hooks {
        run(h, state_json, &[], Some(bundle))?;
    }
    Ok(())
}

/// `run_all` for hooks run in the container: those without an `env` get `process_env`.
pub fn run_all_inheriting(hooks: &[Hook], state_json: &[u8], process_env: &[String]) -> Result<(), String> {
    for h in hooks {
        run(h, state_json, process_env, None)?;
    }
    Ok(())
}

/// Runs every hook even when some fail, each failure a warning: what the spec asks of
/// poststart and poststop hooks, which come too late to undo anything.
pub fn run_all_warning(hooks: &[Hook], state_json: &[u8], container: &str) {
    for h in hooks {
        if let Err(e) = run(h, state_json, &[], None) {
            tracing::warn!("container {container}: {e}");
        }
    }
}
