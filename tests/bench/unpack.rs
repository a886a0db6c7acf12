//! `make bench`: unpack one gzip layer of over 200 MB with nodectl (the store's own path:
//! decompress on a second thread, hash for the diff_id, confined unpack) and with GNU
//! `tar -xzf`, alternating, each timed until its files are on disk, and print both medians
//! and the ratio.
//!
//! Not a test: it asserts nothing about time. The layer is generated once, deterministically,
//! under target/bench/.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;

/// A deterministic pseudo-random stream (xorshift), for content gzip cannot shrink.
struct Noise(u64);
impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// A layer shaped like a real one: a tree of many small text files and some large binaries.
fn make_layer(path: &Path) {
    let tmp = path.with_extension("partial");
    let out = BufWriter::with_capacity(1 << 20, File::create(&tmp).unwrap());
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let header = |path: &str, size: u64, mode: u32, kind: tar::EntryType| {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(kind);
        h.set_cksum();
        h
    };
    let text: Vec<u8> =
        (0..6000u32).flat_map(|i| format!("line {i} of a configuration or source file\n").into_bytes()).collect();
    for d in 0..400 {
        let dir = format!("usr/share/pkg{d:03}");
        tar.append(&header(&dir, 0, 0o755, tar::EntryType::Directory), &[][..]).unwrap();
        for f in 0..50 {
            let len = 512 + (d * 50 + f) * 37 % 8192;
            tar.append(
                &header(&format!("{dir}/file{f:02}.txt"), len as u64, 0o644, tar::EntryType::Regular),
                &text[..len],
            )
            .unwrap();
        }
    }
    tar.append(&header("usr/lib/", 0, 0o755, tar::EntryType::Directory), &[][..]).unwrap();
    let mut blob = vec![0u8; 1_600_000];
    for i in 0..140 {
        noise.fill(&mut blob);
        tar.append(
            &header(&format!("usr/lib/lib{i:03}.so"), blob.len() as u64, 0o755, tar::EntryType::Regular),
            &blob[..],
        )
        .unwrap();
    }
    let gz = tar.into_inner().unwrap();
    gz.finish().unwrap().flush().unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// Both sides are timed until their files are on disk (the store ends an import with one
/// syncfs): without it the numbers swing with the kernel's writeback of the previous round.
fn sync_fs(dir: &Path) {
    let status = Command::new("sync").arg("-f").arg(dir).status().unwrap();
    assert!(status.success());
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fresh(dir: &Path) -> PathBuf {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    dir.to_path_buf()
}

fn main() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    fs::create_dir_all(&base).unwrap();
    let layer = base.join("layer-v1.tar.gz");
    if !layer.exists() {
        eprintln!("generating {} …", layer.display());
        make_layer(&layer);
    }
    let size = fs::metadata(&layer).unwrap().len();
    println!("layer: {} ({:.0} MB gzip)", layer.display(), size as f64 / 1e6);

    let (mut ours, mut tars) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let dest = fresh(&base.join("out-nodectl"));
        Command::new("sync").status().unwrap();
        let t = Instant::now();
        nodectl::image::store::unpack_blob(&layer, &dest).expect("nodectl unpack");
        sync_fs(&dest);
        ours.push(t.elapsed());

        let dest = fresh(&base.join("out-tar"));
        Command::new("sync").status().unwrap();
        let t = Instant::now();
        let status = Command::new("tar").arg("-xzf").arg(&layer).arg("-C").arg(&dest).status().unwrap();
        sync_fs(&dest);
        tars.push(t.elapsed());
        assert!(status.success(), "tar failed");
        eprintln!("round {}: nodectl {:?}, tar {:?}", round + 1, ours[round], tars[round]);
    }
    let _ = fs::remove_dir_all(base.join("out-nodectl"));
    let _ = fs::remove_dir_all(base.join("out-tar"));
    let (a, b) = (median(ours), median(tars));
    println!(
        "unpack, median of {ROUNDS}: nodectl {:.3} s, GNU tar -xzf {:.3} s, ratio nodectl/tar {:.2}",
        a.as_secs_f64(),
        b.as_secs_f64(),
        a.as_secs_f64() / b.as_secs_f64()
    );
}
