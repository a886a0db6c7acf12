//! A small synchronous netlink transport shared by the rtnetlink (links, addresses,
//! routes) and nf_tables (hostPort rules) code.
//!
//! Synchronous on purpose: callers are the single-threaded `nodectl run` path and
//! short-lived helper threads inside a pod's network namespace, where an async
//! runtime would only add threads and latency. Messages are built by
//! netlink-packet-route (rtnetlink) or by `nft.rs` (nf_tables) and sent as bytes.

use std::io;

use netlink_sys::Socket as RawSocket;

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_APPEND: u16 = 0x800;

const HDR_LEN: usize = 16;
// Dump replies come in datagrams of up to 32 KiB (the kernel's cap); twice that
// leaves room and keeps `recv` from truncating.
const RECV_BUF: usize = 64 * 1024;
/// What one acknowledgement costs in the receive queue (its skb's truesize, ~800 bytes on
/// x86-64), rounded up: all of a batch's acknowledgements queue before we read any.
const ACK_TRUESIZE: usize = 1024;
/// The socket buffers' default (net.core.{w,r}mem_default), below which we never go.
const DEFAULT_BUF: usize = 212_992;

/// One received netlink message: its type, flags, sequence number and payload.
pub(crate) struct Reply {
    pub ty: u16,
    pub seq: u32,
    pub payload: Vec<u8>,
}

pub(crate) struct Socket {
    sock: RawSocket,
    seq: u32,
    buf: Vec<u8>,
    /// The send and receive buffer sizes asked for so far.
    sndbuf: usize,
    rcvbuf: usize,
}

impl Socket {
    /// Opens a netlink socket of `protocol` in the calling thread's network namespace;
    /// the socket stays bound to that namespace for its whole life.
    pub fn open(protocol: isize) -> io::Result<Socket> {
        let mut sock = RawSocket::new(protocol)?;
        sock.bind_auto()?;
        // Without the kernel's strict checking a dump ignores filter attributes,
        // which is harmless for us (we filter again), so a failure is not fatal.
        let _ = sock.set_netlink_get_strict_chk(true);
        // An error's acknowledgement carries only the header of the message it refuses,
        // not its whole payload: one refused message of a large nf_tables batch would
        // otherwise come back larger than any receive buffer, truncated and unreadable.
        let _ = sock.set_cap_ack(true);
        // The kernel answers at once; a reply that never comes (a bug of ours in a
        // batch) must end in an error, not hang a pod's start.
        let timeout = nix::sys::time::TimeVal::new(10, 0);
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(io::Error::from)?;
        Ok(Socket { sock, seq: 1, buf: Vec::with_capacity(RECV_BUF), sndbuf: DEFAULT_BUF, rcvbuf: DEFAULT_BUF })
    }

    /// Makes room for a message of `len` bytes that `acks` acknowledgements answer. A
    /// netlink message larger than the send buffer fails with EMSGSIZE, and
    /// acknowledgements that do not fit the receive queue are dropped (ENOBUFS): an
    /// nf_tables batch of a few thousand changes needs more than the defaults, so the
    /// buffers grow as nft's do (SO_SNDBUFFORCE and SO_RCVBUFFORCE, which CAP_NET_ADMIN
    /// allows past net.core.*mem_max; without it, the plain options up to those limits).
    fn fit(&mut self, len: usize, acks: usize) -> io::Result<()> {
        use nix::sys::socket::{setsockopt, sockopt};
        let want_snd = len + RECV_BUF;
        if want_snd > self.sndbuf {
            setsockopt(&self.sock, sockopt::SndBufForce, &want_snd)
                .or_else(|_| setsockopt(&self.sock, sockopt::SndBuf, &want_snd))
                .map_err(io::Error::from)?;
            self.sndbuf = want_snd;
        }
        let want_rcv = acks * ACK_TRUESIZE + RECV_BUF;
        if want_rcv > self.rcvbuf {
            setsockopt(&self.sock, sockopt::RcvBufForce, &want_rcv)
                .or_else(|_| setsockopt(&self.sock, sockopt::RcvBuf, &want_rcv))
                .map_err(io::Error::from)?;
            self.rcvbuf = want_rcv;
        }
        Ok(())
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Appends one netlink message (header + payload) to `out`, returning its sequence.
    pub fn push(&mut self, out: &mut Vec<u8>, ty: u16, flags: u16, payload: &[u8]) -> u32 {
        let seq = self.next_seq();
        push_msg(out, ty, flags, seq, payload);
        seq
    }

    /// Sends a request and waits for its acknowledgement.
    pub fn request(&mut self, ty: u16, flags: u16, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(HDR_LEN + payload.len());
        let seq = self.push(&mut out, ty, flags | NLM_F_REQUEST | NLM_F_ACK, payload);
        self.send_and_wait(&out, &[seq])
    }

    /// Sends a request and returns what the kernel answered before its
    /// acknowledgement (a GET's object).
    pub fn call(&mut self, ty: u16, flags: u16, payload: &[u8]) -> io::Result<Vec<Reply>> {
        let mut out = Vec::with_capacity(HDR_LEN + payload.len());
        let seq = self.push(&mut out, ty, flags | NLM_F_REQUEST | NLM_F_ACK, payload);
        self.sock.send(&out, 0)?;
        let mut replies = Vec::new();
        loop {
            for reply in self.recv_batch()? {
                if reply.seq != seq {
                    continue;
                }
                if reply.ty == NLMSG_ERROR {
                    let code = error_code(&reply.payload)?;
                    return if code == 0 { Ok(replies) } else { Err(io::Error::from_raw_os_error(-code)) };
                }
                replies.push(reply);
            }
        }
    }

    /// Sends prepared messages and waits for one acknowledgement per sequence in
    /// `acks`; the first error wins but every answer is read, so the socket stays in
    /// step for the next request.
    pub fn send_and_wait(&mut self, out: &[u8], acks: &[u32]) -> io::Result<()> {
        self.fit(out.len(), acks.len())?;
        self.sock.send(out, 0)?;
        let mut pending: Vec<u32> = acks.to_vec();
        let mut first_err = None;
        while !pending.is_empty() {
            for reply in self.recv_batch()? {
                if reply.ty != NLMSG_ERROR {
                    continue;
                }
                let code = error_code(&reply.payload)?;
                let Some(pos) = pending.iter().position(|s| *s == reply.seq) else {
                    // An error about a message that asked for no acknowledgement (a
                    // batch's begin or end): the rest will not be answered.
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    continue;
                };
                pending.swap_remove(pos);
                if code != 0 && first_err.is_none() {
                    first_err = Some(io::Error::from_raw_os_error(-code));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Sends a dump request and returns the payloads of every message of the dump.
    pub fn dump(&mut self, ty: u16, payload: &[u8]) -> io::Result<Vec<Reply>> {
        let mut out = Vec::with_capacity(HDR_LEN + payload.len());
        let seq = self.push(&mut out, ty, NLM_F_REQUEST | NLM_F_DUMP, payload);
        self.sock.send(&out, 0)?;
        let mut replies = Vec::new();
        loop {
            for reply in self.recv_batch()? {
                if reply.seq != seq {
                    continue;
                }
                match reply.ty {
                    NLMSG_DONE => return Ok(replies),
                    NLMSG_ERROR => {
                        let code = error_code(&reply.payload)?;
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        return Ok(replies);
                    }
                    _ => replies.push(reply),
                }
            }
        }
    }

    fn recv_batch(&mut self) -> io::Result<Vec<Reply>> {
        self.buf.clear();
        let n = loop {
            match self.sock.recv(&mut self.buf, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        parse(&self.buf[..n])
    }
}

pub(crate) fn push_msg(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, payload: &[u8]) {
    let len = (HDR_LEN + payload.len()) as u32;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(payload);
    align(out);
}

pub(crate) fn align(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed netlink reply: {what}"))
}

fn parse(mut data: &[u8]) -> io::Result<Vec<Reply>> {
    let mut out = Vec::new();
    while data.len() >= HDR_LEN {
        let len = u32::from_ne_bytes(data[0..4].try_into().map_err(|_| bad("header"))?) as usize;
        if len < HDR_LEN || len > data.len() {
            return Err(bad("length"));
        }
        let ty = u16::from_ne_bytes([data[4], data[5]]);
        let seq = u32::from_ne_bytes(data[8..12].try_into().map_err(|_| bad("header"))?);
        out.push(Reply { ty, seq, payload: data[HDR_LEN..len].to_vec() });
        let next = (len + 3) & !3;
        data = &data[next.min(data.len())..];
    }
    Ok(out)
}

fn error_code(payload: &[u8]) -> io::Result<i32> {
    let b: [u8; 4] = payload.get(0..4).and_then(|b| b.try_into().ok()).ok_or_else(|| bad("error"))?;
    Ok(i32::from_ne_bytes(b))
}

/// Netlink attribute helpers for hand-built messages (nf_tables has no typed crate
/// that covers the expressions we need, see `nft.rs`).
#[derive(Clone)]
pub(crate) struct Attrs {
    pub buf: Vec<u8>,
}

pub(crate) const NLA_F_NESTED: u16 = 0x8000;

impl Attrs {
    pub fn new() -> Attrs {
        Attrs { buf: Vec::with_capacity(256) }
    }
    pub fn bytes(&mut self, ty: u16, value: &[u8]) -> &mut Self {
        // A longer value cannot be said in netlink's 16-bit length; callers split what
        // can grow (nft.rs's element lists). Writing it truncated would hand the kernel
        // a different message than the one we meant.
        let len = u16::try_from(4 + value.len()).expect("a netlink attribute of at most 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value);
        align(&mut self.buf);
        self
    }
    pub fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.bytes(ty, &v)
    }
    pub fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }
    pub fn be64(&mut self, ty: u16, v: u64) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }
    pub fn nested(&mut self, ty: u16, inner: Attrs) -> &mut Self {
        self.bytes(ty | NLA_F_NESTED, &inner.buf)
    }
}

/// Iterates over the attributes in `data` as (type without flags, value).
pub(crate) fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            return None;
        }
        let value = &data[4..len];
        let next = ((len + 3) & !3).min(data.len());
        data = &data[next..];
        Some((ty, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding() {
        let mut a = Attrs::new();
        a.str(1, "abc").be32(2, 7).bytes(3, &[1, 2, 3, 4, 5]);
        let got: Vec<_> = attrs(&a.buf).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (1, &b"abc\0"[..]));
        assert_eq!(got[1], (2, &7u32.to_be_bytes()[..]));
        assert_eq!(got[2], (3, &[1u8, 2, 3, 4, 5][..]));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        push_msg(&mut out, 3, 0, 9, &[0; 4]);
        assert!(parse(&out[..10]).unwrap().is_empty());
        out[0] = 200;
        assert!(parse(&out).is_err());
        assert!(attrs(&[8, 0, 1]).next().is_none());
    }
}
