//! The spec's seccomp profile compiled with libseccomp (names, architectures and argument
//! comparisons as runc and crun read them) and loaded into the calling process. A profile
//! with SCMP_ACT_NOTIFY rules gets a listener descriptor at load, which the runtime hands
//! to the agent at `listenerPath` (see `seccomp_agent`).

use std::io::{Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd};
use std::str::FromStr;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

type Result<T> = std::result::Result<T, String>;

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32),
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno.unwrap_or(libc::EPERM as u32) as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    }
}

fn compare(op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> (ScmpCompareOp, u64) {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, value),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        // SCMP_CMP_MASKED_EQ: (arg & value) == valueTwo.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0)),
    }
}

/// A compiled profile; `notify` when some rule hands syscalls to a listener.
pub struct Filter {
    ctx: ScmpFilterContext,
    notify: bool,
    /// libseccomp's program behind runc's -ENOSYS stub, when the profile gets one; loaded
    /// by us then, not by libseccomp.
    patched: Option<Vec<libc::sock_filter>>,
}

/// Whether runc puts its -ENOSYS stub before the profile's filter: not when the default
/// lets syscalls through (allow, log, and trace, whose tracer should handle new syscalls
/// itself), nor when the default already is ENOSYS.
fn wants_enosys_stub(s: &LinuxSeccomp) -> bool {
    let permissive = matches!(
        s.default_action(),
        LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog | LinuxSeccompAction::ScmpActTrace
    );
    !permissive && s.default_errno_ret() != Some(libc::ENOSYS as u32)
}

/// libseccomp's program as the kernel takes it.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    let fd = nix::sys::memfd::memfd_create(c"nodectl-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| format!("seccomp: memfd for the filter: {e}"))?;
    ctx.export_bpf(&fd).map_err(|e| format!("seccomp: export filter: {e}"))?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.rewind().and_then(|()| file.read_to_end(&mut bytes)).map_err(|e| format!("seccomp: read filter: {e}"))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// Checks what runc refuses in a profile with SCMP_ACT_NOTIFY (libcontainer/seccomp): the
/// init writes to the runtime after the load to hand over the listener, so `write` (or a
/// notify default) would hang the setup; and the listener needs somewhere to go.
fn check_notify(s: &LinuxSeccomp) -> Result<bool> {
    if s.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err("seccomp: SCMP_ACT_NOTIFY cannot be used as default action".into());
    }
    let mut notify = false;
    for rule in s.syscalls().iter().flatten().filter(|r| r.action() == LinuxSeccompAction::ScmpActNotify) {
        notify = true;
        if rule.names().iter().any(|n| n == "write") {
            return Err("seccomp: SCMP_ACT_NOTIFY cannot be used for the write syscall".into());
        }
    }
    if notify && s.listener_path().as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
        return Err("seccomp: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath, which is not set".into());
    }
    Ok(notify)
}

/// The rules one syscall entry becomes. libseccomp refuses two comparisons of the same
/// argument in one rule; runc (and libseccomp's own docs) then make each comparison a rule
/// of its own, so that the conditions on one argument are ORed, not ANDed.
fn condition_sets(conds: Vec<ScmpArgCompare>, indexes: &[u32]) -> Vec<Vec<ScmpArgCompare>> {
    let repeated = indexes.iter().enumerate().any(|(i, a)| indexes[..i].contains(a));
    if repeated { conds.into_iter().map(|c| vec![c]).collect() } else { vec![conds] }
}

/// Builds the filter; fails on what the profile gets wrong (an unknown architecture, a
/// notify rule runc refuses). Syscalls this libseccomp does not know are skipped, as runc
/// does, so one profile serves several kernels.
pub fn build(s: &LinuxSeccomp) -> Result<Filter> {
    let notify = check_notify(s)?;
    let default = action(s.default_action(), s.default_errno_ret());
    let mut f = ScmpFilterContext::new(default).map_err(|e| format!("seccomp: {e}"))?;
    // no_new_privs is the spec's choice (process.noNewPrivileges), not libseccomp's.
    f.set_ctl_nnp(false).map_err(|e| format!("seccomp: {e}"))?;
    let mut arches = Vec::new();
    for arch in s.architectures().iter().flatten() {
        let name = serde_json::to_value(arch).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let a = ScmpArch::from_str(&name).map_err(|_| format!("seccomp: unknown architecture {name}"))?;
        f.add_arch(a).map_err(|e| format!("seccomp: add architecture {name}: {e}"))?;
        arches.push(a);
    }
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let act = action(rule.action(), rule.errno_ret());
        if act == default {
            continue;
        }
        let args = rule.args().clone().unwrap_or_default();
        let indexes: Vec<u32> = args.iter().map(|a| a.index() as u32).collect();
        let conds: Vec<ScmpArgCompare> = args
            .iter()
            .map(|a| {
                let (op, datum) = compare(a.op(), a.value(), a.value_two());
                ScmpArgCompare::new(a.index() as u32, op, datum)
            })
            .collect();
        let sets = condition_sets(conds, &indexes);
        for name in rule.names() {
            let Ok(sc) = ScmpSyscall::from_name(name) else { continue };
            for set in &sets {
                let r = if set.is_empty() { f.add_rule(act, sc) } else { f.add_rule_conditional(act, sc, set) };
                r.map_err(|e| format!("linux.seccomp.syscalls[{i}] {name}: {e}"))?;
            }
        }
    }
    let mut patched = None;
    if wants_enosys_stub(s) {
        // Every name counts for the highest number, whatever its rule's action (runc's).
        let names: Vec<&str> = s.syscalls().iter().flatten().flat_map(|r| r.names()).map(String::as_str).collect();
        let stub = crate::runtime::seccomp_enosys::stub(&arches, &names)?;
        if !stub.is_empty() {
            patched = Some(stub.into_iter().chain(export(&f)?).collect());
        }
    }
    Ok(Filter { ctx: f, notify, patched })
}

/// Loads the filter into this thread; returns the notify listener when the profile has
/// SCMP_ACT_NOTIFY rules (libseccomp asks the kernel for one then).
pub fn load(f: &Filter) -> Result<Option<OwnedFd>> {
    if let Some(program) = &f.patched {
        return load_program(program, f.notify);
    }
    f.ctx.load().map_err(|e| format!("load seccomp filter: {e}"))?;
    if !f.notify {
        return Ok(None);
    }
    let raw = f.ctx.get_notify_fd().map_err(|e| format!("seccomp notify listener: {e}"))?;
    // SAFETY: the listener was made for this load and is owned by nothing else here
    // (libseccomp only remembers its number; it never closes it).
    Ok(Some(unsafe { OwnedFd::from_raw_fd(raw) }))
}

/// Loads a program of our own, with the flags libseccomp would use for this profile (it
/// sets no others here: no TSYNC, LOG or SPEC_ALLOW): a listener for notify rules.
fn load_program(program: &[libc::sock_filter], notify: bool) -> Result<Option<OwnedFd>> {
    let len = u16::try_from(program.len()).map_err(|_| "seccomp: filter too long".to_string())?;
    let prog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut() };
    let flags: libc::c_ulong = if notify { libc::SECCOMP_FILTER_FLAG_NEW_LISTENER } else { 0 };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies the
    // instructions and does not keep the pointer.
    let ret = unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong, flags, &prog as *const _)
    };
    if ret < 0 {
        return Err(format!("load seccomp filter: {}", std::io::Error::last_os_error()));
    }
    if !notify {
        return Ok(None);
    }
    let raw = i32::try_from(ret).map_err(|_| format!("seccomp: listener {ret} is not a descriptor"))?;
    // SAFETY: with NEW_LISTENER the kernel returned a new descriptor, owned by no one else.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(raw) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(i: u32, v: u64) -> ScmpArgCompare {
        ScmpArgCompare::new(i, ScmpCompareOp::Equal, v)
    }

    #[test]
    fn conditions_on_one_argument_become_rules_of_their_own() {
        let sets = condition_sets(vec![cond(0, 1), cond(0, 2)], &[0, 0]);
        assert_eq!(sets.len(), 2);
        assert!(sets.iter().all(|s| s.len() == 1));
        let sets = condition_sets(vec![cond(0, 1), cond(1, 2)], &[0, 1]);
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].len(), 2);
    }

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).expect("profile")
    }

    #[test]
    fn notify_on_write_as_default_or_without_a_listener_is_refused() {
        let write = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
            "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]}));
        assert!(check_notify(&write).unwrap_err().contains("write syscall"));
        let default = profile(serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"}));
        assert!(check_notify(&default).unwrap_err().contains("default action"));
        let nowhere = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}));
        assert!(check_notify(&nowhere).unwrap_err().contains("listenerPath"));
        let fine = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}));
        assert!(check_notify(&fine).unwrap());
        let no_notify = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}));
        assert!(!check_notify(&no_notify).unwrap());
    }
}
