//! `nodectl image import`: OCI image layouts (a directory), OCI archives (a tar of one) and
//! docker-archives (`docker save`: the classic `manifest.json` form, whose `layer.tar`
//! entries may be symlinks, and Docker 25's form that is also an OCI layout).
//!
//! Every file is hashed as it is read and staged under the store's `tmp/`; only when the
//! whole image checks out is anything published (see [`Store::commit_image`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::digest::{Digest, DigestError};
use super::reference::{Reference, ReferenceError};
use super::store::{ImageRecord, Staged, StagedBlob, Store, StoreError, read_bounded, read_document};
use crate::sys::resolve::{RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, open_regular};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path}: not an OCI layout (no oci-layout and index.json), an OCI archive or a docker-archive (no manifest.json)"
    )]
    UnknownFormat { path: PathBuf },
    #[error("{path}: reading the archive failed at entry {entry:?}: {source} (is the archive truncated?)")]
    Archive { path: PathBuf, entry: String, source: io::Error },
    #[error("{path}: {file} is not valid JSON of its kind: {source}")]
    BadJson { path: PathBuf, file: String, source: serde_json::Error },
    #[error("{path}: {file} is missing")]
    Missing { path: PathBuf, file: String },
    #[error("{path}: file {file} is named for digest {expected} but its content hashes to {actual}")]
    Corrupt { path: PathBuf, file: String, expected: Digest, actual: Digest },
    #[error("{path}: no linux/amd64 image in the index (found: {found})")]
    NoPlatform { path: PathBuf, found: String },
    #[error("{path}: the archive holds {count} images; name the one to import with --name")]
    Several { path: PathBuf, count: usize },
    #[error("{path}: no image is named {name:?} in it")]
    NoSuchName { path: PathBuf, name: String },
    #[error("{path}: the image has no name; give one with --name")]
    Unnamed { path: PathBuf },
    #[error("{path}: a symlink chain for {file} does not end at a file in the archive")]
    BadLink { path: PathBuf, file: String },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, ImportError>;

/// The files of an image source, however it is packaged.
trait Source {
    /// The content of a small file (JSON), if present.
    fn small(&mut self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Stages file `name`, checked against `expected` if given; returns its digest and size.
    fn stage(
        &mut self,
        store: &Store,
        name: &str,
        expected: Option<&Digest>,
        staged: &mut Staged,
    ) -> Result<(Digest, u64)>;
    fn path(&self) -> &Path;
}

/// An OCI layout or docker-archive directory: files are read in place, each resolved
/// inside the directory (openat2 RESOLVE_IN_ROOT: an absolute name, `..` or a symlink
/// cannot lead out of it) and read only if it is a regular file (a FIFO would hang the
/// import, `/dev/zero` fill the disk).
struct Dir {
    path: PathBuf,
    root: OwnedFd,
}

impl Dir {
    fn open(path: &Path) -> Result<Dir> {
        let root = File::open(path).map_err(|source| ImportError::Io { path: path.to_path_buf(), source })?;
        Ok(Dir { path: path.to_path_buf(), root: root.into() })
    }

    fn open_file(&self, name: &str) -> io::Result<File> {
        open_regular(self.root.as_fd(), name, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    }
}

impl Source for Dir {
    fn small(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let p = self.path.join(name);
        match self.open_file(name).and_then(read_bounded) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ImportError::Io { path: p, source }),
        }
    }

    fn stage(
        &mut self,
        store: &Store,
        name: &str,
        expected: Option<&Digest>,
        staged: &mut Staged,
    ) -> Result<(Digest, u64)> {
        let p = self.path.join(name);
        let mut f = self.open_file(name).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ImportError::Missing { path: self.path.clone(), file: name.to_string() },
            _ => ImportError::Io { path: p.clone(), source },
        })?;
        let mut w = store.blob_writer()?;
        io::copy(&mut f, &mut w).map_err(|source| ImportError::Io { path: p.clone(), source })?;
        let blob = w.finish_any()?;
        check(&self.path, name, expected, &blob.digest)?;
        let out = (blob.digest.clone(), blob.size);
        staged.add(blob);
        Ok(out)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

fn check(path: &Path, name: &str, expected: Option<&Digest>, actual: &Digest) -> Result<()> {
    match expected {
        Some(expected) if expected != actual => Err(ImportError::Corrupt {
            path: path.to_path_buf(),
            file: name.to_string(),
            expected: expected.clone(),
            actual: actual.clone(),
        }),
        _ => Ok(()),
    }
}

/// A tar archive, read once from start to end: every regular file is staged as it streams
/// by (so nothing large is held in memory), symlinks are remembered and resolved after.
struct Archive {
    path: PathBuf,
    files: BTreeMap<String, StagedBlob>,
    /// Files already handed to a [`Staged`]: a layer.tar linked from several places.
    taken: BTreeMap<String, (Digest, u64)>,
    links: BTreeMap<String, String>,
}

/// Archive member names without `./`, `/` or `..` tricks; None for names that leave the
/// archive's root.
fn clean_name(name: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

impl Archive {
    fn read(store: &Store, path: &Path) -> Result<Archive> {
        let file = File::open(path).map_err(|source| ImportError::Io { path: path.to_path_buf(), source })?;
        let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, file));
        let mut files = BTreeMap::new();
        let mut links = BTreeMap::new();
        let fail = |entry: &str, source: io::Error| ImportError::Archive {
            path: path.to_path_buf(),
            entry: entry.to_string(),
            source,
        };
        let entries = archive.entries().map_err(|e| fail("(start)", e))?;
        let mut last = String::from("(start)");
        for entry in entries {
            let mut entry = entry.map_err(|e| fail(&last, e))?;
            let raw = entry.path().map_err(|e| fail(&last, e))?.into_owned();
            let Some(name) = clean_name(&raw) else { continue };
            last = name.clone();
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut w = store.blob_writer()?;
                    io::copy(&mut entry, &mut w).map_err(|e| fail(&name, e))?;
                    let expected = entry.header().size().map_err(|e| fail(&name, e))?;
                    if w.written() != expected {
                        return Err(fail(
                            &name,
                            io::Error::new(io::ErrorKind::UnexpectedEof, "entry is shorter than its header says"),
                        ));
                    }
                    files.insert(name, w.finish_any()?);
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry.link_name().map_err(|e| fail(&name, e))?.unwrap_or_default();
                    // Symlink targets are relative to the link's directory; hardlink
                    // targets to the archive root.
                    let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                        Path::new(&name).parent().unwrap_or(Path::new("")).join(&target)
                    } else {
                        target.to_path_buf()
                    };
                    if let Some(t) = clean_name(&base) {
                        links.insert(name, t);
                    }
                }
                _ => {}
            }
        }
        Ok(Archive { path: path.to_path_buf(), files, taken: BTreeMap::new(), links })
    }

    fn resolve(&self, name: &str) -> Option<String> {
        let mut current = name.to_string();
        for _ in 0..16 {
            if self.files.contains_key(&current) || self.taken.contains_key(&current) {
                return Some(current);
            }
            current = self.links.get(&current)?.clone();
        }
        None
    }
}

impl Source for Archive {
    fn small(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(real) = self.resolve(name) else { return Ok(None) };
        let Some(blob) = self.files.get(&real) else { return Ok(None) };
        let p = blob.path().to_path_buf();
        read_document(&p).map(Some).map_err(|source| ImportError::Io { path: self.path.join(name), source })
    }

    fn stage(
        &mut self,
        _store: &Store,
        name: &str,
        expected: Option<&Digest>,
        staged: &mut Staged,
    ) -> Result<(Digest, u64)> {
        let real = self.resolve(name).ok_or_else(|| {
            if self.links.contains_key(name) {
                ImportError::BadLink { path: self.path.clone(), file: name.to_string() }
            } else {
                ImportError::Missing { path: self.path.clone(), file: name.to_string() }
            }
        })?;
        if let Some((digest, size)) = self.taken.get(&real) {
            check(&self.path, name, expected, digest)?;
            return Ok((digest.clone(), *size));
        }
        let blob = self.files.remove(&real).expect("resolve() found it");
        check(&self.path, name, expected, &blob.digest)?;
        let out = (blob.digest.clone(), blob.size);
        self.taken.insert(real, out.clone());
        staged.add(blob);
        Ok(out)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(path: &Path, file: &str, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|source| ImportError::BadJson {
        path: path.to_path_buf(),
        file: file.to_string(),
        source,
    })
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn descriptor_digest(d: &Descriptor) -> Result<Digest> {
    Ok(d.digest().to_string().parse()?)
}

/// Imports the image at `path`, naming it `name` (or the name the source carries).
pub fn import(store: &Store, path: &Path, name: Option<&str>) -> Result<ImageRecord> {
    let name = name.map(|n| n.parse::<Reference>()).transpose()?;
    let meta = fs::metadata(path).map_err(|source| ImportError::Io { path: path.to_path_buf(), source })?;
    let _guard = store.shared_lock()?;
    let mut source: Box<dyn Source> =
        if meta.is_dir() { Box::new(Dir::open(path)?) } else { Box::new(Archive::read(store, path)?) };
    if source.small("oci-layout")?.is_some()
        && let Some(index) = source.small("index.json")?
    {
        return import_oci(store, source.as_mut(), &index, name);
    }
    if let Some(manifest) = source.small("manifest.json")? {
        return import_docker(store, source.as_mut(), &manifest, name);
    }
    Err(ImportError::UnknownFormat { path: path.to_path_buf() })
}

fn is_amd64_linux(d: &Descriptor) -> bool {
    match d.platform() {
        None => true,
        Some(p) => p.os().to_string() == "linux" && p.architecture().to_string() == "amd64",
    }
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn import_oci(store: &Store, src: &mut dyn Source, index_json: &[u8], name: Option<Reference>) -> Result<ImageRecord> {
    let path = src.path().to_path_buf();
    let index: ImageIndex = parse_json(&path, "index.json", index_json)?;
    // Top-level entries are images or nested indexes (one per platform, or one per name).
    let annotated = |d: &Descriptor| -> Option<String> {
        let a = d.annotations().as_ref()?;
        a.get(CONTAINERD_NAME).or_else(|| a.get(REF_NAME)).cloned()
    };
    let matches = |d: &Descriptor, want: &Reference| {
        annotated(d)
            .is_some_and(|n| n.parse::<Reference>().ok().as_ref() == Some(want) || Some(&n) == want.tag.as_ref())
    };
    let by_name: Vec<&Descriptor> = match &name {
        Some(want) => index.manifests().iter().filter(|d| matches(d, want)).collect(),
        None => Vec::new(),
    };
    let candidates: Vec<&Descriptor> =
        if by_name.is_empty() { index.manifests().iter().collect() } else { by_name.clone() };
    let platforms: Vec<&Descriptor> = candidates.iter().copied().filter(|d| is_amd64_linux(d)).collect();
    let top = match platforms.as_slice() {
        [] => {
            let found = candidates
                .iter()
                .filter_map(|d| d.platform().as_ref().map(|p| format!("{}/{}", p.os(), p.architecture())))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ImportError::NoPlatform { path, found });
        }
        [one] => *one,
        many => {
            let names: std::collections::BTreeSet<Option<String>> = many.iter().map(|d| annotated(d)).collect();
            match (&name, names.len() > 1 && by_name.is_empty()) {
                (None, true) => return Err(ImportError::Several { path, count: names.len() }),
                (Some(want), true) => return Err(ImportError::NoSuchName { path, name: want.to_string() }),
                _ => many[0],
            }
        }
    };
    let reference = match (name, annotated(top)) {
        (Some(n), _) => n,
        // A bare ref.name such as "latest" is a tag, as umoci and skopeo write it.
        (None, Some(n)) if n.contains('/') || n.contains(':') => n.parse()?,
        (None, Some(tag)) => format!("localhost/{}:{tag}", image_base_name(&path)).parse()?,
        (None, None) => return Err(ImportError::Unnamed { path }),
    };
    let mut staged = Staged::default();
    let manifest_digest = resolve_manifest(store, src, top, &mut staged)?;
    let manifest: ImageManifest = {
        let data = read_document(&store.staged_path(&staged, &manifest_digest))
            .map_err(|source| ImportError::Io { path: path.clone(), source })?;
        parse_json(&path, &blob_name(&manifest_digest), &data)?
    };
    let config = descriptor_digest(manifest.config())?;
    stage_missing(store, src, &mut staged, &config, Some(manifest.config().size()))?;
    for layer in manifest.layers() {
        stage_missing(store, src, &mut staged, &descriptor_digest(layer)?, Some(layer.size()))?;
    }
    Ok(store.commit_image(&reference, &manifest_digest, staged)?)
}

/// A name for an image whose layout says only a tag: the layout's file name.
fn image_base_name(path: &Path) -> String {
    let stem = path.file_name().and_then(|s| s.to_str()).unwrap_or("image");
    let stem = stem.split('.').next().unwrap_or(stem);
    let cleaned: String = stem
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() { "image".to_string() } else { trimmed.to_string() }
}

fn stage_missing(
    store: &Store,
    src: &mut dyn Source,
    staged: &mut Staged,
    d: &Digest,
    size: Option<u64>,
) -> Result<()> {
    if staged.contains(d) || store.has_blob(d) {
        return Ok(());
    }
    let (_, actual) = src.stage(store, &blob_name(d), Some(d), staged)?;
    match size {
        Some(size) if size != actual => {
            Err(StoreError::SizeMismatch { digest: d.clone(), expected: size, actual }.into())
        }
        _ => Ok(()),
    }
}

/// Follows nested indexes down to the linux/amd64 manifest, staging what it reads.
fn resolve_manifest(store: &Store, src: &mut dyn Source, desc: &Descriptor, staged: &mut Staged) -> Result<Digest> {
    let mut desc = desc.clone();
    for _ in 0..8 {
        let d = descriptor_digest(&desc)?;
        stage_missing(store, src, staged, &d, Some(desc.size()))?;
        let data = read_document(&store.staged_path(staged, &d))
            .map_err(|source| ImportError::Io { path: src.path().to_path_buf(), source })?;
        let probe: serde_json::Value = parse_json(src.path(), &blob_name(&d), &data)?;
        if probe.get("manifests").is_none() {
            return Ok(d);
        }
        let index: ImageIndex = parse_json(src.path(), &blob_name(&d), &data)?;
        let found: Vec<String> = index
            .manifests()
            .iter()
            .filter_map(|m| m.platform().as_ref().map(|p| format!("{}/{}", p.os(), p.architecture())))
            .collect();
        desc = index
            .manifests()
            .iter()
            .find(|m| m.platform().is_some() && is_amd64_linux(m))
            .or_else(|| index.manifests().iter().find(|m| is_amd64_linux(m)))
            .cloned()
            .ok_or_else(|| ImportError::NoPlatform { path: src.path().to_path_buf(), found: found.join(", ") })?;
    }
    Err(ImportError::BadLink { path: src.path().to_path_buf(), file: "index.json (indexes nested too deep)".into() })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker(
    store: &Store,
    src: &mut dyn Source,
    manifest_json: &[u8],
    name: Option<Reference>,
) -> Result<ImageRecord> {
    let path = src.path().to_path_buf();
    let entries: Vec<DockerManifestEntry> = parse_json(&path, "manifest.json", manifest_json)?;
    let entry = match (entries.len(), &name) {
        (0, _) => return Err(ImportError::Missing { path, file: "an image in manifest.json".into() }),
        (1, _) => &entries[0],
        (n, None) => return Err(ImportError::Several { path, count: n }),
        (_, Some(want)) => entries
            .iter()
            .find(|e| e.repo_tags.iter().flatten().any(|t| t.parse::<Reference>().ok().as_ref() == Some(want)))
            .ok_or_else(|| ImportError::NoSuchName { path: path.clone(), name: want.to_string() })?,
    };
    let reference = match name {
        Some(n) => n,
        None => entry
            .repo_tags
            .iter()
            .flatten()
            .next()
            .ok_or_else(|| ImportError::Unnamed { path: path.clone() })?
            .parse()?,
    };
    let mut staged = Staged::default();
    // Docker 25 names files by digest (blobs/sha256/...): check the names hold; the
    // classic form names them by ID, so the digest is whatever the content hashes to.
    let named_digest = |file: &str| -> Option<Digest> {
        let hex = file.strip_prefix("blobs/sha256/").or_else(|| file.strip_suffix(".json"))?;
        Digest::from_hex(hex).ok()
    };
    let (config, config_size) = src.stage(store, &entry.config, named_digest(&entry.config).as_ref(), &mut staged)?;
    let config_desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": config.to_string(),
        "size": config_size,
    });
    let mut layer_descs = Vec::new();
    for layer in &entry.layers {
        let (digest, size) = src.stage(store, layer, named_digest(layer).as_ref(), &mut staged)?;
        layer_descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest.to_string(),
            "size": size,
        }));
    }
    // A docker-archive carries no manifest; write the one a registry would serve.
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layer_descs,
    }))
    .expect("manifest serialises");
    let manifest_digest = Digest::of_bytes(&manifest);
    let mut w = store.blob_writer()?;
    io::Write::write_all(&mut w, &manifest).map_err(|source| ImportError::Io { path: store.tmp_dir(), source })?;
    staged.add(w.finish(&manifest_digest, None)?);
    Ok(store.commit_image(&reference, &manifest_digest, staged)?)
}
