//! `nodectl image pull`: images from registries that speak the OCI distribution API.
//!
//! The manifest (through an index, to linux/amd64) is fetched and checked against the
//! digest asked for or the one the registry states; the config and the layers not yet in
//! the store are downloaded concurrently, streamed to files under the store's `tmp/` and
//! checked against their digests and sizes; then the store unpacks and publishes them
//! together ([`Store::commit_image`]), so a failed pull leaves the store as it was.
//!
//! Plain HTTP is used only for registries named insecure: by `--insecure`, by
//! `NODECTL_INSECURE_REGISTRIES` (comma-separated hosts), or by `<state root>/registries.json`
//! (`{"insecure": ["127.0.0.1:5000"]}`). Credentials: see [`auth`].

pub mod auth;
mod client;
mod progress;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::digest::{Digest, DigestError};
use super::reference::Reference;
use super::store::{ImageRecord, Staged, Store, StoreError};
use client::Client;

/// Layers downloaded at once, as docker and containerd default to.
const CONCURRENT_DOWNLOADS: usize = 3;

const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Manifests are small; anything bigger is not one (the distribution spec suggests 4 MiB).
const MAX_MANIFEST: usize = 4 << 20;

#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// Plain HTTP is allowed for this registry (loopback test registries).
    pub insecure: bool,
    /// Hosts always reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Files searched for credentials, in order (see [`auth`]).
    pub auth_files: Vec<PathBuf>,
    /// Draw progress bars (a terminal) rather than print a line per finished layer.
    pub progress_bars: bool,
}

impl PullOptions {
    /// The options a user of `--root` gets by default: insecure registries and
    /// credentials from the environment and the state root.
    pub fn from_environment(state_root: &Path) -> PullOptions {
        let mut insecure_registries: Vec<String> = std::env::var("NODECTL_INSECURE_REGISTRIES")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        #[derive(Deserialize)]
        struct Registries {
            #[serde(default)]
            insecure: Vec<String>,
        }
        let conf = state_root.join("registries.json");
        if let Ok(data) = std::fs::read(&conf) {
            match serde_json::from_slice::<Registries>(&data) {
                Ok(r) => insecure_registries.extend(r.insecure),
                Err(err) => tracing::warn!(file = %conf.display(), %err, "ignoring malformed registries.json"),
            }
        }
        PullOptions {
            insecure: false,
            insecure_registries,
            auth_files: auth::default_files(state_root),
            progress_bars: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{url}: {detail}")]
    Http { url: String, detail: String },
    #[error("{url}: the registry answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{registry}: access denied: {detail}")]
    Denied { registry: String, detail: String },
    #[error("manifest {url}: content hashes to {actual}, but {expected} was {why}")]
    ManifestDigest { url: String, expected: Digest, actual: Digest, why: &'static str },
    #[error("manifest {url}: {reason}")]
    BadManifest { url: String, reason: String },
    #[error("{url}: no linux/amd64 image in the index (found: {found})")]
    NoPlatform { url: String, found: String },
    #[error("blob {digest}: {source}")]
    Blob { digest: Digest, source: Box<PullError> },
    #[error("writing blob {digest}: {source}")]
    Write { digest: Digest, source: std::io::Error },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("starting the pull's event loop: {0}")]
    Runtime(std::io::Error),
}

/// An HTTP failure with its causes in one line, the URL said once, and a hint when a TLS
/// client met a plain-HTTP registry.
pub(crate) fn http_error(url: &str, err: reqwest::Error) -> PullError {
    let err = err.without_url();
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        let text = s.to_string();
        if !detail.contains(&text) {
            detail = format!("{detail}: {text}");
        }
        source = s.source();
    }
    if detail.contains("InvalidContentType") || detail.contains("corrupt message") {
        detail.push_str(" (the registry seems to speak plain HTTP: use --insecure if that is expected)");
    }
    PullError::Http { url: url.to_string(), detail }
}

/// Pulls `reference` into `store` and records it under its normalised name.
pub fn pull(store: &Store, reference: &Reference, opts: &PullOptions) -> Result<ImageRecord, PullError> {
    let _guard = store.shared_lock()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(PullError::Runtime)?;
    let (manifest_digest, staged) = runtime.block_on(fetch(store, reference, opts))?;
    drop(runtime);
    Ok(store.commit_image(reference, &manifest_digest, staged)?)
}

async fn fetch(store: &Store, reference: &Reference, opts: &PullOptions) -> Result<(Digest, Staged), PullError> {
    let insecure = opts.insecure || opts.insecure_registries.iter().any(|r| r == &reference.registry);
    let credentials = auth::lookup(&opts.auth_files, &reference.registry);
    let client = Arc::new(Client::new(&reference.registry, &reference.repository, insecure, credentials)?);
    let mut staged = Staged::default();

    let tag_or_digest = match (&reference.digest, &reference.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_string(),
    };
    let (mut body, mut digest) = fetch_manifest(&client, &tag_or_digest, reference.digest.as_ref()).await?;
    // Follow an index (or Docker manifest list) to its linux/amd64 manifest.
    for _ in 0..4 {
        let url = client.url("manifests", &digest.to_string());
        let probe: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| PullError::BadManifest { url: url.clone(), reason: e.to_string() })?;
        if probe.get("manifests").is_none() {
            break;
        }
        let index: ImageIndex = serde_json::from_slice(&body)
            .map_err(|e| PullError::BadManifest { url: url.clone(), reason: e.to_string() })?;
        let chosen = pick_platform(&index).ok_or_else(|| PullError::NoPlatform { url, found: platforms(&index) })?;
        let want: Digest = chosen.digest().to_string().parse()?;
        (body, digest) = fetch_manifest(&client, &want.to_string(), Some(&want)).await?;
    }
    let url = client.url("manifests", &digest.to_string());
    let manifest: ImageManifest = serde_json::from_slice(&body)
        .map_err(|e| PullError::BadManifest { url: url.clone(), reason: e.to_string() })?;
    if manifest.layers().iter().any(|l| l.urls().as_ref().is_some_and(|u| !u.is_empty())) {
        tracing::warn!(%url, "layer URLs (foreign layers) are ignored; layers come from the registry");
    }
    let mut w = store.blob_writer()?;
    w.write_all(&body).map_err(|source| PullError::Write { digest: digest.clone(), source })?;
    staged.add(w.finish(&digest, Some(body.len() as u64))?);

    let mut wanted: Vec<Descriptor> = vec![manifest.config().clone()];
    wanted.extend(manifest.layers().iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    wanted.retain(|d| seen.insert(d.digest().to_string()));
    let mut todo = Vec::new();
    for d in wanted {
        let digest: Digest = d.digest().to_string().parse()?;
        if !store.has_blob(&digest) {
            todo.push((digest, d.size()));
        }
    }
    let progress = progress::Progress::new(opts.progress_bars);
    let downloads = futures_util::stream::iter(todo.into_iter().map(|(digest, size)| {
        let client = client.clone();
        let bar = progress.bar(&digest, size);
        async move {
            let blob = download(store, &client, &digest, size, &bar)
                .await
                .map_err(|e| PullError::Blob { digest: digest.clone(), source: Box::new(e) });
            bar.finish(blob.is_ok());
            blob
        }
    }))
    .buffer_unordered(CONCURRENT_DOWNLOADS);
    futures_util::pin_mut!(downloads);
    while let Some(blob) = downloads.next().await {
        staged.add(blob?);
    }
    Ok((digest, staged))
}

/// Fetches a manifest and checks it: against `expected` when pulling by digest, else
/// against the Docker-Content-Digest the registry sent, if it sent one.
async fn fetch_manifest(
    client: &Client,
    reference: &str,
    expected: Option<&Digest>,
) -> Result<(Vec<u8>, Digest), PullError> {
    let url = client.url("manifests", reference);
    let resp = client.get(&url, &MANIFEST_TYPES).await?;
    let stated = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    if resp.content_length().is_some_and(|n| n as usize > MAX_MANIFEST) {
        return Err(PullError::BadManifest { url, reason: format!("larger than {MAX_MANIFEST} bytes") });
    }
    let body = resp.bytes().await.map_err(|source| http_error(&url, source))?;
    if body.len() > MAX_MANIFEST {
        return Err(PullError::BadManifest { url, reason: format!("larger than {MAX_MANIFEST} bytes") });
    }
    let actual = Digest::of_bytes(&body);
    let (expected, why) = match (expected, stated) {
        (Some(e), _) => (e.clone(), "asked for"),
        (None, Some(s)) => (s, "stated by the registry (Docker-Content-Digest)"),
        (None, None) => (actual.clone(), ""),
    };
    if actual != expected {
        return Err(PullError::ManifestDigest { url, expected, actual, why });
    }
    Ok((body.to_vec(), actual))
}

fn is_amd64_linux(d: &Descriptor) -> bool {
    d.platform().as_ref().is_some_and(|p| p.os().to_string() == "linux" && p.architecture().to_string() == "amd64")
}

fn pick_platform(index: &ImageIndex) -> Option<&Descriptor> {
    index.manifests().iter().find(|d| is_amd64_linux(d))
}

fn platforms(index: &ImageIndex) -> String {
    let found: Vec<String> = index
        .manifests()
        .iter()
        .map(|d| {
            d.platform()
                .as_ref()
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .unwrap_or_else(|| "unknown".into())
        })
        .collect();
    found.join(", ")
}

/// Streams one blob to a file under the store's tmp/, never holding it whole in memory.
async fn download(
    store: &Store,
    client: &Client,
    digest: &Digest,
    size: u64,
    bar: &progress::Bar,
) -> Result<super::store::StagedBlob, PullError> {
    let url = client.url("blobs", &digest.to_string());
    let resp = client.get(&url, &[]).await?;
    let mut writer = store.blob_writer()?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|source| http_error(&url, source))?;
        // A registry that sends more than the descriptor's size is wrong; stop reading.
        let total = writer.written() + chunk.len() as u64;
        if total > size {
            return Err(StoreError::SizeMismatch { digest: digest.clone(), expected: size, actual: total }.into());
        }
        writer.write_all(&chunk).map_err(|source| PullError::Write { digest: digest.clone(), source })?;
        bar.advance(chunk.len() as u64);
    }
    Ok(writer.finish(digest, Some(size))?)
}
