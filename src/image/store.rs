//! The image store under `<state root>/images`:
//!
//! ```text
//! blobs/sha256/<hex>   every manifest, config and compressed layer, by digest
//! layers/<chainid>/    each layer unpacked once, overlay-style whiteouts, keyed by ChainID
//! rootfs/<id>/         a container's overlay: layers.json, upper/, work/, merged/
//! index.json           reference -> image record
//! used/<id hex>        its mtime: when a pod last resolved the image (for image gc)
//! tmp/                 staging; everything enters the store by rename(2) from here
//! lock                 shared while writing or mounting, exclusive while collecting garbage
//! index.lock           exclusive while index.json is read, changed and replaced
//! ```
//!
//! Blobs and layers are published by an atomic rename, so a reader never sees half of
//! one, two importers of the same image each do the work and one rename wins, and a killed
//! import leaves only files under `tmp/`, which the next garbage collection removes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};

use super::compression::{self, Pipelined};
use super::digest::{self, Digest, Hashing};
use super::reference::Reference;
use super::unpack::{self, UnpackOptions, Whiteouts};
use crate::sys::lock::FileLock;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("blob {expected}: content hashes to {actual}; the data is corrupt or was tampered with")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest}: expected {expected} bytes, found {actual}")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    #[error("{what} {digest} is not valid JSON of its kind: {source}")]
    BadJson { what: &'static str, digest: Digest, source: serde_json::Error },
    #[error(
        "layer {index} ({digest}): uncompressed content hashes to {actual}, but the image config lists diff_id {expected}"
    )]
    DiffIdMismatch { index: usize, digest: Digest, expected: Digest, actual: Digest },
    #[error("image config lists {diff_ids} diff_ids but the manifest has {layers} layers")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error("unpacking layer {digest}: {source}")]
    Unpack { digest: Digest, source: unpack::UnpackError },
    #[error("reading layer {digest}: {source}")]
    LayerRead { digest: Digest, source: io::Error },
    #[error("no image matches {0:?} (see `nodectl image ls`)")]
    NotFound(String),
    #[error("{0:?} matches more than one image; give a longer ID or the full reference")]
    Ambiguous(String),
    #[error("{0}")]
    Digest(#[from] digest::DigestError),
    #[error("index {path}: {source}")]
    Index { path: PathBuf, source: serde_json::Error },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { op, path, source }
}

/// What the store knows of one tagged image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub name: String,
    pub manifest: Digest,
    pub config: Digest,
    /// Compressed layer blobs, bottom first.
    pub layers: Vec<Digest>,
    /// ChainIDs of the unpacked layers, bottom first.
    pub chain: Vec<Digest>,
    /// Sum of the manifest's, config's and layers' blob sizes.
    pub size: u64,
    /// The config's `created`, if it has one.
    #[serde(default)]
    pub created: Option<String>,
}

impl ImageRecord {
    /// The image ID, as docker shows it: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Index {
    images: BTreeMap<String, ImageRecord>,
}

pub struct Store {
    root: PathBuf,
}

/// A blob being written: hashed as it goes, published by [`BlobWriter::commit`].
pub struct BlobWriter {
    tmp: tempfile::NamedTempFile,
    hashing: Hashing<io::BufWriter<File>>,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hashing.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.hashing.flush()
    }
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.hashing.count()
    }

    /// Checks the content against `expected` (and `size`, if given) and makes it durable,
    /// still under `tmp/`. On any mismatch the file is removed.
    pub fn finish(self, expected: &Digest, size: Option<u64>) -> Result<StagedBlob> {
        let (buf, actual, count) = self.hashing.finish();
        if &actual != expected {
            return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
        }
        if let Some(size) = size
            && size != count
        {
            return Err(StoreError::SizeMismatch { digest: expected.clone(), expected: size, actual: count });
        }
        let path = self.tmp.path().to_path_buf();
        let file =
            buf.into_inner().map_err(|e| StoreError::Io { op: "write", path: path.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io_err("fsync", &path))?;
        Ok(StagedBlob { digest: expected.clone(), size: count, tmp: self.tmp.into_temp_path() })
    }

    /// Finishes with whatever digest the content has (docker-archive layers are named by
    /// path, not by digest).
    pub fn finish_any(self) -> Result<StagedBlob> {
        let (buf, actual, count) = self.hashing.finish();
        let path = self.tmp.path().to_path_buf();
        let file =
            buf.into_inner().map_err(|e| StoreError::Io { op: "write", path: path.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io_err("fsync", &path))?;
        Ok(StagedBlob { digest: actual, size: count, tmp: self.tmp.into_temp_path() })
    }
}

/// A verified blob under `tmp/`, not yet in the store; removed if dropped unpublished.
pub struct StagedBlob {
    pub digest: Digest,
    pub size: u64,
    tmp: tempfile::TempPath,
}

impl StagedBlob {
    pub fn path(&self) -> &Path {
        &self.tmp
    }
}

/// Blobs verified and waiting to be published together with the image that uses them.
#[derive(Default)]
pub struct Staged {
    blobs: BTreeMap<Digest, StagedBlob>,
}

impl Staged {
    /// Adds a verified blob; the same content staged twice is kept once.
    pub fn add(&mut self, blob: StagedBlob) {
        self.blobs.entry(blob.digest.clone()).or_insert(blob);
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.blobs.contains_key(d)
    }
}

impl Store {
    /// Opens (creating if needed) the store under `state_root/images`.
    pub fn open(state_root: &Path) -> Result<Store> {
        let root = state_root.join("images");
        for dir in ["blobs/sha256", "layers", "rootfs", "tmp", "l", "used"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(io_err("create directory", &p))?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn layer_path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("layers").join(chain_id.hex())
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Held by everything that writes into the store or uses its layers, so that garbage
    /// collection (which takes it exclusively) never removes what is being put in.
    pub fn shared_lock(&self) -> Result<FileLock> {
        let p = self.root.join("lock");
        FileLock::shared(&p).map_err(io_err("lock", p))
    }

    fn exclusive_lock(&self) -> Result<FileLock> {
        let p = self.root.join("lock");
        FileLock::exclusive(&p).map_err(io_err("lock", p))
    }

    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.tmp_dir();
        let tmp = tempfile::Builder::new().prefix("blob-").tempfile_in(&dir).map_err(io_err("create file in", &dir))?;
        let file = tmp.reopen().map_err(io_err("open", tmp.path()))?;
        Ok(BlobWriter { tmp, hashing: Hashing::new(io::BufWriter::with_capacity(1 << 20, file)) })
    }

    fn publish_blob(&self, blob: StagedBlob) -> Result<()> {
        let dest = self.blob_path(&blob.digest);
        blob.tmp.persist(&dest).map_err(|e| StoreError::Io { op: "rename", path: dest, source: e.error })?;
        Ok(())
    }

    /// Where blob `d` can be read: staged, or already in the store.
    pub fn staged_path(&self, staged: &Staged, d: &Digest) -> PathBuf {
        self.blob_source(staged, d)
    }

    fn blob_source(&self, staged: &Staged, d: &Digest) -> PathBuf {
        match staged.blobs.get(d) {
            Some(b) => b.tmp.to_path_buf(),
            None => self.blob_path(d),
        }
    }

    /// Reads a small blob (manifest, config, index) whole, checking its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        self.read_blob_from(&self.blob_path(d), d)
    }

    fn read_blob_from(&self, path: &Path, d: &Digest) -> Result<Vec<u8>> {
        let path = path.to_path_buf();
        let data = match read_document(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::MissingBlob(d.clone())),
            Err(e) => return Err(io_err("read", path)(e)),
        };
        let actual = Digest::of_bytes(&data);
        if &actual != d {
            return Err(StoreError::DigestMismatch { expected: d.clone(), actual });
        }
        Ok(data)
    }

    fn manifest_in(&self, staged: &Staged, d: &Digest) -> Result<ImageManifest> {
        let data = self.read_blob_from(&self.blob_source(staged, d), d)?;
        serde_json::from_slice(&data).map_err(|source| StoreError::BadJson {
            what: "manifest",
            digest: d.clone(),
            source,
        })
    }

    fn config_in(&self, staged: &Staged, d: &Digest) -> Result<ImageConfiguration> {
        let data = self.read_blob_from(&self.blob_source(staged, d), d)?;
        serde_json::from_slice(&data).map_err(|source| StoreError::BadJson {
            what: "image config",
            digest: d.clone(),
            source,
        })
    }

    /// Records the image `manifest_digest` under `name`: every blob it needs must be staged
    /// or already stored. Layers not yet unpacked are unpacked and checked against their
    /// diff_ids first; only when all of that succeeded are the staged blobs and new layers
    /// published and the index changed, so a failure leaves the store as it was.
    /// The caller holds the shared lock.
    pub fn commit_image(&self, name: &Reference, manifest_digest: &Digest, staged: Staged) -> Result<ImageRecord> {
        let manifest = self.manifest_in(&staged, manifest_digest)?;
        let config_digest: Digest = manifest.config().digest().to_string().parse()?;
        let config = self.config_in(&staged, &config_digest)?;
        let diff_ids = config.rootfs().diff_ids().iter().map(|d| d.parse::<Digest>()).collect::<Result<Vec<_>, _>>()?;
        let layers = manifest
            .layers()
            .iter()
            .map(|l| l.digest().to_string().parse::<Digest>())
            .collect::<Result<Vec<_>, _>>()?;
        if layers.len() != diff_ids.len() {
            return Err(StoreError::LayerCount { layers: layers.len(), diff_ids: diff_ids.len() });
        }
        let mut size = 0;
        for d in layers.iter().chain([manifest_digest, &config_digest]) {
            let p = self.blob_source(&staged, d);
            size += fs::metadata(&p).map_err(|_| StoreError::MissingBlob(d.clone()))?.len();
        }
        let chain = digest::chain_ids(&diff_ids);
        let mut unpacked = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            if !self.layer_path(&chain[i]).is_dir() && !unpacked.iter().any(|(c, _)| c == &chain[i]) {
                let dir = self.unpack_layer(i, &self.blob_source(&staged, layer), layer, &diff_ids[i])?;
                unpacked.push((chain[i].clone(), dir));
            }
        }
        // Publish: blobs first, then layers, one syncfs, then the index that points at them.
        for (_, blob) in staged.blobs {
            self.publish_blob(blob)?;
        }
        for (chain_id, dir) in unpacked {
            self.publish_layer(&chain_id, dir)?;
        }
        self.sync()?;
        let record = ImageRecord {
            name: name.to_string(),
            manifest: manifest_digest.clone(),
            config: config_digest,
            layers,
            chain,
            size,
            created: config.created().clone(),
        };
        self.update_index(|index| {
            index.images.insert(record.name.clone(), record.clone());
        })?;
        Ok(record)
    }

    fn unpack_layer(&self, index: usize, src: &Path, blob: &Digest, diff_id: &Digest) -> Result<tempfile::TempDir> {
        let staging = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(self.tmp_dir())
            .map_err(io_err("create directory in", self.tmp_dir()))?;
        let actual = unpack_blob(src, staging.path()).map_err(|e| match e {
            LayerError::Open(source) if source.kind() == io::ErrorKind::NotFound => {
                StoreError::MissingBlob(blob.clone())
            }
            LayerError::Open(source) => io_err("open", src)(source),
            LayerError::Read(source) => StoreError::LayerRead { digest: blob.clone(), source },
            LayerError::Unpack(source) => StoreError::Unpack { digest: blob.clone(), source },
        })?;
        if &actual != diff_id {
            return Err(StoreError::DiffIdMismatch { index, digest: blob.clone(), expected: diff_id.clone(), actual });
        }
        Ok(staging)
    }

    fn publish_layer(&self, chain_id: &Digest, staging: tempfile::TempDir) -> Result<()> {
        let dest = self.layer_path(chain_id);
        let staged = staging.keep();
        match fs::rename(&staged, &dest) {
            Ok(()) => Ok(()),
            // Another process unpacked the same layer first; its copy is as good as ours.
            Err(_) if dest.is_dir() => {
                let _ = remove_tree(&staged);
                Ok(())
            }
            Err(e) => {
                let _ = remove_tree(&staged);
                Err(io_err("rename", dest)(e))
            }
        }
    }

    fn sync(&self) -> Result<()> {
        let f = File::open(&self.root).map_err(io_err("open", &self.root))?;
        // SAFETY: syncfs takes a valid open fd, which `f` holds for the call's duration.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(io_err("syncfs", &self.root)(io::Error::last_os_error()));
        }
        Ok(())
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|source| StoreError::Index { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io_err("read", path)(e)),
        }
    }

    fn update_index<T>(&self, change: impl FnOnce(&mut Index) -> T) -> Result<T> {
        let lock_path = self.root.join("index.lock");
        let _guard = FileLock::exclusive(&lock_path).map_err(io_err("lock", lock_path))?;
        let mut index = self.read_index()?;
        let out = change(&mut index);
        let data = serde_json::to_vec_pretty(&index).expect("index serialises");
        let path = self.index_path();
        let mut tmp =
            tempfile::NamedTempFile::new_in(self.tmp_dir()).map_err(io_err("create file in", self.tmp_dir()))?;
        tmp.write_all(&data).map_err(io_err("write", tmp.path().to_path_buf()))?;
        tmp.as_file().sync_all().map_err(io_err("fsync", tmp.path().to_path_buf()))?;
        tmp.persist(&path).map_err(|e| StoreError::Io { op: "rename", path: path.clone(), source: e.error })?;
        Ok(out)
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.read_index()?.images.into_values().collect())
    }

    /// Finds an image by reference (normalised), or by a prefix of its ID of at least 4 digits.
    pub fn resolve(&self, query: &str) -> Result<ImageRecord> {
        let index = self.read_index()?;
        if let Ok(reference) = query.parse::<Reference>()
            && let Some(rec) = index.images.get(&reference.to_string())
        {
            return Ok(rec.clone());
        }
        let id = query.strip_prefix("sha256:").unwrap_or(query);
        if id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let found: BTreeMap<&Digest, &ImageRecord> =
                index.images.values().filter(|r| r.config.hex().starts_with(id)).map(|r| (&r.config, r)).collect();
            match found.len() {
                0 => {}
                1 => return Ok(found.into_values().next().unwrap().clone()),
                _ => return Err(StoreError::Ambiguous(query.to_string())),
            }
        }
        Err(StoreError::NotFound(query.to_string()))
    }

    /// Removes a tag, or every tag of an image given by ID, then collects garbage.
    pub fn remove(&self, query: &str) -> Result<Vec<String>> {
        let record = self.resolve(query)?;
        let by_name = query.parse::<Reference>().map(|r| r.to_string() == record.name).unwrap_or(false);
        let removed = self.update_index(|index| {
            let names: Vec<String> = if by_name {
                vec![record.name.clone()]
            } else {
                index.images.values().filter(|r| r.config == record.config).map(|r| r.name.clone()).collect()
            };
            for n in &names {
                index.images.remove(n);
            }
            names
        })?;
        self.gc()?;
        Ok(removed)
    }

    fn used_path(&self, id: &Digest) -> PathBuf {
        self.root.join("used").join(id.hex())
    }

    /// Records that a pod uses image `id` now (its `used/` file's mtime), so that image
    /// garbage collection removes the least recently used first.
    pub fn mark_used(&self, id: &Digest) -> Result<()> {
        let p = self.used_path(id);
        let f = File::options().create(true).truncate(false).write(true).open(&p).map_err(io_err("open", &p))?;
        f.set_modified(SystemTime::now()).map_err(io_err("set the mtime of", p))
    }

    /// When a pod last used image `id`, if one ever did.
    pub fn last_used(&self, id: &Digest) -> Option<SystemTime> {
        fs::metadata(self.used_path(id)).and_then(|m| m.modified()).ok()
    }

    /// When the image was imported or pulled: its manifest blob was written then.
    pub fn imported_at(&self, image: &ImageRecord) -> Option<SystemTime> {
        fs::metadata(self.blob_path(&image.manifest)).and_then(|m| m.modified()).ok()
    }

    /// Bytes a blob takes on disk (0 if it is not there).
    pub fn blob_disk_bytes(&self, d: &Digest) -> u64 {
        disk_bytes(&self.blob_path(d))
    }

    /// Bytes an unpacked layer takes on disk (0 if it is not there).
    pub fn layer_disk_bytes(&self, chain_id: &Digest) -> u64 {
        disk_bytes(&self.layer_path(chain_id))
    }

    /// Removes the images `choose` names (by reference), then collects garbage, all under
    /// the exclusive lock: nothing can resolve (see `node::images`), import or mount an
    /// image meanwhile, so what `choose` saw in use is all that is in use. `choose` gets
    /// the index and the chain IDs that prepared container root filesystems hold.
    pub fn remove_chosen(
        &self,
        choose: impl FnOnce(&[ImageRecord], &BTreeSet<Digest>) -> Vec<String>,
    ) -> Result<Vec<ImageRecord>> {
        let _guard = self.exclusive_lock()?;
        let images = self.list()?;
        let names = choose(&images, &self.layers_in_use()?);
        let removed = if names.is_empty() {
            Vec::new()
        } else {
            self.update_index(|index| names.iter().filter_map(|n| index.images.remove(n)).collect())?
        };
        self.gc_locked()?;
        Ok(removed)
    }

    /// Chain IDs held by prepared container root filesystems.
    fn layers_in_use(&self) -> Result<BTreeSet<Digest>> {
        let mut used = BTreeSet::new();
        let dir = self.root.join("rootfs");
        for entry in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
            let entry = entry.map_err(io_err("read directory", &dir))?;
            let record = entry.path().join("layers.json");
            if let Ok(data) = fs::read(&record)
                && let Ok(chain) = serde_json::from_slice::<Vec<Digest>>(&data)
            {
                used.extend(chain);
            }
        }
        Ok(used)
    }

    /// Removes blobs and layers no image or container uses, and whatever killed
    /// processes left in `tmp/`. Waits for running imports to finish first.
    pub fn gc(&self) -> Result<()> {
        let _guard = self.exclusive_lock()?;
        self.gc_locked()
    }

    fn gc_locked(&self) -> Result<()> {
        let index = self.read_index()?;
        let mut blobs = BTreeSet::new();
        let mut chains = self.layers_in_use()?;
        for r in index.images.values() {
            blobs.insert(r.manifest.clone());
            blobs.insert(r.config.clone());
            blobs.extend(r.layers.iter().cloned());
            chains.extend(r.chain.iter().cloned());
        }
        let tmp = self.tmp_dir();
        for entry in read_dir_names(&tmp)? {
            remove_tree(&tmp.join(entry)).map_err(io_err("remove", &tmp))?;
        }
        let blob_dir = self.root.join("blobs/sha256");
        for name in read_dir_names(&blob_dir)? {
            if Digest::from_hex(&name).map(|d| !blobs.contains(&d)).unwrap_or(true) {
                let p = blob_dir.join(&name);
                fs::remove_file(&p).map_err(io_err("remove", p))?;
            }
        }
        let layer_dir = self.root.join("layers");
        for name in read_dir_names(&layer_dir)? {
            if Digest::from_hex(&name).map(|d| !chains.contains(&d)).unwrap_or(true) {
                // Rename first: a half-removed layer must never look like a whole one.
                let doomed = tmp.join(format!("gc-{name}"));
                let p = layer_dir.join(&name);
                fs::rename(&p, &doomed).map_err(io_err("rename", p))?;
                remove_tree(&doomed).map_err(io_err("remove", doomed))?;
            }
        }
        // Last-use marks of images no tag names any more.
        let used = self.root.join("used");
        let ids: BTreeSet<&Digest> = index.images.values().map(|r| &r.config).collect();
        for name in read_dir_names(&used)? {
            if Digest::from_hex(&name).map(|d| !ids.contains(&d)).unwrap_or(true) {
                let p = used.join(&name);
                fs::remove_file(&p).map_err(io_err("remove", p))?;
            }
        }
        // Short names for legacy overlay mounts (see rootfs.rs) whose layer is gone.
        let links = self.root.join("l");
        for name in read_dir_names(&links)? {
            let p = links.join(&name);
            if !p.is_dir() {
                fs::remove_file(&p).map_err(io_err("remove", p))?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("opening the layer: {0}")]
    Open(io::Error),
    #[error("reading the layer: {0}")]
    Read(io::Error),
    #[error(transparent)]
    Unpack(unpack::UnpackError),
}

/// Unpacks a layer blob (plain, gzip or zstd) into `target` with overlay-style whiteouts,
/// decompressing on a second thread, and returns the diff_id: the digest of the whole
/// uncompressed stream, tar's end padding included.
pub fn unpack_blob(src: &Path, target: &Path) -> std::result::Result<Digest, LayerError> {
    let file = File::open(src).map_err(LayerError::Open)?;
    let (_, reader) = compression::decompress(file).map_err(LayerError::Read)?;
    let mut hashing = Hashing::new(Pipelined::new(reader));
    let opts = UnpackOptions { whiteouts: Whiteouts::Overlay, max_bytes: max_layer_bytes() };
    unpack::unpack(&mut hashing, target, &opts).map_err(LayerError::Unpack)?;
    io::copy(&mut hashing, &mut io::sink()).map_err(LayerError::Read)?;
    Ok(hashing.finish().1)
}

/// The most one layer may unpack to: NODECTL_MAX_LAYER_SIZE (bytes, or a quantity such as
/// `64Gi`), else the default. A value that does not parse is ignored with a warning.
pub fn max_layer_bytes() -> u64 {
    match std::env::var("NODECTL_MAX_LAYER_SIZE") {
        Ok(v) if !v.is_empty() => {
            crate::model::quantity::memory_bytes(&v).ok().and_then(|b| u64::try_from(b).ok()).unwrap_or_else(|| {
                tracing::warn!(value = %v, "NODECTL_MAX_LAYER_SIZE is not a size; using the default");
                unpack::DEFAULT_MAX_LAYER_BYTES
            })
        }
        _ => unpack::DEFAULT_MAX_LAYER_BYTES,
    }
}

/// JSON documents of an image (index, manifest, config) are read whole; this bounds them, so
/// a hostile archive cannot make us allocate gigabytes.
pub const MAX_DOCUMENT: u64 = 16 << 20;

/// Reads a JSON document, refusing one over [`MAX_DOCUMENT`].
pub fn read_document(path: &Path) -> io::Result<Vec<u8>> {
    read_bounded(File::open(path)?)
}

/// Reads an open JSON document, refusing one over [`MAX_DOCUMENT`].
pub fn read_bounded(file: File) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    file.take(MAX_DOCUMENT + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_DOCUMENT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the {} MiB limit for an image's JSON documents", MAX_DOCUMENT >> 20),
        ));
    }
    Ok(data)
}

/// Bytes a file or tree takes on disk (allocated blocks; a file hardlinked twice in it
/// counts once). Unreadable parts count as 0: this sizes what removal would free.
pub fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(path: &Path, seen: &mut BTreeSet<(u64, u64)>) -> u64 {
        let Ok(m) = fs::symlink_metadata(path) else { return 0 };
        let mut total =
            if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) { 0 } else { m.blocks() * 512 };
        if m.is_dir() {
            for entry in fs::read_dir(path).into_iter().flatten().flatten() {
                total += walk(&entry.path(), seen);
            }
        }
        total
    }
    walk(path, &mut BTreeSet::new())
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        out.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// Removes a file or a whole tree; immutable or append-only flags a hostile layer could
/// not have set (we never restore them), so plain removal suffices.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_writer_refuses_wrong_content_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let expected = Digest::of_bytes(b"right");
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"wrong").unwrap();
        assert!(matches!(w.finish(&expected, None), Err(StoreError::DigestMismatch { .. })));
        assert!(!store.has_blob(&expected));
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"right").unwrap();
        store.publish_blob(w.finish(&expected, Some(5)).unwrap()).unwrap();
        assert_eq!(store.read_blob(&expected).unwrap(), b"right");
    }
}
