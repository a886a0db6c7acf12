//! nf_tables over netlink, in-process: just the messages and expressions hostPorts
//! need (tables, nat chains, rules with meta/payload/cmp/bitwise/fib/ct/immediate/
//! nat/masq, rule dumps and deletes by handle), sent as one atomic batch per change;
//! and what the Service proxy needs on top (regular chains, named verdict maps with
//! concatenated keys and their elements, lookups into them, `numgen random mod N vmap`
//! through an anonymous map, jump/goto/return, reject, meta mark, ct state), and for
//! session affinity, sets of addresses whose elements time out, filled by the packets
//! themselves (`update @set { ip saddr }`, a dynset) and looked up (`ip saddr @set`).
//!
//! Why our own encoder rather than a crate or Debian's `nft`:
//! - `rustables` is GPL-3.0 (it would put the whole binary under the GPL) and has no
//!   `fib` expression, which `fib daddr type local` (the addrtype match CNI portmap
//!   uses) needs;
//! - `nftnl` binds the C library libnftnl and also lacks `fib`;
//! - `netlink-packet-netfilter` (same family as netlink-packet-route) has tables,
//!   chains and rules but none of nat, masq, fib or ct;
//! - the `nft` CLI costs 5-10 ms per call (a process and a full cache load), more than
//!   the whole set-up of a pod's network is allowed to take.
//!
//! The wire format is small and stable (include/uapi/linux/netfilter/nf_tables.h):
//! u32 attributes are big-endian, register data is raw bytes as the kernel compares
//! them (packet fields in network order, meta/ct/fib results in host order).

use std::io;
use std::net::Ipv4Addr;

use super::netlink::{Attrs, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, Socket, attrs};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

pub(crate) const NFPROTO_IPV4: u8 = 2;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_TIMEOUT: u16 = 11;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
/// Writable from the packet path (nft's `dynamic`).
const NFT_SET_EVAL: u32 = 0x20;
/// The data type of a verdict map's values (NFT_DATA_VERDICT).
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;

// nftnl's user-data TLV type for a rule comment: `nft list` shows it as `comment "…"`.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

pub(crate) const NF_INET_PRE_ROUTING: u32 = 0;
pub(crate) const NF_INET_LOCAL_OUT: u32 = 3;
pub(crate) const NF_INET_POST_ROUTING: u32 = 4;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

// Registers: the verdict register is 0, the four 16-byte data registers 1..4.
pub(crate) const REG1: u32 = 1;
pub(crate) const REG2: u32 = 2;

fn msg_type(m: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | m
}

fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

/// A set of changes the kernel applies all or nothing.
pub(crate) struct Batch {
    out: Vec<u8>,
    acks: Vec<u32>,
}

impl Batch {
    pub fn new(sock: &mut Socket) -> Batch {
        let mut out = Vec::with_capacity(1024);
        sock.push(&mut out, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, &nfgenmsg(0, NFNL_SUBSYS_NFTABLES));
        Batch { out, acks: Vec::new() }
    }

    fn add(&mut self, sock: &mut Socket, msg: u16, flags: u16, a: &Attrs) {
        let mut payload = Vec::with_capacity(4 + a.buf.len());
        payload.extend_from_slice(&nfgenmsg(NFPROTO_IPV4, 0));
        payload.extend_from_slice(&a.buf);
        let seq = sock.push(&mut self.out, msg_type(msg), NLM_F_REQUEST | NLM_F_ACK | flags, &payload);
        self.acks.push(seq);
    }

    /// `exclusive`: fail with EEXIST if the table exists, which makes creating a
    /// table with its chains and fixed rules a race-free, one-time step.
    pub fn new_table(&mut self, sock: &mut Socket, name: &str, exclusive: bool) {
        let mut a = Attrs::new();
        a.str(NFTA_TABLE_NAME, name);
        let excl = if exclusive { NLM_F_EXCL } else { 0 };
        self.add(sock, NFT_MSG_NEWTABLE, NLM_F_CREATE | excl, &a);
    }

    pub fn del_table(&mut self, sock: &mut Socket, name: &str) {
        let mut a = Attrs::new();
        a.str(NFTA_TABLE_NAME, name);
        self.add(sock, NFT_MSG_DELTABLE, 0, &a);
    }

    /// A base chain of type nat on `hook` at `priority`, policy accept.
    pub fn new_nat_chain(&mut self, sock: &mut Socket, table: &str, name: &str, hook: u32, priority: i32) {
        self.new_base_chain(sock, table, name, hook, priority, "nat");
    }

    /// A base chain of type filter on `hook` at `priority`, policy accept.
    pub fn new_filter_chain(&mut self, sock: &mut Socket, table: &str, name: &str, hook: u32, priority: i32) {
        self.new_base_chain(sock, table, name, hook, priority, "filter");
    }

    fn new_base_chain(&mut self, sock: &mut Socket, table: &str, name: &str, hook: u32, priority: i32, kind: &str) {
        let mut h = Attrs::new();
        h.be32(NFTA_HOOK_HOOKNUM, hook).be32(NFTA_HOOK_PRIORITY, priority as u32);
        let mut a = Attrs::new();
        a.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, name).nested(NFTA_CHAIN_HOOK, h);
        a.be32(NFTA_CHAIN_POLICY, NF_ACCEPT).str(NFTA_CHAIN_TYPE, kind);
        self.add(sock, NFT_MSG_NEWCHAIN, NLM_F_CREATE, &a);
    }

    /// Appends a rule to `chain`, tagged with `comment`.
    pub fn add_rule(&mut self, sock: &mut Socket, table: &str, chain: &str, rule: &Rule, comment: &str) {
        let mut list = Attrs::new();
        for (name, data) in &rule.exprs {
            let mut e = Attrs::new();
            e.str(NFTA_EXPR_NAME, name);
            if !data.buf.is_empty() {
                e.bytes(NFTA_EXPR_DATA | super::netlink::NLA_F_NESTED, &data.buf);
            }
            list.nested(NFTA_LIST_ELEM, e);
        }
        // The anonymous maps the rule looks up go first, in the same batch; the kernel
        // names them and frees them with the rule.
        for m in &rule.anon {
            let mut a = Attrs::new();
            a.str(NFTA_SET_TABLE, table).str(NFTA_SET_NAME, ANON_MAP);
            a.be32(NFTA_SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP);
            a.be32(NFTA_SET_KEY_TYPE, TYPE_INTEGER).be32(NFTA_SET_KEY_LEN, 4);
            a.be32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT).be32(NFTA_SET_ID, m.id);
            self.add(sock, NFT_MSG_NEWSET, NLM_F_CREATE, &a);
            let mut a = Attrs::new();
            a.str(NFTA_SET_ELEM_LIST_TABLE, table).str(NFTA_SET_ELEM_LIST_SET, ANON_MAP);
            a.be32(NFTA_SET_ELEM_LIST_SET_ID, m.id);
            for list in elem_lists(&m.elems, true) {
                let mut a = a.clone();
                a.nested(NFTA_SET_ELEM_LIST_ELEMENTS, list);
                self.add(sock, NFT_MSG_NEWSETELEM, NLM_F_CREATE, &a);
            }
        }
        let mut a = Attrs::new();
        a.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, chain).nested(NFTA_RULE_EXPRESSIONS, list);
        a.bytes(NFTA_RULE_USERDATA, &comment_udata(comment));
        self.add(sock, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &a);
    }

    /// A regular chain (no hook), reached only by jump/goto; no error if it exists.
    pub fn new_chain(&mut self, sock: &mut Socket, table: &str, name: &str) {
        let mut a = Attrs::new();
        a.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, name);
        self.add(sock, NFT_MSG_NEWCHAIN, NLM_F_CREATE, &a);
    }

    /// Deletes an empty chain nothing refers to.
    pub fn del_chain(&mut self, sock: &mut Socket, table: &str, name: &str) {
        let mut a = Attrs::new();
        a.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, name);
        self.add(sock, NFT_MSG_DELCHAIN, 0, &a);
    }

    /// Deletes every rule of one chain (a DELRULE without a handle).
    pub fn flush_chain(&mut self, sock: &mut Socket, table: &str, chain: &str) {
        let mut a = Attrs::new();
        a.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, chain);
        self.add(sock, NFT_MSG_DELRULE, 0, &a);
    }

    /// A named verdict map; `key_type` is nft's type id (for `nft list`), `key_len`
    /// the key's length in bytes, each concatenated field padded to 4.
    pub fn new_verdict_map(&mut self, sock: &mut Socket, table: &str, name: &str, key_type: u32, key_len: u32) {
        let mut a = Attrs::new();
        a.str(NFTA_SET_TABLE, table).str(NFTA_SET_NAME, name).be32(NFTA_SET_FLAGS, NFT_SET_MAP);
        a.be32(NFTA_SET_KEY_TYPE, key_type).be32(NFTA_SET_KEY_LEN, key_len);
        a.be32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
        a.be32(NFTA_SET_ID, next_set_id());
        self.add(sock, NFT_MSG_NEWSET, NLM_F_CREATE, &a);
    }

    /// A set of IPv4 addresses whose elements expire `timeout_secs` after they were last
    /// added or refreshed from the packet path (`flags dynamic,timeout`).
    pub fn new_timeout_addr_set(&mut self, sock: &mut Socket, table: &str, name: &str, timeout_secs: u32) {
        let mut a = Attrs::new();
        a.str(NFTA_SET_TABLE, table).str(NFTA_SET_NAME, name);
        a.be32(NFTA_SET_FLAGS, NFT_SET_TIMEOUT | NFT_SET_EVAL);
        a.be32(NFTA_SET_KEY_TYPE, TYPE_IPADDR).be32(NFTA_SET_KEY_LEN, 4);
        a.be32(NFTA_SET_ID, next_set_id());
        a.be64(NFTA_SET_TIMEOUT, u64::from(timeout_secs) * 1000);
        self.add(sock, NFT_MSG_NEWSET, NLM_F_CREATE, &a);
    }

    /// Deletes a named set nothing refers to any more.
    pub fn del_set(&mut self, sock: &mut Socket, table: &str, name: &str) {
        let mut a = Attrs::new();
        a.str(NFTA_SET_TABLE, table).str(NFTA_SET_NAME, name);
        self.add(sock, NFT_MSG_DELSET, 0, &a);
    }

    /// Adds (or, `delete`, removes) elements `key : verdict` of a named verdict map.
    pub fn map_elems(&mut self, sock: &mut Socket, table: &str, map: &str, elems: &[(Vec<u8>, Verdict)], delete: bool) {
        if elems.is_empty() {
            return;
        }
        let (msg, flags) = if delete { (NFT_MSG_DELSETELEM, 0) } else { (NFT_MSG_NEWSETELEM, NLM_F_CREATE) };
        for list in elem_lists(elems, !delete) {
            let mut a = Attrs::new();
            a.str(NFTA_SET_ELEM_LIST_TABLE, table).str(NFTA_SET_ELEM_LIST_SET, map);
            a.nested(NFTA_SET_ELEM_LIST_ELEMENTS, list);
            self.add(sock, msg, flags, &a);
        }
    }

    pub fn del_rule(&mut self, sock: &mut Socket, table: &str, chain: &str, handle: u64) {
        let mut a = Attrs::new();
        a.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, chain).be64(NFTA_RULE_HANDLE, handle);
        self.add(sock, NFT_MSG_DELRULE, 0, &a);
    }

    pub fn commit(mut self, sock: &mut Socket) -> io::Result<()> {
        if self.acks.is_empty() {
            return Ok(());
        }
        sock.push(&mut self.out, NFNL_MSG_BATCH_END, NLM_F_REQUEST, &nfgenmsg(0, NFNL_SUBSYS_NFTABLES));
        sock.send_and_wait(&self.out, &self.acks)
    }
}

/// How many bytes of elements one message carries. An attribute's length is 16 bits,
/// so the element list of a map of a few thousand entries cannot be one attribute (its
/// length wrapped and the kernel saw a fraction of the elements, or garbage); nft splits
/// the same way, a message per chunk in one batch.
const ELEM_LIST_MAX: usize = 16 * 1024;

/// `elems` as element lists of at most [`ELEM_LIST_MAX`] bytes each, in order.
fn elem_lists(elems: &[(Vec<u8>, Verdict)], with_data: bool) -> Vec<Attrs> {
    let mut lists = Vec::new();
    let mut list = Attrs::new();
    for (key, verdict) in elems {
        let mut e = Attrs::new();
        e.nested(NFTA_SET_ELEM_KEY, data(key));
        if with_data {
            e.nested(NFTA_SET_ELEM_DATA, verdict.data());
        }
        if !list.buf.is_empty() && list.buf.len() + e.buf.len() + 4 > ELEM_LIST_MAX {
            lists.push(std::mem::replace(&mut list, Attrs::new()));
        }
        list.nested(NFTA_LIST_ELEM, e);
    }
    lists.push(list);
    lists
}

/// The kernel replaces `%d` with the first free number.
const ANON_MAP: &str = "__map%d";
/// nft's type ids, for `nft list` to print keys as addresses, protocols and ports.
const TYPE_INTEGER: u32 = 4;
pub(crate) const TYPE_IPADDR: u32 = 7;
pub(crate) const TYPE_INET_PROTO: u32 = 12;
pub(crate) const TYPE_INET_SERVICE: u32 = 13;

/// nft's id of a concatenated type: each part's id shifted in by 6 bits.
pub(crate) fn concat_type(parts: &[u32]) -> u32 {
    parts.iter().fold(0, |t, p| (t << 6) | p)
}

/// Set ids tie a set to the elements and lookups that name it in the same batch;
/// they need only be unique within a batch, a process-wide counter is simplest.
fn next_set_id() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Where a rule or a map element sends the packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Verdict {
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

const NFT_JUMP: u32 = -3i32 as u32;
const NFT_GOTO: u32 = -4i32 as u32;
const NFT_RETURN: u32 = -5i32 as u32;
const NFTA_VERDICT_CHAIN: u16 = 2;

impl Verdict {
    fn data(&self) -> Attrs {
        let mut v = Attrs::new();
        match self {
            Verdict::Drop => v.be32(NFTA_VERDICT_CODE, NF_DROP),
            Verdict::Return => v.be32(NFTA_VERDICT_CODE, NFT_RETURN),
            Verdict::Jump(c) => v.be32(NFTA_VERDICT_CODE, NFT_JUMP).str(NFTA_VERDICT_CHAIN, c),
            Verdict::Goto(c) => v.be32(NFTA_VERDICT_CODE, NFT_GOTO).str(NFTA_VERDICT_CHAIN, c),
        };
        let mut d = Attrs::new();
        d.nested(NFTA_DATA_VERDICT, v);
        d
    }
}

fn comment_udata(comment: &str) -> Vec<u8> {
    // The TLV length is one byte and nft caps comments at 128 bytes with the NUL.
    let mut end = comment.len().min(127);
    while !comment.is_char_boundary(end) {
        end -= 1;
    }
    let mut v = vec![NFTNL_UDATA_RULE_COMMENT, (end + 1) as u8];
    v.extend_from_slice(&comment.as_bytes()[..end]);
    v.push(0);
    v
}

fn comment_of(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (ty, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if ty == NFTNL_UDATA_RULE_COMMENT {
            let s = value.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}

/// A rule found in a dump.
pub(crate) struct RuleInfo {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

/// The rules of `table`; an empty list if the table does not exist.
pub(crate) fn list_rules(sock: &mut Socket, table: &str) -> io::Result<Vec<RuleInfo>> {
    let mut a = Attrs::new();
    a.str(NFTA_RULE_TABLE, table);
    let mut payload = nfgenmsg(NFPROTO_IPV4, 0).to_vec();
    payload.extend_from_slice(&a.buf);
    let replies = match sock.dump(msg_type(NFT_MSG_GETRULE), &payload) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut rules = Vec::new();
    for r in replies {
        if r.ty != msg_type(NFT_MSG_NEWRULE) || r.payload.len() < 4 {
            continue;
        }
        let (mut tbl, mut chain, mut handle, mut comment) = (None, None, None, None);
        for (ty, v) in attrs(&r.payload[4..]) {
            match ty {
                NFTA_RULE_TABLE => tbl = Some(cstr(v)),
                NFTA_RULE_CHAIN => chain = Some(cstr(v)),
                NFTA_RULE_HANDLE => handle = v.try_into().ok().map(u64::from_be_bytes),
                NFTA_RULE_USERDATA => comment = comment_of(v),
                _ => {}
            }
        }
        // Without strict checking an old kernel dumps every table's rules.
        if tbl.as_deref() != Some(table) {
            continue;
        }
        if let (Some(chain), Some(handle)) = (chain, handle) {
            rules.push(RuleInfo { chain, handle, comment });
        }
    }
    Ok(rules)
}

fn cstr(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// A rule as a list of expressions, built in the order the kernel runs them.
#[derive(Default)]
pub(crate) struct Rule {
    exprs: Vec<(&'static str, Attrs)>,
    anon: Vec<AnonMap>,
}

/// An anonymous verdict map with u32 keys, created with the rule that uses it.
struct AnonMap {
    id: u32,
    elems: Vec<(Vec<u8>, Verdict)>,
}

/// The 32-bit registers (NFT_REG32_00..): concatenated keys are loaded field by field
/// into consecutive ones.
const REG32_00: u32 = 8;
const NFT_META_MARK: u32 = 3;
const NFT_CT_STATE: u32 = 0;
/// NF_CT_STATE_BIT(IP_CT_NEW)
const CT_STATE_NEW: u32 = 1 << 3;
const NFT_NG_RANDOM: u32 = 1;
const NFT_REJECT_ICMP_UNREACH: u32 = 0;
const ICMP_PORT_UNREACH: u8 = 3;

pub(crate) const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub(crate) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATUS: u32 = 2;
pub(crate) const IPS_SRC_NAT: u32 = 0x10;
pub(crate) const IPS_DST_NAT: u32 = 0x20;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const RTN_LOCAL: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_NAT_DNAT: u32 = 1;
const NFT_REG_VERDICT: u32 = 0;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_DYNSET_SET_NAME: u16 = 1;
const NFTA_DYNSET_OP: u16 = 3;
const NFTA_DYNSET_SREG_KEY: u16 = 4;
const NFT_DYNSET_OP_UPDATE: u32 = 1;

fn data(bytes: &[u8]) -> Attrs {
    let mut d = Attrs::new();
    d.bytes(NFTA_DATA_VALUE, bytes);
    d
}

impl Rule {
    fn push(&mut self, name: &'static str, a: Attrs) -> &mut Self {
        self.exprs.push((name, a));
        self
    }

    fn cmp(&mut self, op: u32, value: &[u8]) -> &mut Self {
        let mut a = Attrs::new();
        a.be32(1, REG1).be32(2, op).nested(3, data(value));
        self.push("cmp", a)
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) -> &mut Self {
        let mut a = Attrs::new();
        a.be32(1, REG1).be32(2, base).be32(3, offset).be32(4, len);
        self.push("payload", a)
    }

    fn meta(&mut self, key: u32) -> &mut Self {
        let mut a = Attrs::new();
        a.be32(1, REG1).be32(2, key);
        self.push("meta", a)
    }

    fn bitwise(&mut self, mask: &[u8], xor: &[u8]) -> &mut Self {
        let mut a = Attrs::new();
        a.be32(1, REG1).be32(2, REG1).be32(3, mask.len() as u32);
        a.nested(4, data(mask)).nested(5, data(xor));
        self.push("bitwise", a)
    }

    /// `fib daddr type local`: the destination is one of this host's addresses.
    pub fn daddr_is_local(&mut self) -> &mut Self {
        let mut a = Attrs::new();
        a.be32(1, REG1).be32(2, NFT_FIB_RESULT_ADDRTYPE).be32(3, NFTA_FIB_F_DADDR);
        self.push("fib", a);
        self.cmp(NFT_CMP_EQ, &RTN_LOCAL.to_ne_bytes())
    }

    pub fn daddr_is(&mut self, ip: Ipv4Addr) -> &mut Self {
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4).cmp(NFT_CMP_EQ, &ip.octets())
    }

    /// `ip saddr NET/PREFIX`
    pub fn saddr_in(&mut self, net: Ipv4Addr, prefix: u8) -> &mut Self {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
        self.bitwise(&mask.to_be_bytes(), &[0; 4]);
        self.cmp(NFT_CMP_EQ, &(u32::from(net) & mask).to_be_bytes())
    }

    /// `ip daddr NET/PREFIX`
    pub fn daddr_in(&mut self, net: Ipv4Addr, prefix: u8) -> &mut Self {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
        self.bitwise(&mask.to_be_bytes(), &[0; 4]);
        self.cmp(NFT_CMP_EQ, &(u32::from(net) & mask).to_be_bytes())
    }

    pub fn oifname_is(&mut self, name: &str) -> &mut Self {
        self.meta(NFT_META_OIFNAME).cmp(NFT_CMP_EQ, &ifname(name))
    }

    /// `iifname != NAME`
    pub fn iifname_is_not(&mut self, name: &str) -> &mut Self {
        self.meta(NFT_META_IIFNAME).cmp(NFT_CMP_NEQ, &ifname(name))
    }

    /// `meta l4proto P th dport PORT` (the destination port is at offset 2 in TCP,
    /// UDP and SCTP alike).
    pub fn l4_dport(&mut self, proto: u8, port: u16) -> &mut Self {
        self.meta(NFT_META_L4PROTO).cmp(NFT_CMP_EQ, &[proto]);
        self.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2).cmp(NFT_CMP_EQ, &port.to_be_bytes())
    }

    /// `ct status dnat`
    pub fn ct_dnat(&mut self) -> &mut Self {
        self.ct_status_any(IPS_DST_NAT)
    }

    /// `ct status & (snat | dnat) != 0`: a connection we NATed (either way).
    pub fn ct_natted(&mut self) -> &mut Self {
        self.ct_status_any(IPS_SRC_NAT | IPS_DST_NAT)
    }

    /// Any of the IPS_* bits in `bits` is set. A packet without conntrack (untracked,
    /// invalid) does not match.
    fn ct_status_any(&mut self, bits: u32) -> &mut Self {
        let mut a = Attrs::new();
        a.be32(1, REG1).be32(2, NFT_CT_STATUS);
        self.push("ct", a);
        self.bitwise(&bits.to_ne_bytes(), &[0; 4]).cmp(NFT_CMP_NEQ, &[0; 4])
    }

    pub fn accept(&mut self) -> &mut Self {
        self.verdict(NF_ACCEPT)
    }

    pub fn drop_packet(&mut self) -> &mut Self {
        self.verdict(NF_DROP)
    }

    fn verdict(&mut self, code: u32) -> &mut Self {
        let mut v = Attrs::new();
        v.be32(NFTA_VERDICT_CODE, code);
        let mut d = Attrs::new();
        d.nested(NFTA_DATA_VERDICT, v);
        let mut a = Attrs::new();
        a.be32(1, NFT_REG_VERDICT).nested(2, d);
        self.push("immediate", a)
    }

    /// `ip daddr != NET/PREFIX`
    pub fn daddr_not_in(&mut self, net: Ipv4Addr, prefix: u8) -> &mut Self {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
        self.bitwise(&mask.to_be_bytes(), &[0; 4]);
        self.cmp(NFT_CMP_NEQ, &(u32::from(net) & mask).to_be_bytes())
    }

    /// `ip saddr != NET/PREFIX`
    pub fn saddr_not_in(&mut self, net: Ipv4Addr, prefix: u8) -> &mut Self {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
        self.bitwise(&mask.to_be_bytes(), &[0; 4]);
        self.cmp(NFT_CMP_NEQ, &(u32::from(net) & mask).to_be_bytes())
    }

    pub fn saddr_is(&mut self, ip: Ipv4Addr) -> &mut Self {
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4).cmp(NFT_CMP_EQ, &ip.octets())
    }

    /// `meta l4proto P`
    pub fn l4proto(&mut self, proto: u8) -> &mut Self {
        self.meta(NFT_META_L4PROTO).cmp(NFT_CMP_EQ, &[proto])
    }

    fn load(&mut self, dreg: u32, base: u32, offset: u32, len: u32) -> &mut Self {
        let mut a = Attrs::new();
        a.be32(1, dreg).be32(2, base).be32(3, offset).be32(4, len);
        self.push("payload", a)
    }

    fn meta_to(&mut self, dreg: u32, key: u32) -> &mut Self {
        let mut a = Attrs::new();
        a.be32(1, dreg).be32(2, key);
        self.push("meta", a)
    }

    fn lookup_verdict(&mut self, set: &str, id: Option<u32>) -> &mut Self {
        let mut a = Attrs::new();
        a.str(1, set).be32(2, REG32_00).be32(3, NFT_REG_VERDICT);
        if let Some(id) = id {
            a.be32(4, id);
        }
        self.push("lookup", a)
    }

    /// `ip daddr . meta l4proto . th dport vmap @MAP`; keys as `addr_proto_port_key`.
    pub fn vmap_daddr_proto_port(&mut self, map: &str) -> &mut Self {
        self.load(REG32_00, NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
        self.meta_to(REG32_00 + 1, NFT_META_L4PROTO);
        self.load(REG32_00 + 2, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
        self.lookup_verdict(map, None)
    }

    /// `meta l4proto . th dport vmap @MAP`; keys as `proto_port_key`.
    pub fn vmap_proto_port(&mut self, map: &str) -> &mut Self {
        self.meta_to(REG32_00, NFT_META_L4PROTO);
        self.load(REG32_00 + 1, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
        self.lookup_verdict(map, None)
    }

    /// `numgen random mod N vmap { 0 : V0, 1 : V1, … }` with N = targets.len().
    pub fn numgen_vmap(&mut self, targets: Vec<Verdict>) -> &mut Self {
        let id = next_set_id();
        let mut a = Attrs::new();
        a.be32(1, REG32_00).be32(2, targets.len() as u32).be32(3, NFT_NG_RANDOM).be32(4, 0);
        self.push("numgen", a);
        self.lookup_verdict(ANON_MAP, Some(id));
        // numgen stores its result in host order.
        let elems = targets.into_iter().enumerate().map(|(i, v)| ((i as u32).to_ne_bytes().to_vec(), v)).collect();
        self.anon.push(AnonMap { id, elems });
        self
    }

    /// `meta mark & BIT != 0` (`== 0` with `set = false`)
    pub fn mark_has(&mut self, bit: u32, set: bool) -> &mut Self {
        self.meta(NFT_META_MARK).bitwise(&bit.to_ne_bytes(), &[0; 4]);
        self.cmp(if set { NFT_CMP_NEQ } else { NFT_CMP_EQ }, &[0; 4])
    }

    /// `meta mark set meta mark | BIT` (`^ BIT` with `xor`)
    pub fn mark_set(&mut self, bit: u32, xor: bool) -> &mut Self {
        self.meta(NFT_META_MARK);
        if xor {
            self.bitwise(&u32::MAX.to_ne_bytes(), &bit.to_ne_bytes());
        } else {
            self.bitwise(&(!bit).to_ne_bytes(), &bit.to_ne_bytes());
        }
        let mut a = Attrs::new();
        a.be32(2, NFT_META_MARK).be32(3, REG1);
        self.push("meta", a)
    }

    /// `ct state new`
    pub fn ct_new(&mut self) -> &mut Self {
        let mut a = Attrs::new();
        a.be32(1, REG1).be32(2, NFT_CT_STATE);
        self.push("ct", a);
        self.bitwise(&CT_STATE_NEW.to_ne_bytes(), &[0; 4]).cmp(NFT_CMP_NEQ, &[0; 4])
    }

    /// `reject` (ICMP port unreachable, as nft's default for the ip family)
    pub fn reject(&mut self) -> &mut Self {
        let mut a = Attrs::new();
        a.be32(1, NFT_REJECT_ICMP_UNREACH).bytes(2, &[ICMP_PORT_UNREACH]);
        self.push("reject", a)
    }

    pub fn then(&mut self, v: &Verdict) -> &mut Self {
        let mut a = Attrs::new();
        a.be32(1, NFT_REG_VERDICT).nested(2, v.data());
        self.push("immediate", a)
    }

    /// `dnat ip to IP:PORT`
    pub fn dnat(&mut self, ip: Ipv4Addr, port: u16) -> &mut Self {
        let mut a = Attrs::new();
        a.be32(1, REG1).nested(2, data(&ip.octets()));
        self.push("immediate", a);
        let mut a = Attrs::new();
        a.be32(1, REG2).nested(2, data(&port.to_be_bytes()));
        self.push("immediate", a);
        let mut a = Attrs::new();
        a.be32(1, NFT_NAT_DNAT).be32(2, u32::from(NFPROTO_IPV4)).be32(3, REG1).be32(5, REG2);
        self.push("nat", a)
    }

    pub fn masquerade(&mut self) -> &mut Self {
        self.push("masq", Attrs::new())
    }

    /// `ip saddr @SET` (a named set of addresses).
    pub fn saddr_in_set(&mut self, set: &str) -> &mut Self {
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
        let mut a = Attrs::new();
        a.str(NFTA_LOOKUP_SET, set).be32(NFTA_LOOKUP_SREG, REG1);
        self.push("lookup", a)
    }

    /// `update @SET { ip saddr }`: adds the source address to a timeout set, or
    /// restarts its timeout (the set's own).
    pub fn update_set_with_saddr(&mut self, set: &str) -> &mut Self {
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
        let mut a = Attrs::new();
        a.str(NFTA_DYNSET_SET_NAME, set).be32(NFTA_DYNSET_OP, NFT_DYNSET_OP_UPDATE).be32(NFTA_DYNSET_SREG_KEY, REG1);
        self.push("dynset", a)
    }
}

/// An interface name as meta iifname/oifname yield it: IFNAMSIZ bytes, NUL-padded.
fn ifname(name: &str) -> [u8; 16] {
    let mut v = [0u8; 16];
    let n = name.len().min(15);
    v[..n].copy_from_slice(&name.as_bytes()[..n]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_round_trip_and_are_capped() {
        assert_eq!(comment_of(&comment_udata("nd1234 pod-a")).as_deref(), Some("nd1234 pod-a"));
        let long = "é".repeat(100);
        let c = comment_of(&comment_udata(&long)).unwrap();
        assert!(c.len() <= 127 && long.starts_with(&c));
        assert_eq!(comment_of(&[0, 40, 1]), None);
    }

    #[test]
    fn a_large_map_is_split_into_element_lists_that_fit_an_attribute() {
        let elems: Vec<(Vec<u8>, Verdict)> =
            (0..5_000u32).map(|i| (i.to_be_bytes().to_vec(), Verdict::Goto(format!("service-{i}-tcp-http")))).collect();
        let lists = elem_lists(&elems, true);
        assert!(lists.len() > 1);
        let mut n = 0;
        for l in &lists {
            assert!(l.buf.len() + 4 <= ELEM_LIST_MAX, "{}", l.buf.len());
            n += super::super::netlink::attrs(&l.buf).count();
        }
        assert_eq!(n, elems.len(), "every element, once");
        assert_eq!(elem_lists(&elems[..3], false).len(), 1);
    }
}
