//! The parts stand in layers (docs/architecture.md): each module of `src/` may use its own
//! part and the parts below it, never one above. This reads every source file and checks
//! each `crate::PART` it names.

use std::fs;
use std::path::{Path, PathBuf};

/// Bottom first.
const LAYERS: &[&str] = &["sys", "model", "image", "runtime", "network", "node", "server", "cli"];

fn rank(part: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == part)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every part a source text names as `crate::PART` or inside `crate::{…}`.
fn named_parts(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
            None => vec![rest],
        };
        for n in names {
            let part: String = n.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !part.is_empty() {
                out.push(part);
            }
        }
    }
    out
}

#[test]
fn no_part_imports_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let Some(own) = rel.components().next().and_then(|c| c.as_os_str().to_str()) else { continue };
        let Some(own_rank) = rank(own.trim_end_matches(".rs")) else { continue };
        for part in named_parts(&fs::read_to_string(file).unwrap()) {
            if rank(&part).is_some_and(|r| r > own_rank) {
                upward.push(format!("{} uses crate::{part}", rel.display()));
            }
        }
    }
    assert!(upward.is_empty(), "imports from a layer above:\n{}", upward.join("\n"));
}

#[test]
fn every_part_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(rank(name).is_some(), "src/{name}/ is in no layer: add it to LAYERS and docs/architecture.md");
        }
    }
}

#[test]
fn the_scanner_sees_grouped_imports() {
    assert_eq!(
        named_parts("use crate::{sys::lock, model};\nlet x = crate::node::pod::run();"),
        ["sys", "model", "node"]
    );
}
