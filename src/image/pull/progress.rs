//! Download progress: bars on a terminal, one plain line per finished blob otherwise (logs
//! and CI output stay readable).

use std::io::Write;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::image::digest::Digest;

pub struct Progress {
    multi: Option<MultiProgress>,
}

pub struct Bar {
    bar: Option<ProgressBar>,
    label: String,
    size: u64,
}

impl Progress {
    pub fn new(bars: bool) -> Progress {
        Progress { multi: bars.then(MultiProgress::new) }
    }

    pub fn bar(&self, digest: &Digest, size: u64) -> Bar {
        let label = format!("sha256:{}", digest.short());
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(size));
            b.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            b.set_prefix(label.clone());
            b
        });
        Bar { bar, label, size }
    }
}

impl Bar {
    pub fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn finish(&self, ok: bool) {
        match &self.bar {
            Some(b) if ok => b.finish(),
            Some(b) => b.abandon(),
            // Not eprintln!, which panics on a closed stderr (`nodectl run … 2>&1 | head`).
            None if ok => {
                let _ = writeln!(std::io::stderr(), "pulled {} ({:.1} MB)", self.label, self.size as f64 / 1e6);
            }
            None => {
                let _ = writeln!(std::io::stderr(), "failed {}", self.label);
            }
        }
    }
}
