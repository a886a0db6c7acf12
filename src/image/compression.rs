//! Layer compression, recognised by magic bytes rather than by media type: docker-archives
//! carry no media types, and registries are known to mislabel layers.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc;
use std::thread;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `raw` in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + Send + 'a>(raw: R) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let mut buf = BufReader::with_capacity(256 * 1024, raw);
    let kind = Compression::detect(buf.fill_buf()?);
    let reader: Box<dyn Read + Send> = match kind {
        Compression::None => Box::new(buf),
        // MultiGzDecoder: pigz and some registries write concatenated gzip members.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
    };
    Ok((kind, reader))
}

/// Runs `reader` on its own thread and hands its output over in large chunks, so that
/// decompression and file creation overlap on two cores, as `tar -xzf` overlaps gzip and tar.
pub struct Pipelined {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    worker: Option<thread::JoinHandle<()>>,
}

const CHUNK: usize = 1 << 20;

impl Pipelined {
    pub fn new<R: Read + Send + 'static>(mut reader: R) -> Pipelined {
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
        let worker = thread::Builder::new()
            .name("decompress".into())
            .spawn(move || {
                loop {
                    let mut chunk = vec![0u8; CHUNK];
                    let mut filled = 0;
                    let result = loop {
                        match reader.read(&mut chunk[filled..]) {
                            Ok(0) => break Ok(()),
                            Ok(n) => {
                                filled += n;
                                if filled == CHUNK {
                                    break Ok(());
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    chunk.truncate(filled);
                    let done = filled < CHUNK;
                    match result {
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                        Ok(()) => {
                            if filled > 0 && tx.send(Ok(chunk)).is_err() {
                                return;
                            }
                            if done {
                                return;
                            }
                        }
                    }
                }
            })
            .expect("spawning a thread");
        Pipelined { rx, current: Vec::new(), pos: 0, worker: Some(worker) }
    }
}

impl Read for Pipelined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        // Dropping the receiver first makes a blocked sender fail, so the join cannot hang.
        let (_, rx) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(kind: Compression, data: &[u8]) -> Vec<u8> {
        let packed = match kind {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
        };
        let (found, reader) = decompress(std::io::Cursor::new(packed)).unwrap();
        assert_eq!(found, kind);
        let mut out = Vec::new();
        Pipelined::new(reader).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn detects_and_decompresses_each_kind() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for kind in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(roundtrip(kind, &data), data, "{kind:?}");
        }
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&vec![7u8; 100_000]).unwrap();
        let mut packed = e.finish().unwrap();
        packed.truncate(packed.len() / 2);
        let (_, reader) = decompress(std::io::Cursor::new(packed)).unwrap();
        let mut out = Vec::new();
        assert!(Pipelined::new(reader).read_to_end(&mut out).is_err());
    }
}
