//! `nodectl-runtime`'s log as runc 1.1 writes its (logrus): `--log FILE` (created even
//! when nothing fails, stderr without it), `--log-format text|json`, `--debug` for the
//! debug lines. The container's init is a fork of this process and logs through the same
//! descriptor, as runc's init does through its log pipe.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, filter::LevelFilter};

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// One log line as logrus prints it, newline included.
pub fn line(format: LogFormat, level: &str, msg: &str) -> String {
    match format {
        LogFormat::Json => format!("{}\n", serde_json::json!({"level": level, "msg": msg, "time": log_time()})),
        LogFormat::Text => format!("time=\"{}\" level={level} msg={}\n", log_time(), quoted(msg)),
    }
}

/// logrus's text formatter quotes a value only when it has characters other than these.
fn quoted(msg: &str) -> String {
    let plain = !msg.is_empty() && msg.chars().all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if plain { msg.to_string() } else { format!("{msg:?}") }
}

/// Now, as logrus writes log times (RFC 3339, whole seconds, UTC).
fn log_time() -> String {
    chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Where the log goes: the --log file, opened now so that it exists even if nothing is
/// logged (runc's debug.bats reads it after a clean run), or a copy of stderr. Either is
/// close-on-exec, so the container's program never gets it.
pub fn open(log: Option<&Path>) -> Result<File> {
    match log {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("open the log file {}", path.display())),
        None => {
            // Not stderr itself: the init makes the container's stdio its stderr.
            let fd = std::io::stderr().as_fd().try_clone_to_owned().context("duplicate stderr for the log")?;
            Ok(File::from(fd))
        }
    }
}

/// The log's descriptor, -1 once closed. A plain fd rather than a File in the layer, so
/// that the parked init can close its copy (`close`).
static LOG_FD: AtomicI32 = AtomicI32::new(-1);

/// Sends tracing's events (debug ones too with `debug`) to `out` as logrus lines.
pub fn install(out: File, format: LogFormat, debug: bool) {
    let level = if debug { LevelFilter::DEBUG } else { LevelFilter::INFO };
    LOG_FD.store(out.into_raw_fd(), Ordering::SeqCst);
    crate::runtime::set_before_park(close);
    let _ = tracing_subscriber::registry().with(Logrus { format }.with_filter(level)).try_init();
}

/// Closes the log in this process (the init, before it waits for `start`); later events
/// are dropped.
fn close() {
    let fd = LOG_FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `install` gave up ownership of fd to LOG_FD, and the swap took it back
        // from there: nothing else closes or uses it.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }
}

struct Logrus {
    format: LogFormat,
}

impl<S: tracing::Subscriber> Layer<S> for Logrus {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut msg = Message(String::new());
        event.record(&mut msg);
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        // One write per line, so that lines of the runtime and of its forked init (same
        // descriptor, O_APPEND for a file) never interleave. No lock: the init is a fork
        // and must not inherit one held.
        let fd = LOG_FD.load(Ordering::SeqCst);
        if fd < 0 {
            return;
        }
        // SAFETY: fd stays open while it is in LOG_FD; only `close`, in the single-threaded
        // init, takes it out and closes it.
        let out = unsafe { BorrowedFd::borrow_raw(fd) };
        let text = line(self.format, level, &msg.0);
        let mut rest = text.as_bytes();
        while !rest.is_empty() {
            match nix::unistd::write(out, rest) {
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }
}

/// The event's message, with any other fields after it as key=value.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_logrus_text_and_json() {
        let text = line(LogFormat::Text, "debug", "child process in init()");
        assert!(
            text.starts_with("time=\"") && text.ends_with(" level=debug msg=\"child process in init()\"\n"),
            "{text}"
        );
        assert!(line(LogFormat::Text, "info", "plain").ends_with(" level=info msg=plain\n"));
        let json: serde_json::Value = serde_json::from_str(&line(LogFormat::Json, "debug", "x \"y\"")).unwrap();
        assert_eq!((json["level"].as_str(), json["msg"].as_str()), (Some("debug"), Some("x \"y\"")));
    }
}
