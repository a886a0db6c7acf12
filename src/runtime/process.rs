//! Turning the init (or an exec'd process) into the spec's process: resource limits,
//! user and groups, capabilities, no_new_privs, working directory, and at last execve
//! with a clean fd table and default signal handling.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability};

use super::spec::ProcessConfig;
use crate::sys;

type Result<T> = std::result::Result<T, String>;

pub fn set_rlimits(p: &ProcessConfig) -> Result<()> {
    for r in &p.rlimits {
        let lim = libc::rlimit { rlim_cur: r.soft, rlim_max: r.hard };
        // SAFETY: setrlimit reads one rlimit struct from the pointer we pass.
        if unsafe { libc::setrlimit(r.resource, &lim) } != 0 {
            return Err(format!("setrlimit {}: {}", r.name, std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Drops from the bounding set what the spec does not list (needs CAP_SETPCAP, so
/// before the user changes).
pub fn drop_bounding(p: &ProcessConfig) -> Result<()> {
    let Some(c) = &p.caps else { return Ok(()) };
    for cap in caps::all() {
        if !c.bounding.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| format!("drop {cap} from the bounding set: {e}"))?;
        }
    }
    Ok(())
}

/// Groups, gid, uid; capabilities survive the uid change (PR_SET_KEEPCAPS) and are then
/// set to exactly the spec's sets.
pub fn set_user_and_caps(p: &ProcessConfig, setgroups_allowed: bool) -> Result<()> {
    if setgroups_allowed {
        let groups: Vec<nix::unistd::Gid> = p.additional_gids.iter().map(|g| nix::unistd::Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups {:?}: {e}", p.additional_gids))?;
    }
    sys::process::set_keep_caps(true).map_err(|e| format!("keep capabilities: {e}"))?;
    let gid = nix::unistd::Gid::from_raw(p.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid {}: {e}", p.gid))?;
    let uid = nix::unistd::Uid::from_raw(p.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid {}: {e}", p.uid))?;
    sys::process::set_keep_caps(false).map_err(|e| format!("keep capabilities: {e}"))?;
    let Some(c) = &p.caps else { return Ok(()) };
    let set = |which: CapSet, list: &[Capability], name: &str| -> Result<()> {
        let s: caps::CapsHashSet = list.iter().copied().collect();
        caps::set(None, which, &s).map_err(|e| format!("set {name} capabilities: {e}"))
    };
    // The kernel's rules fix the order: inheritable while we still hold CAP_SETPCAP,
    // effective before permitted (effective must stay a subset of permitted).
    set(CapSet::Inheritable, &c.inheritable, "inheritable")?;
    set(CapSet::Effective, &c.effective, "effective")?;
    set(CapSet::Permitted, &c.permitted, "permitted")?;
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("clear ambient capabilities: {e}"))?;
    for cap in &c.ambient {
        // Ambient needs the capability in permitted and inheritable; runc skips the rest
        // with a warning, and so do we.
        if c.permitted.contains(cap) && c.inheritable.contains(cap) {
            caps::raise(None, CapSet::Ambient, *cap).map_err(|e| format!("raise ambient {cap}: {e}"))?;
        }
    }
    Ok(())
}

fn env_path(env: &[String]) -> &str {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

/// Finds args[0] as execvp would, in the process's PATH, so a missing program fails
/// `create` rather than `start`.
pub fn find_executable(p: &ProcessConfig) -> Result<PathBuf> {
    let prog = &p.args[0];
    let is_exec = |path: &Path| {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap_or_default();
        // SAFETY: c is NUL-terminated.
        let ok = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
        ok && path.metadata().map(|m| m.is_file()).unwrap_or(false)
    };
    if prog.contains('/') {
        let path = if Path::new(prog).is_absolute() { PathBuf::from(prog) } else { p.cwd.join(prog) };
        return if is_exec(&path) {
            Ok(path)
        } else {
            Err(format!("exec {prog}: no such executable file in the container"))
        };
    }
    for dir in env_path(&p.env).split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(prog);
        if is_exec(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!("exec {prog:?}: executable file not found in $PATH ({})", env_path(&p.env)))
}

/// chdir to the spec's cwd and check that it is inside the container: a leaked host
/// directory fd used as cwd (CVE-2024-21626) shows up as an "(unreachable)" path.
///
/// As runc's finalizeNamespace: first while we still have every capability, so that a
/// cwd the process's user may not search (root without CAP_DAC_OVERRIDE in another
/// user's 0700 home) still works; if that is refused (EACCES, EPERM: a directory only
/// the user may enter, on a root-squashed volume or mapped to the user in a user
/// namespace), it returns false and the caller calls `enter_cwd_as_user` once the
/// process has its user.
pub fn enter_cwd(p: &ProcessConfig) -> Result<bool> {
    // A cwd the image lacks is made, as runc does (a pod's workingDir often names one);
    // we are inside the container's root by now, so the path cannot lead out of it.
    if let Err(nix::errno::Errno::ENOENT) = nix::unistd::chdir(&p.cwd) {
        std::fs::create_dir_all(&p.cwd).map_err(|e| format!("create cwd {}: {e}", p.cwd.display()))?;
    }
    match nix::unistd::chdir(&p.cwd) {
        Ok(()) => check_cwd(p).map(|()| true),
        Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => Ok(false),
        Err(e) => Err(format!("chdir to cwd {}: {e}", p.cwd.display())),
    }
}

/// The second try of `enter_cwd`, as the process's user.
pub fn enter_cwd_as_user(p: &ProcessConfig) -> Result<()> {
    nix::unistd::chdir(&p.cwd).map_err(|e| format!("chdir to cwd {} as the process's user: {e}", p.cwd.display()))?;
    check_cwd(p)
}

fn check_cwd(p: &ProcessConfig) -> Result<()> {
    let here = nix::unistd::getcwd().map_err(|e| format!("getcwd: {e}"))?;
    if !here.is_absolute() || here.starts_with("(unreachable)") {
        return Err(format!("cwd {} is outside the container", p.cwd.display()));
    }
    Ok(())
}

/// Everything the kernel carries across execve that the new program must not inherit
/// from us: blocked or ignored signals (Rust ignores SIGPIPE) and fds beyond
/// stdio and the preserved ones. Then execve; returns only the error.
pub fn exec(p: &ProcessConfig, program: &Path, preserve_fds: i32) -> String {
    let mask = nix::sys::signal::SigSet::empty();
    let _ = mask.thread_set_mask();
    for sig in nix::sys::signal::Signal::iterator() {
        if sig != nix::sys::signal::Signal::SIGKILL && sig != nix::sys::signal::Signal::SIGSTOP {
            // SAFETY: SIG_DFL is always a valid disposition; no handler code is involved.
            let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
        }
    }
    if let Some(mask) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    } else {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    }
    if let Err(e) = mark_cloexec_from(3 + preserve_fds) {
        return format!("close inherited fds: {e}");
    }
    let argv: Vec<CString> = p.args.iter().map(|a| CString::new(a.as_bytes()).unwrap_or_default()).collect();
    let envp: Vec<CString> = p.env.iter().map(|a| CString::new(a.as_bytes()).unwrap_or_default()).collect();
    let prog = CString::new(program.as_os_str().as_bytes()).unwrap_or_default();
    match nix::unistd::execve(&prog, &argv, &envp) {
        Err(e) => format!("exec {}: {e}", program.display()),
        Ok(never) => match never {},
    }
}

/// Marks every fd from `first` up close-on-exec. Mark, not close: the fds still in use
/// until execve (the exec fifo) go with it. close_range does it in one call; a seccomp
/// profile older than close_range refuses it, so then each fd in /proc/self/fd gets
/// FD_CLOEXEC through fcntl, which every profile allows.
fn mark_cloexec_from(first: i32) -> std::io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    if unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) } == 0 {
        return Ok(());
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number only changes its flags; one that closed
        // meanwhile (the directory listing's own) just fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Lets go of the file pages a parked init has mapped but does not need while it waits for
/// `start`: every private file mapping none of whose pages we modified (our text and
/// read-only data, the libraries') is dropped from our page tables with MADV_DONTNEED;
/// the kernel faults back in, from the page cache, the few pages touched until execve.
/// Mappings holding an anonymous page (a private copy: relocated data) are left alone,
/// since dropping those would lose our changes; page-cache pages, dirty or not, are the
/// file's own. Best effort: without /proc it does nothing.
pub fn shed_clean_file_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return };
    let mut current: Option<(usize, usize)> = None;
    let mut modified = false;
    let drop_current = |range: Option<(usize, usize)>, modified: bool| {
        if let (Some((start, end)), false) = (range, modified) {
            // SAFETY: the range is one of our own private, file-backed mappings with no
            // modified page: after MADV_DONTNEED its contents read back identical.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    };
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            drop_current(current.take(), modified);
            modified = false;
            let fields: Vec<&str> = line.split_whitespace().collect();
            let private_file =
                fields.get(1).is_some_and(|p| p.ends_with('p')) && fields.get(4).is_some_and(|inode| *inode != "0");
            if let (Ok(s), Ok(e), true) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16), private_file) {
                current = Some((s, e));
            }
        } else if let Some(rest) = line.strip_prefix("Anonymous:")
            && rest.trim().trim_end_matches("kB").trim() != "0"
        {
            modified = true;
        }
    }
    drop_current(current, modified);
}
