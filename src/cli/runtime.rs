//! The OCI runtime CLI, runc-compatible: `nodectl runtime VERB …`, or the same verbs at
//! top level when the binary is called as `nodectl-runtime` (then `--root` is the
//! runtime's state directory itself, as runc's is).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};

use super::runtime_help::{self, Early};
use super::runtime_log::{self, LogFormat};

use crate::runtime::cgroups::Resources;
use crate::runtime::{CreateOptions, ExecOptions, Runtime, spec};

/// `nodectl-runtime`'s own command line.
#[derive(Parser)]
#[command(name = "nodectl-runtime", version = concat!(env!("CARGO_PKG_VERSION"), "\nspec: 1.2.0"), about = "The OCI runtime CLI of nodectl (runc-compatible)")]
pub struct RuntimeCli {
    /// Directory for the containers' state.
    #[arg(long, global = true, env = "NODECTL_RUNTIME_ROOT", default_value = "/run/nodectl-runtime")]
    root: PathBuf,
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    verb: Verb,
}

/// runc's global flags that callers (containerd, podman, runtime-tools) pass.
#[derive(Args, Clone)]
pub struct GlobalArgs {
    /// Write the log (errors, warnings, --debug lines) to this file instead of stderr;
    /// created even when nothing fails (containerd reads it when a verb fails).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// The log's format, as runc's: text (logrus's key=value) or json.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Accepted for compatibility; cgroups are always plain paths below our own.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Log debug lines too: the runtime's steps and its container init's.
    #[arg(long, global = true)]
    debug: bool,
    /// Parent cgroup, below this process's own, of containers whose spec has no
    /// cgroupsPath (and of relative cgroupsPaths).
    #[arg(long, global = true, env = "NODECTL_CGROUP_PARENT", default_value = "nodectl")]
    cgroup_parent: String,
}

/// `nodectl runtime …`: the verbs, with the global flags.
#[derive(Args)]
pub struct RuntimeArgs {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Create a container from a bundle; it waits in `created` for `start`.
    Create(CreateArgs),
    /// Start a created container's process.
    Start { id: String },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal (name or number, default TERM) to a container's init, or to all its processes.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Delete a stopped or created container (--force: running ones too).
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container and wait for it; its exit status becomes ours.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once it started instead of waiting.
        #[arg(short, long)]
        detach: bool,
        /// Keep the stopped container (and its cgroup) for `state` and `delete`.
        #[arg(long)]
        keep: bool,
    },
    /// Run another process in a running container (--process FILE, or the command after
    /// the id with the container's own process settings).
    Exec(ExecArgs),
    /// List a container's processes (`ps` columns, or --format json for pids).
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        /// Options for ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Print a container's resource usage as JSON lines: stats every --interval and an
    /// "oom" event for each OOM kill, until the container is gone (runc's `events`).
    Events {
        /// Print the stats once and return.
        #[arg(long)]
        stats: bool,
        /// Time between stats events (Go's duration syntax: 5s, 500ms, 1m).
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a container's cgroup limits: a LinuxResources JSON (`-r FILE`, `-r -` for
    /// stdin) or runc's flags; a value of 0 leaves a setting as it is, as in runc.
    Update(UpdateArgs),
    /// List containers.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// What this runtime supports, as JSON (the OCI features document).
    Features,
    /// Write a default config.json into the bundle directory.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Checkpoint a running container: not supported (no CRIU), always fails.
    Checkpoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Restore a container from a checkpoint: not supported (no CRIU), always fails.
    Restore {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// runc 1.1's `update` flags.
#[derive(Args)]
struct UpdateArgs {
    /// LinuxResources JSON; `-` reads it from stdin. The flags are for use without it.
    #[arg(short, long)]
    resources: Option<PathBuf>,
    /// Block I/O weight, 10..1000.
    #[arg(long)]
    blkio_weight: Option<u16>,
    /// CFS period in microseconds.
    #[arg(long)]
    cpu_period: Option<u64>,
    /// CFS quota in microseconds per period (-1: none).
    #[arg(long, allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// Relative CPU weight (v1 shares).
    #[arg(long)]
    cpu_share: Option<u64>,
    /// Real-time period in microseconds.
    #[arg(long)]
    cpu_rt_period: Option<u64>,
    /// Real-time runtime in microseconds per real-time period.
    #[arg(long, allow_hyphen_values = true)]
    cpu_rt_runtime: Option<i64>,
    /// CPUs the container may use (0-3, 0,1).
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long)]
    cpuset_mems: Option<String>,
    /// Memory limit: bytes or with a unit (k, m, g, t, p; 1024-based), -1 for none.
    #[arg(long, allow_hyphen_values = true)]
    memory: Option<String>,
    /// Memory soft limit, as --memory.
    #[arg(long, allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    /// Memory plus swap, as --memory.
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Maximum number of pids (-1: none).
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    id: String,
}

impl UpdateArgs {
    fn flags_given(&self) -> bool {
        self.blkio_weight.is_some()
            || self.cpu_period.is_some()
            || self.cpu_quota.is_some()
            || self.cpu_share.is_some()
            || self.cpu_rt_period.is_some()
            || self.cpu_rt_runtime.is_some()
            || self.cpuset_cpus.is_some()
            || self.cpuset_mems.is_some()
            || self.memory.is_some()
            || self.memory_reservation.is_some()
            || self.memory_swap.is_some()
            || self.pids_limit.is_some()
    }

    fn resources(&self) -> Result<Resources> {
        let mut r = match &self.resources {
            // runc reads the JSON and then takes no flag; nodectl says so instead of
            // dropping them unseen.
            Some(_) if self.flags_given() => bail!("give either --resources or the resource flags, not both"),
            Some(path) if path == Path::new("-") => {
                let mut text = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut text).context("read resources from stdin")?;
                spec::parse_resources(Path::new("(stdin)"), &text)?
            }
            Some(path) => spec::load_resources(path)?,
            None => {
                let bytes = |v: &Option<String>, flag: &str| {
                    v.as_deref().map(parse_bytes).transpose().with_context(|| format!("--{flag}"))
                };
                Resources {
                    blkio_weight: self.blkio_weight,
                    cpu_period: self.cpu_period,
                    cpu_quota: self.cpu_quota,
                    cpu_shares: self.cpu_share,
                    cpu_rt_period: self.cpu_rt_period,
                    cpu_rt_runtime: self.cpu_rt_runtime,
                    cpuset_cpus: self.cpuset_cpus.clone(),
                    cpuset_mems: self.cpuset_mems.clone(),
                    memory_limit: bytes(&self.memory, "memory")?,
                    memory_reservation: bytes(&self.memory_reservation, "memory-reservation")?,
                    memory_swap: bytes(&self.memory_swap, "memory-swap")?,
                    pids_limit: self.pids_limit,
                    ..Resources::default()
                }
            }
        };
        // runc's update starts from zeros and its cgroup drivers skip a zero: 0 leaves a
        // setting as it is (and an empty cpuset string too).
        fn keep<T: Default + PartialEq>(v: &mut Option<T>) {
            if v.as_ref().is_some_and(|x| *x == T::default()) {
                *v = None;
            }
        }
        keep(&mut r.blkio_weight);
        keep(&mut r.cpu_period);
        keep(&mut r.cpu_quota);
        keep(&mut r.cpu_shares);
        keep(&mut r.cpu_rt_period);
        keep(&mut r.cpu_rt_runtime);
        keep(&mut r.cpuset_cpus);
        keep(&mut r.cpuset_mems);
        keep(&mut r.memory_limit);
        keep(&mut r.memory_reservation);
        keep(&mut r.memory_swap);
        keep(&mut r.pids_limit);
        // runc 1.1's update leaves device rules as the container got them, whatever the
        // JSON says, and containerd passes the container's whole resources, devices
        // included: applying them here would add rules without runc's deny-all before.
        r.devices.clear();
        Ok(r)
    }
}

/// A size as runc's flags take it (docker's RAMInBytes): `1024`, `64m`, `1.5G`, `10MiB`,
/// `2kb`, 1024-based; -1 is no limit.
fn parse_bytes(text: &str) -> Result<i64> {
    let t = text.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim_start().to_ascii_lowercase());
    let value: f64 = number.parse().with_context(|| format!("invalid size {text:?}"))?;
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => bail!("invalid size {text:?}: units are k, m, g, t, p (1024-based)"),
    };
    Ok((value * (1u64 << shift) as f64) as i64)
}

#[derive(Args)]
struct ExecArgs {
    /// A process.json (the spec's "process" object).
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    detach: bool,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Allocate a terminal: its master goes to --console-socket, or we serve it on our
    /// own stdio. Without the flag there is none, whatever the container's
    /// process.terminal says, as in runc (its exec sets Terminal to false unless --tty).
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    tty: Option<bool>,
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// VAR=value, added to the container's environment (replacing the spec's VAR).
    #[arg(short, long)]
    env: Vec<String>,
    /// A supplementary group id for the process, after the spec's (may be repeated).
    #[arg(short = 'g', long)]
    additional_gids: Vec<u32>,
    /// Exec even into a paused container (the process waits until it is resumed).
    #[arg(long)]
    ignore_paused: bool,
    /// Run the process in an existing sub-cgroup of the container's:
    /// [CONTROLLER[,CONTROLLER…]:]PATH (may be repeated, each with its controllers).
    #[arg(long = "cgroup")]
    cgroup: Vec<String>,
    /// uid[:gid]
    #[arg(short, long)]
    user: Option<String>,
    /// The AppArmor profile for the process (default: the container's).
    #[arg(long)]
    apparmor: Option<String>,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

impl ExecArgs {
    fn process(&self, rt: &Runtime) -> Result<spec::ProcessConfig> {
        if let Some(path) = &self.process {
            if !self.command.is_empty() {
                bail!("give either --process or a command, not both");
            }
            return Ok(spec::load_process(path)?);
        }
        if self.command.is_empty() {
            bail!("exec needs --process FILE or a command after the container id");
        }
        let (rec, _) = rt.load(&self.id)?;
        let cfg =
            spec::load(&rec.bundle).with_context(|| format!("the container's bundle {}", rec.bundle.display()))?;
        let mut p = cfg.process;
        p.args = self.command.clone();
        // runc 1.1's exec: no terminal unless asked for, even when the container has one
        // (`exec -d` into a `run -d --console-socket` container needs no socket).
        p.terminal = self.tty.unwrap_or(false);
        for e in &self.env {
            // The last one of a name wins, as in runc: a program's getenv finds the first.
            let name = e.split_once('=').map_or(e.as_str(), |(n, _)| n);
            p.env.retain(|old| old.split_once('=').map_or(old.as_str(), |(n, _)| n) != name);
            p.env.push(e.clone());
        }
        p.additional_gids.extend(&self.additional_gids);
        if let Some(cwd) = &self.cwd {
            p.cwd = cwd.clone();
        }
        if let Some(profile) = &self.apparmor {
            p.apparmor_profile = Some(profile.clone());
        }
        if let Some(user) = &self.user {
            let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
            p.uid = uid.parse().with_context(|| format!("--user {user:?}: uid[:gid] as numbers"))?;
            p.gid = gid.parse().with_context(|| format!("--user {user:?}: uid[:gid] as numbers"))?;
        }
        Ok(p)
    }
}

#[derive(Args)]
struct CreateArgs {
    /// The bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// A unix socket that receives the master end of the container's pty.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Pass this many fds beyond stdio (3, 4, …) on to the container.
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Accepted for compatibility.
    #[arg(long)]
    no_pivot: bool,
    /// Accepted for compatibility.
    #[arg(long)]
    no_new_keyring: bool,
    id: String,
}

impl CreateArgs {
    fn options(&self, global: &GlobalArgs) -> Result<CreateOptions> {
        let abs = |p: &Path| -> Result<PathBuf> {
            Ok(if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) })
        };
        Ok(CreateOptions {
            bundle: abs(&self.bundle)?,
            pid_file: self.pid_file.as_deref().map(abs).transpose()?,
            console_socket: self.console_socket.clone(),
            preserve_fds: self.preserve_fds,
            cgroup_parent: Some(global.cgroup_parent.clone()),
            stdio: None,
        })
    }
}

/// `exec --cgroup` values as runc's getSubCgroupPaths reads them: PATH alone (only as the
/// one value) for every controller, or CONTROLLERS:PATH with comma-separated controllers.
fn sub_cgroups(args: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for arg in args {
        match arg.split(':').collect::<Vec<_>>()[..] {
            [path] if args.len() == 1 => out.push((String::new(), path.to_string())),
            [_] => bail!("invalid --cgroup argument: {arg} (missing <controller>: prefix)"),
            [controllers, path] => {
                out.extend(controllers.split(',').map(|c| (c.to_string(), path.to_string())));
            }
            _ => bail!("invalid --cgroup argument: {arg}"),
        }
    }
    Ok(out)
}

/// `nodectl-runtime …` (argv[0] dispatch).
pub fn main_as_runtime() -> i32 {
    let argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let name =
        argv.first().and_then(|a| Path::new(a).file_name()).map_or("nodectl-runtime".into(), |n| n.to_string_lossy());
    let app = RuntimeCli::command();
    // Help and version as urfave/cli gives them (runc's help.bats, version.bats), before
    // clap, whose texts differ.
    let text = match runtime_help::early(&app, argv.get(1..).unwrap_or_default()) {
        None => None,
        Some(Early::AppHelp) => Some(runtime_help::app_help(&app, &name)),
        Some(Early::CommandHelp(verb)) => Some(runtime_help::command_help(&app, &name, &verb)),
        Some(Early::Version) => Some(runtime_help::version()),
        Some(Early::NoTopic(topic)) => {
            let line = runtime_log::line(LogFormat::Text, "error", &format!("No help topic for '{topic}'"));
            let _ = std::io::stderr().write_all(line.as_bytes());
            return 3;
        }
    };
    if let Some(text) = text {
        let _ = std::io::stdout().write_all(text.as_bytes());
        return 0;
    }
    let cli = RuntimeCli::parse();
    match runtime_log::open(cli.global.log.as_deref()) {
        Ok(out) => runtime_log::install(out, cli.global.log_format, cli.global.debug),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "nodectl-runtime: {}", super::report::one_line(&e));
            return 1;
        }
    }
    let failed = failure_code(&cli.verb);
    finish(&cli.global, run_verb(&cli.root, &cli.global, cli.verb), failed)
}

/// `nodectl runtime …`: state under ROOT/runtime.
pub fn run(root: &Path, args: RuntimeArgs) -> Result<i32> {
    // The log file exists afterwards even when nothing fails, as with runc.
    runtime_log::open(args.global.log.as_deref())?;
    let failed = failure_code(&args.verb);
    let code = finish(&args.global, run_verb(&root.join("runtime"), &args.global, args.verb), failed);
    Ok(code)
}

/// The exit code when the runtime itself fails: 255 for `exec`, as runc has it, so that
/// callers can tell it from the exit code of the process (which is ours otherwise); 1 for
/// the rest.
fn failure_code(verb: &Verb) -> i32 {
    if matches!(verb, Verb::Exec(_)) { 255 } else { 1 }
}

fn finish(global: &GlobalArgs, result: Result<i32>, failed: i32) -> i32 {
    match result {
        Ok(code) => code,
        Err(err) => {
            let msg = super::report::one_line(&err);
            if let Some(log) = &global.log
                && let Ok(mut f) = OpenOptions::new().create(true).append(true).open(log)
            {
                let _ = f.write_all(runtime_log::line(global.log_format, "error", &msg).as_bytes());
            }
            eprintln!("nodectl-runtime: {msg}");
            failed
        }
    }
}

fn run_verb(root: &Path, global: &GlobalArgs, verb: Verb) -> Result<i32> {
    if matches!(verb, Verb::Create(_) | Verb::Run { .. } | Verb::Exec(_)) {
        // Before anything that enters a container (CVE-2019-5736).
        crate::sys::exe::reexec_sealed().context("re-execute from a read-only copy of our binary")?;
    }
    let rt = Runtime::new(root);
    match verb {
        Verb::Create(a) => {
            rt.create(&a.id, &a.options(global)?)?;
        }
        Verb::Start { id } => rt.start(&id)?,
        Verb::State { id } => println!("{}", serde_json::to_string_pretty(&rt.state(&id)?)?),
        Verb::Kill { all, id, signal } => rt.kill(&id, parse_signal(&signal)?, all)?,
        Verb::Delete { force, id } => rt.delete(&id, force)?,
        Verb::Run { create, detach, keep } => return Ok(rt.run(&create.id, &create.options(global)?, detach, keep)?),
        Verb::Exec(a) => {
            let process = a.process(&rt)?;
            let opts = ExecOptions {
                detach: a.detach,
                pid_file: a.pid_file.clone(),
                console_socket: a.console_socket.clone(),
                preserve_fds: a.preserve_fds,
                ignore_paused: a.ignore_paused,
                sub_cgroups: sub_cgroups(&a.cgroup)?,
                stdio: None,
            };
            return Ok(rt.exec(&a.id, &process, &opts)?);
        }
        Verb::Ps { format, id, ps_args } => ps(&rt, &id, &format, &ps_args)?,
        Verb::Events { stats, interval, id } => {
            let interval = super::runtime_events::parse_duration(&interval).context("--interval")?;
            super::runtime_events::events(&rt, &id, stats, interval)?
        }
        Verb::Pause { id } => rt.pause(&id, true)?,
        Verb::Resume { id } => rt.pause(&id, false)?,
        Verb::Update(a) => rt.update(&a.id, &a.resources()?)?,
        Verb::List { format, quiet } => list(&rt, root, &format, quiet)?,
        Verb::Features => println!("{}", serde_json::to_string_pretty(&features())?),
        Verb::Checkpoint { .. } | Verb::Restore { .. } => {
            bail!("checkpoint and restore need CRIU, which nodectl-runtime does not support")
        }
        Verb::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} exists; remove it first", path.display());
            }
            std::fs::write(&path, serde_json::to_string_pretty(&spec::default_spec())? + "\n")
                .with_context(|| format!("write {}", path.display()))?;
        }
    }
    Ok(0)
}

/// TERM, SIGTERM, sigterm or 15; 0 only checks that the process is there (kill(2)).
fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (0..=64).contains(&n) {
            return Ok(n);
        }
        bail!("signal {n} is out of range 0-64");
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse::<nix::sys::signal::Signal>().map(|s| s as i32).map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

fn ps(rt: &Runtime, id: &str, format: &str, args: &[String]) -> Result<()> {
    let pids = rt.processes(id)?;
    match format {
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => {
            let args: Vec<String> = if args.is_empty() { vec!["-ef".into()] } else { args.to_vec() };
            let out = std::process::Command::new("ps").args(&args).output().context("run ps")?;
            if !out.status.success() {
                bail!("ps {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let col = header.split_whitespace().position(|c| c == "PID").context("ps output has no PID column")?;
            println!("{header}");
            for line in lines {
                if line
                    .split_whitespace()
                    .nth(col)
                    .and_then(|p| p.parse::<i32>().ok())
                    .is_some_and(|p| pids.contains(&p))
                {
                    println!("{line}");
                }
            }
        }
        other => bail!("--format {other:?}: use table or json"),
    }
    Ok(())
}

/// One container as runc's `list --format json` prints it: its keys in runc's order (its
/// tests match the line as text), annotations only when there are some, and the owner of
/// the container's state.
#[derive(serde::Serialize)]
struct Listed {
    #[serde(rename = "ociVersion")]
    oci_version: serde_json::Value,
    id: serde_json::Value,
    pid: serde_json::Value,
    status: serde_json::Value,
    bundle: serde_json::Value,
    rootfs: serde_json::Value,
    created: serde_json::Value,
    #[serde(skip_serializing_if = "no_annotations")]
    annotations: serde_json::Value,
    owner: String,
}

fn no_annotations(v: &serde_json::Value) -> bool {
    v.as_object().is_none_or(|m| m.is_empty())
}

/// The user owning a container's state directory, by name where it has one (as runc shows it).
fn owner_of(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else { return String::new() };
    match nix::unistd::User::from_uid(meta.uid().into()) {
        Ok(Some(u)) => u.name,
        _ => meta.uid().to_string(),
    }
}

fn list(rt: &Runtime, root: &Path, format: &str, quiet: bool) -> Result<()> {
    let mut states = Vec::new();
    for id in rt.root.list()? {
        if let Ok(mut s) = rt.state(&id) {
            let mut field = |k: &str| s.get_mut(k).map(serde_json::Value::take).unwrap_or_default();
            states.push(Listed {
                oci_version: field("ociVersion"),
                id: field("id"),
                pid: field("pid"),
                status: field("status"),
                bundle: field("bundle"),
                rootfs: field("rootfs"),
                created: field("created"),
                annotations: field("annotations"),
                owner: owner_of(&root.join(&id)),
            });
        }
    }
    if quiet {
        for s in &states {
            println!("{}", s.id.as_str().unwrap_or_default());
        }
        return Ok(());
    }
    match format {
        "json" => println!("{}", serde_json::to_string(&states)?),
        "table" => {
            println!("{:<24} {:<8} {:<10} {:<40} {:<36} OWNER", "ID", "PID", "STATUS", "BUNDLE", "CREATED");
            for s in &states {
                println!(
                    "{:<24} {:<8} {:<10} {:<40} {:<36} {}",
                    s.id.as_str().unwrap_or_default(),
                    s.pid,
                    s.status.as_str().unwrap_or_default(),
                    s.bundle.as_str().unwrap_or_default(),
                    s.created.as_str().unwrap_or_default(),
                    s.owner
                );
            }
        }
        other => bail!("--format {other:?}: use table or json"),
    }
    Ok(())
}

fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "dev", "diratime", "dirsync", "exec", "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ro", "rprivate", "ratime", "rdev", "rdiratime", "rexec", "rnoatime", "rnodev", "rnodiratime", "rnoexec", "rnorelatime", "rnostrictatime", "rnosuid", "rnosymfollow", "rrelatime", "rro", "rrw", "rshared", "rstrictatime", "rsuid", "rsymfollow", "rslave", "runbindable", "rw", "shared", "slave", "strictatime", "suid", "sync", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
            },
            "apparmor": {"enabled": true},
            "selinux": {"enabled": false}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("BOGUS").is_err());
        assert_eq!(parse_signal("0").unwrap(), 0);
        assert!(parse_signal("65").is_err());
    }

    #[test]
    fn sizes_parse_as_runcs_flags_take_them() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_bytes("2kb").unwrap(), 2048);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("12x").is_err());
    }
}
