//! SPDY/3.1 framing, as `kubectl port-forward` speaks it (moby/spdystream on its side):
//! frames to bytes and back, and the header blocks inside SYN_STREAM, SYN_REPLY and
//! HEADERS, zlib-compressed with SPDY/3's dictionary. Nothing here knows about streams'
//! states or port forwarding; that is [`super::portforward`]'s.
//!
//! A frame is an 8-byte head and a body. A control frame's head is the control bit, the
//! version (3), its type, 8 bits of flags and a 24-bit length; a data frame's is a 31-bit
//! stream id, flags and length. Each direction of a connection has one zlib stream for all
//! its header blocks, which every block ends with a sync flush, so that the other side can
//! read each block whole as it comes; a [`Decoder`] and an [`Encoder`] hold one direction's
//! zlib state each, and so belong to one connection.
//!
//! Bounds: a frame longer than [`MAX_FRAME`] or a header block that inflates past
//! [`MAX_HEADER_BLOCK`] is an error before anything of it is kept; kubectl's frames are at
//! most 32 KiB of data and a few dozen bytes of headers. Control frames of a type SPDY/3
//! does not define are returned as [`Frame::Unknown`] for the caller to ignore, as the
//! protocol asks; a version other than 3 is an error.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The largest frame body read or written.
pub const MAX_FRAME: usize = 1 << 20;
/// The largest header block, inflated.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

pub const VERSION: u16 = 3;
/// FLAG_FIN on SYN_STREAM, SYN_REPLY, HEADERS and data frames: the sender's half is done.
pub const FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here.
pub const PROTOCOL_ERROR: u32 = 1;
pub const INVALID_STREAM: u32 = 2;
pub const REFUSED_STREAM: u32 = 3;
pub const CANCEL: u32 = 5;
/// GOAWAY status codes.
pub const GOAWAY_OK: u32 = 0;
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// Name/value pairs; a value with several parts keeps them NUL-separated, as on the wire.
pub type Headers = Vec<(String, String)>;

/// The first value of header `name`, names compared as SPDY has them (lowercase).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame of a type SPDY/3 does not define (to be ignored).
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("SPDY version {0} is not spoken here (only 3)")]
    Version(u16),
    #[error("a {what} frame of {len} bytes is larger than the {max} bytes allowed")]
    TooLarge { what: &'static str, len: usize, max: usize },
    #[error("a {what} frame of {len} bytes is too short")]
    Short { what: &'static str, len: usize },
    #[error("stream id 0 in a {0} frame")]
    ZeroStream(&'static str),
    #[error("a header block: {0}")]
    HeaderBlock(String),
    #[error("compressing a header block: {0}")]
    Compress(String),
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One connection's inbound side: frames from bytes, header blocks through its one zlib
/// stream.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder { inflate: Decompress::new(true) }
    }

    /// The next whole frame at the start of `buf` and how many bytes it took; `None` if
    /// `buf` does not hold a whole frame yet (after its head was checked: a head that
    /// announces too much is an error at once, not a wait).
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, Error> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let flags = buf[4];
        let len = (be32(&buf[4..8]) & 0x00ff_ffff) as usize;
        let control = buf[0] & 0x80 != 0;
        let what = if control { "control" } else { "data" };
        if len > MAX_FRAME {
            return Err(Error::TooLarge { what, len, max: MAX_FRAME });
        }
        if control {
            let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
            if version != VERSION {
                return Err(Error::Version(version));
            }
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let body = &buf[8..8 + len];
        let frame = if control {
            self.control(u16::from_be_bytes([buf[2], buf[3]]), flags, body)?
        } else {
            let stream = be32(&buf[0..4]) & 0x7fff_ffff;
            if stream == 0 {
                return Err(Error::ZeroStream("data"));
            }
            Frame::Data { stream, flags, data: body.to_vec() }
        };
        Ok(Some((frame, 8 + len)))
    }

    fn control(&mut self, kind: u16, flags: u8, body: &[u8]) -> Result<Frame, Error> {
        let need = |what: &'static str, n: usize| {
            if body.len() < n { Err(Error::Short { what, len: body.len() }) } else { Ok(()) }
        };
        let stream_of = |what: &'static str| {
            let id = be32(body) & 0x7fff_ffff;
            if id == 0 { Err(Error::ZeroStream(what)) } else { Ok(id) }
        };
        Ok(match kind {
            SYN_STREAM => {
                need("SYN_STREAM", 10)?;
                let stream = stream_of("SYN_STREAM")?;
                let associated = be32(&body[4..8]) & 0x7fff_ffff;
                let priority = body[8] >> 5;
                let headers = self.inflate_block(&body[10..])?;
                Frame::SynStream { stream, associated, priority, flags, headers }
            }
            SYN_REPLY => {
                need("SYN_REPLY", 4)?;
                let stream = stream_of("SYN_REPLY")?;
                Frame::SynReply { stream, flags, headers: self.inflate_block(&body[4..])? }
            }
            HEADERS => {
                need("HEADERS", 4)?;
                let stream = stream_of("HEADERS")?;
                Frame::Headers { stream, flags, headers: self.inflate_block(&body[4..])? }
            }
            RST_STREAM => {
                need("RST_STREAM", 8)?;
                Frame::RstStream { stream: stream_of("RST_STREAM")?, status: be32(&body[4..8]) }
            }
            SETTINGS => {
                need("SETTINGS", 4)?;
                let n = be32(body) as usize;
                if n > (body.len() - 4) / 8 {
                    return Err(Error::Short { what: "SETTINGS", len: body.len() });
                }
                let entries = body[4..4 + n * 8]
                    .chunks_exact(8)
                    .map(|e| Setting { flags: e[0], id: be32(e) & 0x00ff_ffff, value: be32(&e[4..8]) })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need("PING", 4)?;
                Frame::Ping { id: be32(body) }
            }
            GOAWAY => {
                need("GOAWAY", 8)?;
                Frame::GoAway { last_good: be32(body) & 0x7fff_ffff, status: be32(&body[4..8]) }
            }
            WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8)?;
                Frame::WindowUpdate { stream: be32(body) & 0x7fff_ffff, delta: be32(&body[4..8]) & 0x7fff_ffff }
            }
            kind => Frame::Unknown { kind },
        })
    }

    /// Inflates one header block (this connection's inbound zlib stream goes on) and
    /// parses it.
    fn inflate_block(&mut self, mut input: &[u8]) -> Result<Headers, Error> {
        let bad = |m: String| Error::HeaderBlock(m);
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while !input.is_empty() {
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let status = match self.inflate.decompress(input, &mut chunk, FlushDecompress::Sync) {
                Ok(s) => s,
                Err(e) => match e.needs_dictionary() {
                    Some(id) if id == dictionary_id() => {
                        self.inflate.set_dictionary(&dictionary()).map_err(|e| bad(e.to_string()))?;
                        Status::Ok
                    }
                    Some(id) => return Err(bad(format!("it asks for dictionary {id:#010x}, not SPDY/3's"))),
                    None => return Err(bad(format!("not a zlib stream: {e}"))),
                },
            };
            let used = (self.inflate.total_in() - before_in) as usize;
            let made = (self.inflate.total_out() - before_out) as usize;
            input = &input[used..];
            if out.len() + made > MAX_HEADER_BLOCK {
                return Err(Error::TooLarge { what: "header block", len: out.len() + made, max: MAX_HEADER_BLOCK });
            }
            out.extend_from_slice(&chunk[..made]);
            if status == Status::StreamEnd && !input.is_empty() {
                return Err(bad("bytes after the end of the zlib stream".into()));
            }
            if used == 0 && made == 0 && status != Status::Ok {
                return Err(bad("the zlib stream does not go on".into()));
            }
        }
        // What the sync flush left inside the inflater (a block larger than our chunk).
        loop {
            let before_out = self.inflate.total_out();
            self.inflate.decompress(&[], &mut chunk, FlushDecompress::Sync).map_err(|e| bad(e.to_string()))?;
            let made = (self.inflate.total_out() - before_out) as usize;
            if made == 0 {
                break;
            }
            if out.len() + made > MAX_HEADER_BLOCK {
                return Err(Error::TooLarge { what: "header block", len: out.len() + made, max: MAX_HEADER_BLOCK });
            }
            out.extend_from_slice(&chunk[..made]);
        }
        parse_block(&out)
    }
}

/// One connection's outbound side: frames to bytes, header blocks through its one zlib
/// stream.
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        let mut deflate = Compress::new(Compression::default(), true);
        // Set before the first byte: the zlib header then names the dictionary (FDICT).
        // A fresh stream always takes one; should it not, the blocks go without.
        let _ = deflate.set_dictionary(&dictionary());
        Encoder { deflate }
    }

    fn deflate_block(&mut self, headers: &Headers) -> Result<Vec<u8>, Error> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            plain.extend_from_slice(&(k.len() as u32).to_be_bytes());
            plain.extend_from_slice(k.as_bytes());
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            out.reserve(256);
            let before_in = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Compress(e.to_string()))?;
            input = &input[(self.deflate.total_in() - before_in) as usize..];
            // Done when all went in and the flush did not fill the space it had.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Appends `frame`'s bytes to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), Error> {
        let control = |out: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]| -> Result<(), Error> {
            if body.len() > MAX_FRAME {
                return Err(Error::TooLarge { what: "control", len: body.len(), max: MAX_FRAME });
            }
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&((u32::from(flags) << 24) | body.len() as u32).to_be_bytes());
            out.extend_from_slice(body);
            Ok(())
        };
        let with_stream = |stream: u32, rest: &[u8]| {
            let mut b = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
            b.extend_from_slice(rest);
            b
        };
        match frame {
            Frame::SynStream { stream, associated, priority, flags, headers } => {
                let block = self.deflate_block(headers)?;
                let mut b = with_stream(*stream, &(associated & 0x7fff_ffff).to_be_bytes());
                b.extend_from_slice(&[(priority & 7) << 5, 0]);
                b.extend_from_slice(&block);
                control(out, SYN_STREAM, *flags, &b)
            }
            Frame::SynReply { stream, flags, headers } => {
                let block = self.deflate_block(headers)?;
                control(out, SYN_REPLY, *flags, &with_stream(*stream, &block))
            }
            Frame::Headers { stream, flags, headers } => {
                let block = self.deflate_block(headers)?;
                control(out, HEADERS, *flags, &with_stream(*stream, &block))
            }
            Frame::RstStream { stream, status } => {
                control(out, RST_STREAM, 0, &with_stream(*stream, &status.to_be_bytes()))
            }
            Frame::Settings { flags, entries } => {
                let mut b = (entries.len() as u32).to_be_bytes().to_vec();
                for e in entries {
                    b.extend_from_slice(&((u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff)).to_be_bytes());
                    b.extend_from_slice(&e.value.to_be_bytes());
                }
                control(out, SETTINGS, *flags, &b)
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                control(out, GOAWAY, 0, &with_stream(*last_good, &status.to_be_bytes()))
            }
            Frame::WindowUpdate { stream, delta } => {
                control(out, WINDOW_UPDATE, 0, &with_stream(*stream, &(delta & 0x7fff_ffff).to_be_bytes()))
            }
            Frame::Data { stream, flags, data } => {
                if data.len() > MAX_FRAME {
                    return Err(Error::TooLarge { what: "data", len: data.len(), max: MAX_FRAME });
                }
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&((u32::from(*flags) << 24) | data.len() as u32).to_be_bytes());
                out.extend_from_slice(data);
                Ok(())
            }
            Frame::Unknown { kind } => control(out, *kind, 0, &[]),
        }
    }
}

/// A header block, inflated: a count, then each name and value with its 32-bit length.
fn parse_block(b: &[u8]) -> Result<Headers, Error> {
    let bad = |m: &str| Error::HeaderBlock(m.to_string());
    let mut rest = b;
    let mut take = |n: usize| -> Result<&[u8], Error> {
        if rest.len() < n {
            return Err(bad("it ends inside a length or a string"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = be32(take(4)?) as usize;
    // Each pair takes at least 8 bytes: a count larger than that cannot be honest.
    if count > b.len() / 8 {
        return Err(bad("it counts more pairs than it holds"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8(take(n)?.to_vec()).map_err(|_| bad("a name is not UTF-8"))?;
        if name.is_empty() {
            return Err(bad("an empty name"));
        }
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8(take(n)?.to_vec()).map_err(|_| bad("a value is not UTF-8"))?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// The words SPDY/3's header dictionary begins with, each written with a 32-bit length.
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// …and the text it ends with, as it is.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// SPDY/3's zlib dictionary for header blocks (draft 3, section 2.6.10.1).
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1424);
    for w in DICTIONARY_WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    d
}

/// The dictionary's Adler-32, as a zlib header that uses it names it.
pub const DICTIONARY_ADLER32: u32 = 0xe3c6_a7c2;

fn dictionary_id() -> u32 {
    DICTIONARY_ADLER32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    /// What kubectl 1.32 sent first on a SPDY/3.1 port-forward connection when a local
    /// connection came in: the error stream's SYN_STREAM, then a PING.
    const KUBECTL: &str = "800300010000003e0000000100000000000078f9e3c6a7c202253a060606ce2248fc6482d22da30138e59514a526e6420b17d65450d0430aea22709eb030b03000000000ffff800300060000000400000001";

    fn strs(h: &[(&str, &str)]) -> Headers {
        h.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(adler32(&d), DICTIONARY_ADLER32);
    }

    #[test]
    fn what_kubectl_sends_is_read() {
        let bytes = hex(KUBECTL);
        let mut c = Decoder::new();
        let (frame, used) = c.decode(&bytes).unwrap().unwrap();
        let Frame::SynStream { stream, associated, priority, flags, mut headers } = frame else { panic!("{frame:?}") };
        assert_eq!((stream, associated, priority, flags), (1, 0, 0, 0));
        headers.sort();
        assert_eq!(headers, strs(&[("port", "8080"), ("requestid", "0"), ("streamtype", "error")]));
        assert_eq!(header(&headers, "Port"), Some("8080"));
        let (frame, rest) = c.decode(&bytes[used..]).unwrap().unwrap();
        assert_eq!(frame, Frame::Ping { id: 1 });
        assert_eq!(used + rest, bytes.len());
        // Any prefix is a wait, not an error.
        let mut c = Decoder::new();
        for n in 0..used {
            assert_eq!(c.decode(&bytes[..n]).unwrap(), None, "{n}");
        }
    }

    #[test]
    fn frames_round_trip_with_one_zlib_stream_per_direction() {
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: strs(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream: 3,
                associated: 0,
                priority: 2,
                flags: FIN,
                headers: strs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply { stream: 1, flags: 0, headers: vec![] },
            Frame::Headers { stream: 3, flags: FIN, headers: strs(&[("x", "a\0b")]) },
            Frame::Data { stream: 3, flags: 0, data: b"GET / HTTP/1.0\r\n\r\n".to_vec() },
            Frame::Data { stream: 3, flags: FIN, data: vec![] },
            Frame::RstStream { stream: 3, status: CANCEL },
            Frame::Settings { flags: 0, entries: vec![Setting { flags: 1, id: 7, value: 65536 }] },
            Frame::Ping { id: 2 },
            Frame::GoAway { last_good: 3, status: GOAWAY_OK },
            Frame::WindowUpdate { stream: 1, delta: 4096 },
        ];
        let (mut tx, mut rx) = (Encoder::new(), Decoder::new());
        let mut wire = Vec::new();
        for f in &frames {
            tx.encode(f, &mut wire).unwrap();
        }
        let mut read = Vec::new();
        let mut at = 0;
        while let Some((f, n)) = rx.decode(&wire[at..]).unwrap() {
            read.push(f);
            at += n;
        }
        assert_eq!(at, wire.len());
        assert_eq!(read, frames);
        // The second block leans on the first: a decoder that missed the first cannot read it.
        let (_, first) = Decoder::new().decode(&wire).unwrap().unwrap();
        assert!(Decoder::new().decode(&wire[first..]).is_err());
    }

    #[test]
    fn a_large_header_block_round_trips() {
        let big = "v".repeat(20_000);
        let frame = Frame::SynReply { stream: 5, flags: 0, headers: strs(&[("big", &big), ("small", "s")]) };
        let mut wire = Vec::new();
        Encoder::new().encode(&frame, &mut wire).unwrap();
        assert_eq!(Decoder::new().decode(&wire).unwrap().unwrap().0, frame);
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        let mut c = Decoder::new();
        // A head that announces 16 MiB: refused before waiting for it.
        let e = c.decode(&[0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        let e = c.decode(&[0x00, 0x00, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        // SPDY/2.
        assert_eq!(c.decode(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]).unwrap_err(), Error::Version(2));
        // Data for stream 0.
        assert_eq!(c.decode(&[0, 0, 0, 0, 0, 0, 0, 1, 9]).unwrap_err(), Error::ZeroStream("data"));
        // Frames too short for their type.
        for kind in [1u8, 2, 3, 4, 6, 7, 8, 9] {
            let e = Decoder::new().decode(&[0x80, 0x03, 0x00, kind, 0, 0, 0, 2, 0, 1]).unwrap_err();
            assert!(matches!(e, Error::Short { .. }), "{kind}: {e}");
        }
        // A SETTINGS frame that counts more entries than it has.
        let e = c.decode(&[0x80, 0x03, 0x00, 0x04, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(matches!(e, Error::Short { .. }), "{e}");
        // A header block that is not zlib.
        let e = Decoder::new()
            .decode(&[0x80, 0x03, 0x00, 0x02, 0, 0, 0, 8, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef])
            .unwrap_err();
        assert!(matches!(e, Error::HeaderBlock(_)), "{e}");
        // A zlib stream with another dictionary.
        let mut other = Compress::new(Compression::default(), true);
        other.set_dictionary(b"not spdy's dictionary").unwrap();
        let mut z = Vec::with_capacity(64);
        other.compress_vec(&[0, 0, 0, 0], &mut z, FlushCompress::Sync).unwrap();
        let mut f = vec![0x80, 0x03, 0x00, 0x02, 0, 0, 0, (4 + z.len()) as u8, 0, 0, 0, 1];
        f.extend_from_slice(&z);
        let e = Decoder::new().decode(&f).unwrap_err();
        assert!(e.to_string().contains("not SPDY/3's"), "{e}");
        // A block that inflates past the bound (a zip bomb).
        let mut tx = Encoder::new();
        let mut plain = 1u32.to_be_bytes().to_vec();
        plain.extend_from_slice(&1u32.to_be_bytes());
        plain.push(b'x');
        plain.extend_from_slice(&(200_000u32).to_be_bytes());
        plain.extend(std::iter::repeat_n(b'a', 200_000));
        let mut z = Vec::with_capacity(4096);
        loop {
            let before = tx.deflate.total_in() as usize;
            tx.deflate.compress_vec(&plain[before..], &mut z, FlushCompress::Sync).unwrap();
            if tx.deflate.total_in() as usize == plain.len() && z.len() < z.capacity() {
                break;
            }
            z.reserve(4096);
        }
        let mut f = vec![0x80, 0x03, 0x00, 0x02];
        f.extend_from_slice(&((4 + z.len()) as u32).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1]);
        f.extend_from_slice(&z);
        let e = Decoder::new().decode(&f).unwrap_err();
        assert!(matches!(e, Error::TooLarge { what: "header block", .. }), "{e}");
        // Header blocks that lie about their lengths.
        for block in [
            vec![0, 0, 0, 9],
            vec![0, 0, 0, 1, 0, 0, 0, 200, b'a'],
            vec![0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            let e = parse_block(&block).unwrap_err();
            assert!(matches!(e, Error::HeaderBlock(_)), "{block:?}: {e}");
        }
        // An unknown control type is handed on to be ignored.
        let (f, n) = c.decode(&[0x80, 0x03, 0x00, 0x0a, 0, 0, 0, 1, 7]).unwrap().unwrap();
        assert_eq!((f, n), (Frame::Unknown { kind: 10 }, 9));
        // Random bytes: errors or waits, never a panic.
        let mut seed = 0x2545_f491_u32;
        for _ in 0..2000 {
            let mut b = vec![0u8; 40];
            for x in b.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *x = seed as u8;
            }
            b[1] = 3;
            b[5] = 0;
            let _ = Decoder::new().decode(&b);
        }
    }
}
