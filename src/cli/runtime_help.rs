//! `nodectl-runtime`'s help and version as runc's urfave/cli prints them: `-h`/`--help`
//! on the program and on every command, `help [COMMAND]` (alias `h`), "No help topic for
//! 'foo'" with exit code 3 for an unknown command, `-v`/`--version`. Tools and runc's
//! help.bats and version.bats read these texts; the texts come from the clap definitions,
//! so there is one description of each flag.

use clap::Command;

/// What the command line asks for before clap parses it.
#[derive(Debug, PartialEq)]
pub enum Early {
    AppHelp,
    CommandHelp(String),
    NoTopic(String),
    Version,
}

/// The runc version whose command line nodectl-runtime follows.
pub const RUNC_VERSION: &str = "1.1.5";

/// Finds -h/--help/-v/--version where urfave/cli takes them (before the command's first
/// positional argument, so `exec ID sh -h` is the program's -h), `help`/`h`, and unknown
/// commands.
pub fn early(app: &Command, args: &[String]) -> Option<Early> {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "-h" | "--help" => return Some(Early::AppHelp),
            "-v" | "--version" => return Some(Early::Version),
            "--" => {
                i += 1;
                break;
            }
            _ if a.starts_with('-') && a.len() > 1 => i += if takes_value(app, a) { 2 } else { 1 },
            _ => break,
        }
    }
    let verb = args.get(i)?;
    if verb == "help" || verb == "h" {
        return Some(match args[i + 1..].iter().find(|a| !a.starts_with('-')) {
            None => Early::AppHelp,
            Some(t) if app.find_subcommand(t).is_some() => Early::CommandHelp(t.clone()),
            Some(t) => Early::NoTopic(t.clone()),
        });
    }
    let Some(cmd) = app.find_subcommand(verb) else { return Some(Early::NoTopic(verb.clone())) };
    let mut j = i + 1;
    while let Some(a) = args.get(j) {
        match a.as_str() {
            "-h" | "--help" => return Some(Early::CommandHelp(verb.clone())),
            "--" => break,
            _ if a.starts_with('-') && a.len() > 1 => {
                j += if takes_value(cmd, a) || takes_value(app, a) { 2 } else { 1 }
            }
            _ => break,
        }
    }
    None
}

/// Whether `flag` (without `=value`) is one of `cmd`'s options that take a value.
fn takes_value(cmd: &Command, flag: &str) -> bool {
    if flag.contains('=') {
        return false;
    }
    cmd.get_arguments().any(|a| {
        let named = match flag.strip_prefix("--") {
            Some(long) => a.get_long() == Some(long),
            None => flag.len() == 2 && a.get_short().is_some_and(|s| flag.ends_with(s)),
        };
        // `-t` of `exec -t sh` takes a value only as `--tty=false`.
        named && a.get_action().takes_values() && !a.is_require_equals_set()
    })
}

/// `-v`: runc's lines, `runc version X.Y.Z` included for tools that look for it.
pub fn version() -> String {
    format!(
        "nodectl-runtime {} (runc version {RUNC_VERSION} compatible)\ncommit: unknown\nspec: 1.2.0\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The program's help, in urfave/cli's sections.
pub fn app_help(app: &Command, name: &str) -> String {
    let mut out = String::from("NAME:\n");
    // Both names, as a man page lists a program's names: callers that drive runc find
    // "runc - Open Container Initiative runtime" here.
    out += "   nodectl-runtime, runc - Open Container Initiative runtime\n\n";
    if let Some(about) = app.get_about() {
        out += &format!("{about}\n\n");
    }
    out += &format!("USAGE:\n   {name} [global options] command [command options] [arguments...]\n\n");
    out += &format!("VERSION:\n   {}", version());
    out += "\nCOMMANDS:\n";
    let mut rows: Vec<(String, String)> = app
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| (c.get_name().to_string(), first_line(c.get_about())))
        .collect();
    rows.push(("help, h".into(), "Shows a list of commands or help for one command".into()));
    out += &table(&rows);
    out += "\nGLOBAL OPTIONS:\n";
    let mut opts = options(app);
    opts.push(("--help, -h".into(), "show help".into()));
    opts.push(("--version, -v".into(), "print the version".into()));
    out += &table(&opts);
    out
}

/// One command's help, in urfave/cli's sections.
pub fn command_help(app: &Command, name: &str, verb: &str) -> String {
    let Some(cmd) = app.find_subcommand(verb) else { return String::new() };
    let verb = cmd.get_name();
    let mut out = format!("NAME:\n   nodectl-runtime {verb}, runc {verb} - {}\n\n", first_line(cmd.get_about()));
    let positionals: Vec<String> = cmd
        .get_positionals()
        .map(|a| {
            let id = a.get_id().as_str();
            let shown = if id == "id" { "<container-id>".to_string() } else { format!("<{}>", id.replace('_', "-")) };
            if a.is_required_set() { shown } else { format!("[{shown}]") }
        })
        .collect();
    out += &format!("USAGE:\n   {name} {verb} [command options] {}\n", positionals.join(" "));
    if let Some(long) = cmd.get_long_about() {
        out += &format!("\n{long}\n");
    }
    let opts = options(cmd);
    if !opts.is_empty() {
        out += "\nOPTIONS:\n";
        out += &table(&opts);
    }
    out
}

fn first_line(text: Option<&clap::builder::StyledStr>) -> String {
    text.map(|t| t.to_string().lines().next().unwrap_or_default().trim_end_matches('.').to_string()).unwrap_or_default()
}

/// A command's options as urfave lists them: `--name value, -n value`, help, default.
fn options(cmd: &Command) -> Vec<(String, String)> {
    cmd.get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .map(|a| {
            let value = if a.get_action().takes_values() && !a.is_require_equals_set() { " value" } else { "" };
            let mut names = Vec::new();
            if let Some(l) = a.get_long() {
                names.push(format!("--{l}{value}"));
            }
            if let Some(s) = a.get_short() {
                names.push(format!("-{s}{value}"));
            }
            let mut help = first_line(a.get_help());
            let defaults: Vec<String> =
                a.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
            if !defaults.is_empty() && !value.is_empty() {
                help += &format!(" (default: {:?})", defaults.join(","));
            }
            (names.join(", "), help.trim().to_string())
        })
        .collect()
}

fn table(rows: &[(String, String)]) -> String {
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    rows.iter().map(|(n, h)| format!("   {n:<width$}  {h}").trim_end().to_string() + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Command {
        Command::new("t")
            .arg(clap::Arg::new("root").long("root"))
            .arg(clap::Arg::new("debug").long("debug").action(clap::ArgAction::SetTrue))
            .subcommand(
                Command::new("exec")
                    .arg(clap::Arg::new("cwd").long("cwd"))
                    .arg(clap::Arg::new("tty").short('t').action(clap::ArgAction::SetTrue))
                    .arg(clap::Arg::new("id"))
                    .arg(clap::Arg::new("command").num_args(0..).trailing_var_arg(true)),
            )
    }

    fn early_of(args: &[&str]) -> Option<Early> {
        early(&app(), &args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn help_and_version_are_found_where_urfave_takes_them() {
        assert_eq!(early_of(&["-h"]), Some(Early::AppHelp));
        assert_eq!(early_of(&["--root", "-h", "-v"]), Some(Early::Version));
        assert_eq!(
            early_of(&["--debug", "exec", "--cwd", "/", "-t", "--help"]),
            Some(Early::CommandHelp("exec".into()))
        );
        assert_eq!(early_of(&["exec", "c1", "sh", "-h"]), None);
        assert_eq!(early_of(&["help", "exec"]), Some(Early::CommandHelp("exec".into())));
        assert_eq!(early_of(&["h"]), Some(Early::AppHelp));
        assert_eq!(early_of(&["help", "foo"]), Some(Early::NoTopic("foo".into())));
        assert_eq!(early_of(&["foo", "-h"]), Some(Early::NoTopic("foo".into())));
        assert_eq!(early_of(&["exec", "c1", "ls"]), None);
    }
}
