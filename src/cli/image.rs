//! `nodectl image …`

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::image::{Reference, Store, import, pull};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Import an OCI layout directory, an OCI archive or a docker-archive.
    Import {
        path: PathBuf,
        /// Reference to store the image under (default: the name the archive carries).
        #[arg(long)]
        name: Option<String>,
    },
    /// Pull an image from a registry.
    ///
    /// Credentials come from $REGISTRY_AUTH_FILE, ROOT/auth.json,
    /// $XDG_RUNTIME_DIR/containers/auth.json or ~/.docker/config.json ({"auths": {HOST: {"auth": base64(user:pass)}}}).
    /// Registries listed in NODECTL_INSECURE_REGISTRIES or ROOT/registries.json ({"insecure": [HOST]}) use plain HTTP.
    Pull {
        reference: String,
        /// Allow plain HTTP to this registry (for registries on loopback).
        #[arg(long)]
        insecure: bool,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Print only image IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print an image's config as JSON.
    Inspect { reference: String },
    /// Remove images; layers another image uses stay.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
}

pub fn run(root: &Path, cmd: ImageCommand) -> Result<i32> {
    // Pods of a SIGKILLed `nodectl run` keep root filesystems mounted (and so their layers
    // in use): any command that touches the store removes them first.
    super::run::clean_abandoned(root);
    let store = Store::open(root).with_context(|| format!("opening the image store under {}", root.display()))?;
    match cmd {
        ImageCommand::Import { path, name } => {
            let rec = import::import(&store, &path, name.as_deref())
                .with_context(|| format!("importing {}", path.display()))?;
            println!("{} {}", rec.name, rec.id());
        }
        ImageCommand::Pull { reference, insecure } => {
            let r: Reference = reference.parse()?;
            let mut opts = pull::PullOptions::from_environment(root);
            opts.insecure = insecure;
            opts.progress_bars = std::io::stderr().is_terminal();
            let rec = pull::pull(&store, &r, &opts).with_context(|| format!("pulling {r}"))?;
            println!("{} {}", rec.name, rec.id());
        }
        ImageCommand::Ls { quiet } => {
            let images = store.list()?;
            let mut out = std::io::stdout().lock();
            if quiet {
                for r in &images {
                    writeln!(out, "{}", r.id().short())?;
                }
                return Ok(0);
            }
            writeln!(out, "{:<50} {:<12} {:>10}  CREATED", "REFERENCE", "IMAGE ID", "SIZE")?;
            for r in &images {
                writeln!(
                    out,
                    "{:<50} {:<12} {:>10}  {}",
                    r.name,
                    r.id().short(),
                    human_size(r.size),
                    r.created.as_deref().unwrap_or("-")
                )?;
            }
        }
        ImageCommand::Inspect { reference } => {
            let rec = store.resolve(&reference)?;
            let config = store.read_blob(&rec.config)?;
            let value: serde_json::Value = serde_json::from_slice(&config)?;
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        ImageCommand::Rm { references } => {
            let mut failed = false;
            for r in references {
                match store.remove(&r) {
                    Ok(names) => names.iter().for_each(|n| println!("Untagged: {n}")),
                    Err(e) => {
                        eprintln!("nodectl: removing {r}: {e}");
                        failed = true;
                    }
                }
            }
            return Ok(i32::from(failed));
        }
    }
    Ok(0)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes}B") } else { format!("{v:.1}{}", UNITS[unit]) }
}
