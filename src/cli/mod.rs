//! The command line: one multi-call binary (docs/architecture.md, decision 1). Argument structs and
//! dispatch only; each verb's work lives in its part.

mod attach;
mod daemon;
mod exec;
mod foreground;
mod image;
mod local;
mod pods;
pub mod report;
mod run;
mod runtime;
mod runtime_events;
mod runtime_help;
mod runtime_log;
mod server;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "nodectl", version, about = "A Linux container runtime, node daemon and small control plane")]
struct Cli {
    /// Directory that holds all of nodectl's state.
    #[arg(long, global = true, env = "NODECTL_ROOT", default_value = "/var/lib/nodectl")]
    root: PathBuf,

    /// Log filter (tracing's EnvFilter syntax), also NODECTL_LOG.
    #[arg(long, global = true, env = "NODECTL_LOG", default_value = "warn")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the image store.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Run the control plane: the Kubernetes API over HTTPS.
    Server(server::ServerArgs),
    /// The OCI runtime CLI (runc-compatible), state under ROOT/runtime.
    Runtime(runtime::RuntimeArgs),
    /// Run a Pod manifest in the foreground; the exit code is the pod's.
    Run(run::RunArgs),
    /// Remove what pods whose `nodectl run` was killed left behind.
    Gc,
    /// The node daemon: keeps the pods it is given (`run --detach`, `apply`) running.
    Daemon(daemon::DaemonArgs),
    /// Create or replace a pod on the node daemon.
    Apply(pods::ApplyArgs),
    /// List pods of the node daemon, or show one.
    Get(pods::GetArgs),
    /// Delete a pod of the node daemon (SIGTERM, then SIGKILL after its grace period).
    Delete(pods::DeleteArgs),
    /// Print a container's log.
    Logs(pods::LogsArgs),
    /// Run a command in a running container of a pod of the node daemon.
    Exec(exec::ExecArgs),
    /// Attach to the output (and with -i the input) of a running container.
    Attach(attach::AttachArgs),
    /// Cpu and memory of the node daemon's pods.
    Top(pods::TopArgs),
    /// Show a pod of the node daemon in detail, with its events.
    Describe(pods::DescribeArgs),
    /// Print nodectl's RuntimeDefault AppArmor profile (`nodectl-default`, pods' default
    /// where the host enforces AppArmor), or load it with --load.
    ApparmorProfile(ApparmorProfileArgs),
    /// A pod's monitor (started by nodectl itself, not by hand).
    #[command(hide = true)]
    Monitor(run::MonitorArgs),
}

#[derive(clap::Args)]
struct ApparmorProfileArgs {
    /// Load it into the kernel with apparmor_parser (unless the kernel has it) instead of
    /// printing it.
    #[arg(long)]
    load: bool,
}

fn apparmor_profile(args: ApparmorProfileArgs) -> anyhow::Result<i32> {
    use crate::node::apparmor;
    if !args.load {
        print!("{}", apparmor::default_profile());
        return Ok(0);
    }
    if !crate::runtime::apparmor::host_enabled() {
        anyhow::bail!("AppArmor is not enabled on this host");
    }
    apparmor::ensure_default_loaded().map_err(anyhow::Error::msg)?;
    Ok(0)
}

pub fn main() -> i32 {
    // Before anything else runs: a panic aborts unless it is in an API request handler.
    crate::sys::unwind::install();
    // Called through a link named nodectl-runtime (or runc, for callers that find their
    // runtime by that name): the OCI runtime CLI at top level.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name().is_some_and(|n| n == "nodectl-runtime" || n == "runc") {
        return runtime::main_as_runtime();
    }
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours on a terminal only: a service manager's journal or a log file gets text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Its own report of a failed write is an eprintln!, which panics on a closed stderr.
        .log_internal_errors(false);
    match &cli.command {
        Command::Daemon(a) if a.log_format == daemon::LogFormat::Json => logs.json().init(),
        _ => logs.init(),
    }
    let result = match cli.command {
        Command::Image(cmd) => image::run(&cli.root, cmd),
        Command::Server(args) => server::run(&cli.root, args),
        Command::Runtime(args) => runtime::run(&cli.root, args),
        Command::Run(args) => run::run(&cli.root, args),
        Command::Gc => run::gc(&cli.root),
        Command::Monitor(args) => run::monitor(&cli.root, args),
        Command::ApparmorProfile(args) => apparmor_profile(args),
        Command::Daemon(args) => daemon::run(&cli.root, args),
        Command::Apply(args) => pods::send(&cli.root, &args.socket, &args.filename, true),
        Command::Get(args) => pods::get(&cli.root, args),
        Command::Delete(args) => pods::delete(&cli.root, args),
        Command::Logs(args) => pods::logs(&cli.root, args),
        Command::Exec(args) => exec::exec(&cli.root, args),
        Command::Attach(args) => attach::attach(&cli.root, args),
        Command::Top(args) => pods::top(&cli.root, args),
        Command::Describe(args) => pods::describe(&cli.root, args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // Not eprintln!: a closed stderr must not turn exit code 1 into an abort.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "nodectl: {}", report::one_line(&err));
            1
        }
    }
}
