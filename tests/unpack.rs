//! The layer unpacker: every kind of entry and its metadata, OCI whiteouts in both modes
//! (checked through a real overlay mount), and hostile layers that try to reach the host.
//! Layers are built here byte by byte, because the tar crate's builder refuses the hostile
//! names these tests need.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nodectl::image::unpack::{DEFAULT_MAX_LAYER_BYTES, UnpackError, UnpackOptions, Whiteouts, unpack};

/// A tar stream written header by header.
#[derive(Default)]
struct Layer(Vec<u8>);

#[derive(Clone, Copy)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

struct E<'a> {
    name: &'a str,
    kind: Kind,
    data: &'a [u8],
    link: &'a str,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    pax: Vec<(&'a str, Vec<u8>)>,
}

fn e(name: &str, kind: Kind) -> E<'_> {
    let mode = match kind {
        Kind::Dir => 0o755,
        _ => 0o644,
    };
    E { name, kind, data: b"", link: "", mode, uid: 0, gid: 0, mtime: 1_600_000_000, pax: Vec::new() }
}

impl Layer {
    fn raw_header(&mut self, name: &[u8], typ: u8, size: u64, link: &[u8], x: &E<'_>) {
        let mut h = tar::Header::new_ustar();
        {
            let old = h.as_old_mut();
            // Names go in raw: no checks, `..` and leading `/` included.
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_size(size);
        h.set_mode(x.mode);
        h.set_uid(x.uid);
        h.set_gid(x.gid);
        h.set_mtime(x.mtime);
        h.set_entry_type(tar::EntryType::new(typ));
        if let Kind::Char(ma, mi) | Kind::Block(ma, mi) = x.kind {
            h.set_device_major(ma).unwrap();
            h.set_device_minor(mi).unwrap();
        }
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
    }

    fn data(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }

    fn add(mut self, mut x: E<'_>) -> Self {
        let long = x.name.len() > 100;
        if long {
            x.pax.push(("path", x.name.as_bytes().to_vec()));
        }
        if !x.pax.is_empty() {
            let mut records = Vec::new();
            for (k, v) in &x.pax {
                let body_len = 1 + k.len() + 1 + v.len() + 1;
                let mut len = body_len + 1;
                while len != body_len + len.to_string().len() {
                    len = body_len + len.to_string().len();
                }
                records.extend_from_slice(format!("{len} {k}=").as_bytes());
                records.extend_from_slice(v);
                records.push(b'\n');
            }
            let pax = E { mode: 0o644, ..e("PaxHeader", Kind::File) };
            self.raw_header(b"PaxHeader", b'x', records.len() as u64, b"", &pax);
            self.data(&records);
        }
        let typ = match x.kind {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char(..) => b'3',
            Kind::Block(..) => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        };
        let name = if long { &x.name.as_bytes()[..100] } else { x.name.as_bytes() };
        self.raw_header(name, typ, x.data.len() as u64, x.link.as_bytes(), &x);
        self.data(x.data);
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.add(E { data, ..e(name, Kind::File) })
    }
    fn dir(self, name: &str) -> Self {
        self.add(e(name, Kind::Dir))
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.add(E { link: target, ..e(name, Kind::Symlink) })
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.add(E { link: target, ..e(name, Kind::Hardlink) })
    }

    fn bytes(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }
}

fn apply(layer: Vec<u8>, target: &Path, whiteouts: Whiteouts) -> Result<(), UnpackError> {
    unpack(&layer[..], target, &UnpackOptions { whiteouts, max_bytes: DEFAULT_MAX_LAYER_BYTES }).map(|_| ())
}

/// A GNU sparse entry (type 'S') of `real_size` bytes whose only data is `data` at
/// `offset`: a few KiB of layer that describe a file of any size.
fn gnu_sparse(name: &str, real_size: u64, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(data.len() as u64);
    {
        let g = h.as_gnu_mut().unwrap();
        g.set_real_size(real_size);
        g.sparse[0].set_offset(offset);
        g.sparse[0].set_length(data.len() as u64);
        // The map must reach the end of the file: an empty extent there.
        g.sparse[1].set_offset(real_size);
        g.sparse[1].set_length(0);
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

#[test]
fn a_sparse_entry_is_written_as_a_sparse_file() {
    let tmp = tempfile::tempdir().unwrap();
    let real = 2u64 << 30;
    let layer = gnu_sparse("big", real, real - 4096, &[b'x'; 4096]);
    assert!(layer.len() < 10 * 1024);
    unpack(
        &layer[..],
        tmp.path(),
        &UnpackOptions { whiteouts: Whiteouts::Overlay, max_bytes: DEFAULT_MAX_LAYER_BYTES },
    )
    .unwrap();
    let meta = fs::metadata(tmp.path().join("big")).unwrap();
    assert_eq!(meta.len(), real);
    // 2 GiB described, a few blocks on disk.
    assert!(meta.blocks() * 512 < 1 << 20, "{} bytes allocated", meta.blocks() * 512);
    let mut f = fs::File::open(tmp.path().join("big")).unwrap();
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(real - 4097)).unwrap();
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).unwrap();
    assert_eq!(tail[0], 0);
    assert!(tail[1..].iter().all(|&b| b == b'x') && tail.len() == 4097);
}

#[test]
fn a_layer_over_the_size_limit_is_refused_before_it_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = gnu_sparse("huge", 1 << 40, 0, b"data");
    let opts = UnpackOptions { whiteouts: Whiteouts::Overlay, max_bytes: 1 << 30 };
    let err = unpack(&layer[..], tmp.path(), &opts).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { limit, .. } if limit == 1 << 30), "{err}");
    assert!(!tmp.path().join("huge").exists());
    // Plain files count too.
    let layer = Layer::default().file("a", &[1; 600]).file("b", &[2; 600]).bytes();
    let err = unpack(&layer[..], tmp.path(), &UnpackOptions { max_bytes: 1000, ..opts }).unwrap_err();
    assert!(err.to_string().contains("\"b\"") && err.to_string().contains("1000"), "{err}");
}

/// A test's sandbox: `target/` to unpack into, and `host/` beside it standing for the
/// host, with a canary file whose state is checked after every hostile layer.
struct Sandbox {
    _tmp: tempfile::TempDir,
    target: PathBuf,
    host: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        let host = tmp.path().join("host");
        fs::create_dir(&target).unwrap();
        fs::create_dir(&host).unwrap();
        fs::write(host.join("canary"), "untouched").unwrap();
        Sandbox { _tmp: tmp, target, host }
    }

    /// The host side is exactly as made: one canary file, unchanged, with one link.
    fn assert_host_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.host).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("canary")], "something was written beside the target");
        assert_eq!(fs::read_to_string(self.host.join("canary")).unwrap(), "untouched");
        assert_eq!(fs::metadata(self.host.join("canary")).unwrap().nlink(), 1, "the canary was hard-linked");
        let parent = self.target.parent().unwrap();
        let mut top: Vec<_> =
            fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        top.sort();
        assert_eq!(top, ["host", "target"], "something was written next to the target");
    }

    fn host_abs(&self) -> &str {
        self.host.to_str().unwrap()
    }
}

fn getxattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the length passed.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

#[test]
fn every_kind_of_entry_with_its_metadata() {
    let sb = Sandbox::new();
    // cap_net_bind_service+ep as a VFS_CAP_REVISION_2 blob.
    let cap: Vec<u8> = [0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0].to_vec();
    let layer = Layer::default()
        .add(E { mode: 0o1777, mtime: 1_500_000_000, ..e("tmp/", Kind::Dir) })
        .add(E { data: b"#!/bin/sh\n", mode: 0o4755, uid: 1000, gid: 1000, ..e("bin/suid", Kind::File) })
        .add(E { data: b"sgid", mode: 0o2750, uid: 65534, gid: 65534, ..e("bin/sgid", Kind::File) })
        .add(E {
            data: b"ping",
            mode: 0o755,
            pax: vec![("SCHILY.xattr.security.capability", cap.clone()), ("SCHILY.xattr.user.note", b"hello".to_vec())],
            ..e("bin/ping", Kind::File)
        })
        .add(E {
            data: b"big ids",
            pax: vec![("uid", b"3000000".to_vec()), ("gid", b"3000001".to_vec())],
            ..e("big", Kind::File)
        })
        .symlink("bin/sh-abs", "/bin/suid")
        .symlink("bin/sh-rel", "suid")
        .hardlink("bin/suid-link", "bin/suid")
        .add(e("dev/null", Kind::Char(1, 3)))
        .add(e("dev/loop0", Kind::Block(7, 0)))
        .add(E { mode: 0o600, ..e("run/fifo", Kind::Fifo) })
        .add(E { data: b"deep", ..e(&format!("{}/long-name-file", "d".repeat(150)), Kind::File) })
        .bytes();
    apply(layer, &sb.target, Whiteouts::Overlay).unwrap();
    let t = &sb.target;

    let m = fs::metadata(t.join("tmp")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o1777);
    assert_eq!(m.mtime(), 1_500_000_000, "directory mtime is set after its contents");
    let m = fs::metadata(t.join("bin/suid")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4755, 1000, 1000), "setuid survives chown");
    assert_eq!(m.mtime(), 1_600_000_000);
    let m = fs::metadata(t.join("bin/sgid")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o2750, 65534, 65534));
    assert_eq!(getxattr(&t.join("bin/ping"), "security.capability").unwrap(), cap);
    assert_eq!(getxattr(&t.join("bin/ping"), "user.note").unwrap(), b"hello");
    let m = fs::metadata(t.join("big")).unwrap();
    assert_eq!((m.uid(), m.gid()), (3_000_000, 3_000_001), "PAX ids win over the header");

    assert_eq!(
        fs::read_link(t.join("bin/sh-abs")).unwrap(),
        Path::new("/bin/suid"),
        "absolute targets kept as written"
    );
    assert_eq!(fs::read_link(t.join("bin/sh-rel")).unwrap(), Path::new("suid"));
    assert_eq!(fs::metadata(t.join("bin/suid-link")).unwrap().ino(), fs::metadata(t.join("bin/suid")).unwrap().ino());

    let m = fs::symlink_metadata(t.join("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), libc::makedev(1, 3));
    let m = fs::symlink_metadata(t.join("dev/loop0")).unwrap();
    assert!(m.file_type().is_block_device());
    assert_eq!(m.rdev(), libc::makedev(7, 0));
    let m = fs::symlink_metadata(t.join("run/fifo")).unwrap();
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o777, 0o600);
    assert_eq!(fs::read(t.join("d".repeat(150)).join("long-name-file")).unwrap(), b"deep");
}

#[test]
fn later_entries_replace_earlier_ones() {
    let sb = Sandbox::new();
    let layer = Layer::default()
        .file("a", b"one")
        .file("a", b"two")
        .dir("d/")
        .file("d/x", b"x")
        .file("d", b"now a file")
        .symlink("s", "a")
        .file("s", b"not a link")
        .bytes();
    apply(layer, &sb.target, Whiteouts::Overlay).unwrap();
    assert_eq!(fs::read(sb.target.join("a")).unwrap(), b"two");
    assert_eq!(fs::read(sb.target.join("d")).unwrap(), b"now a file");
    assert!(fs::symlink_metadata(sb.target.join("s")).unwrap().is_file());
    assert_eq!(fs::read(sb.target.join("a")).unwrap(), b"two");
}

#[test]
fn overlay_whiteouts_are_written_in_overlayfs_format() {
    let sb = Sandbox::new();
    let layer =
        Layer::default().file(".wh.gone", b"").dir("opq/").file("opq/kept", b"k").file("opq/.wh..wh..opq", b"").bytes();
    apply(layer, &sb.target, Whiteouts::Overlay).unwrap();
    let m = fs::symlink_metadata(sb.target.join("gone")).unwrap();
    assert!(m.file_type().is_char_device() && m.rdev() == 0, "whiteout is a 0/0 char device");
    assert_eq!(getxattr(&sb.target.join("opq"), "trusted.overlay.opaque").unwrap(), b"y");
    assert!(sb.target.join("opq/kept").exists(), "entries before the opaque marker stay");
    assert!(!sb.target.join(".wh.gone").exists() && !sb.target.join("opq/.wh..wh..opq").exists());
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn lower_layer() -> Vec<u8> {
    Layer::default()
        .file("etc/keep", b"keep")
        .file("etc/gone", b"gone")
        .dir("olddir/")
        .file("olddir/inside", b"i")
        .dir("opq/")
        .file("opq/lower-only", b"l")
        .file("opq/shared", b"lower")
        .bytes()
}

fn upper_layer() -> Vec<u8> {
    // The opaque marker comes after an entry of its own directory, which must survive.
    Layer::default()
        .file("etc/.wh.gone", b"")
        .file(".wh.olddir", b"")
        .file("opq/shared", b"upper")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"n")
        .bytes()
}

fn check_merged(root: &Path) {
    assert_eq!(fs::read(root.join("etc/keep")).unwrap(), b"keep");
    assert!(!root.join("etc/gone").exists(), "whited-out file is gone");
    assert!(!root.join("olddir").exists(), "whited-out directory is gone");
    let mut opq: Vec<_> =
        fs::read_dir(root.join("opq")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    opq.sort();
    assert_eq!(opq, ["new", "shared"], "opaque directory shows only the upper layer");
    assert_eq!(fs::read(root.join("opq/shared")).unwrap(), b"upper");
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            assert!(!entry.file_name().as_bytes().starts_with(b".wh."), "whiteout visible: {:?}", entry.path());
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
}

#[test]
fn overlay_layers_merge_as_the_image_spec_says() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> =
        ["lower", "upper", "cupper", "work", "merged"].iter().map(|d| tmp.path().join(d)).collect();
    for d in &dirs {
        fs::create_dir(d).unwrap();
    }
    apply(lower_layer(), &dirs[0], Whiteouts::Overlay).unwrap();
    apply(upper_layer(), &dirs[1], Whiteouts::Overlay).unwrap();
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        dirs[1].display(),
        dirs[0].display(),
        dirs[2].display(),
        dirs[3].display()
    );
    nix::mount::mount(Some("overlay"), &dirs[4], Some("overlay"), nix::mount::MsFlags::empty(), Some(opts.as_str()))
        .unwrap();
    let _m = Mount(dirs[4].clone());
    check_merged(&dirs[4]);
}

#[test]
fn applied_layers_merge_as_the_image_spec_says() {
    let sb = Sandbox::new();
    apply(lower_layer(), &sb.target, Whiteouts::Apply).unwrap();
    apply(upper_layer(), &sb.target, Whiteouts::Apply).unwrap();
    check_merged(&sb.target);
}

#[test]
fn dot_dot_stays_inside() {
    let sb = Sandbox::new();
    let layer = Layer::default()
        .file("../host/canary", b"pwned")
        .file("../../../../escaped", b"x")
        .file("a/../../b", b"b")
        .bytes();
    apply(layer, &sb.target, Whiteouts::Overlay).unwrap();
    sb.assert_host_untouched();
    assert_eq!(fs::read(sb.target.join("host/canary")).unwrap(), b"pwned", "climbing stops at the target's root");
    assert!(sb.target.join("escaped").exists() && sb.target.join("b").exists());
}

#[test]
fn absolute_paths_stay_inside() {
    let sb = Sandbox::new();
    let abs = format!("{}/canary", sb.host_abs());
    let layer = Layer::default().file(&abs, b"pwned").bytes();
    apply(layer, &sb.target, Whiteouts::Overlay).unwrap();
    sb.assert_host_untouched();
    assert_eq!(fs::read(sb.target.join(abs.trim_start_matches('/'))).unwrap(), b"pwned");
}

/// Writing through a symlink, whatever it points at, whichever mode.
fn write_through(link_target: &str, same_layer: bool, mode: Whiteouts) {
    let sb = Sandbox::new();
    let target = link_target.replace("HOST", sb.host_abs());
    let link = Layer::default().symlink("evil", &target);
    let write = |l: Layer| l.file("evil/canary", b"pwned").file("evil/new", b"pwned").bytes();
    if same_layer {
        let _ = apply(write(link), &sb.target, mode);
    } else {
        apply(link.bytes(), &sb.target, mode).unwrap();
        let _ = apply(write(Layer::default()), &sb.target, mode);
    }
    sb.assert_host_untouched();
}

#[test]
fn a_symlink_to_an_absolute_path_is_not_written_through() {
    for mode in [Whiteouts::Overlay, Whiteouts::Apply] {
        write_through("HOST", true, mode);
    }
}

#[test]
fn a_climbing_relative_symlink_is_not_written_through() {
    for mode in [Whiteouts::Overlay, Whiteouts::Apply] {
        write_through("../../../../../../../../HOST", true, mode);
        write_through("../host", true, mode);
    }
}

#[test]
fn a_symlink_from_an_earlier_layer_is_not_written_through() {
    write_through("HOST", false, Whiteouts::Apply);
    write_through("../host", false, Whiteouts::Apply);
}

#[test]
fn a_file_over_a_symlink_replaces_the_link() {
    let sb = Sandbox::new();
    let canary = format!("{}/canary", sb.host_abs());
    let layer = Layer::default().symlink("f", &canary).file("f", b"pwned").bytes();
    apply(layer, &sb.target, Whiteouts::Overlay).unwrap();
    sb.assert_host_untouched();
    assert_eq!(fs::read(sb.target.join("f")).unwrap(), b"pwned");
}

#[test]
fn hardlinks_cannot_reach_outside() {
    let sb = Sandbox::new();
    let etc_links = fs::metadata("/etc/passwd").unwrap().nlink();
    let canary = format!("{}/canary", sb.host_abs());
    for (name, target) in [("h1", "../host/canary"), ("h2", canary.as_str()), ("h3", "/etc/passwd")] {
        let err = apply(Layer::default().hardlink(name, target).bytes(), &sb.target, Whiteouts::Overlay).unwrap_err();
        assert!(err.to_string().contains("not in this layer"), "{err}");
    }
    // Through a symlink: the link is linked, not what it points at.
    let layer = Layer::default().symlink("s", &canary).hardlink("h4", "s").bytes();
    apply(layer, &sb.target, Whiteouts::Overlay).unwrap();
    assert!(fs::symlink_metadata(sb.target.join("h4")).unwrap().file_type().is_symlink());
    sb.assert_host_untouched();
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), etc_links, "/etc/passwd gained a link");
}

#[test]
fn whiteouts_cannot_reach_outside() {
    for mode in [Whiteouts::Apply, Whiteouts::Overlay] {
        let sb = Sandbox::new();
        let canary = format!("{}/.wh.canary", sb.host_abs());
        let layer = Layer::default()
            .file("../host/.wh.canary", b"")
            .file(&canary, b"")
            .symlink("evil", sb.host_abs())
            .file("evil/.wh.canary", b"")
            .bytes();
        let _ = apply(layer, &sb.target, mode);
        sb.assert_host_untouched();
        let opq = Layer::default().symlink("evil2", "../host").file("evil2/.wh..wh..opq", b"").bytes();
        let _ = apply(opq, &sb.target, mode);
        sb.assert_host_untouched();
    }
}

#[test]
fn overlay_metadata_in_a_layer_is_ignored() {
    let sb = Sandbox::new();
    let layer = Layer::default()
        .add(E { pax: vec![("SCHILY.xattr.trusted.overlay.redirect", b"/etc".to_vec())], ..e("d/", Kind::Dir) })
        .bytes();
    apply(layer, &sb.target, Whiteouts::Overlay).unwrap();
    assert!(getxattr(&sb.target.join("d"), "trusted.overlay.redirect").is_none());
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let sb = Sandbox::new();
    let full = Layer::default().file("f", &[7u8; 5000]).bytes();
    for cut in [100, 600, 3000] {
        let err = apply(full[..cut].to_vec(), &sb.target, Whiteouts::Overlay).unwrap_err();
        assert!(matches!(err, UnpackError::Read(_)), "cut at {cut}: {err}");
    }
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    assert!(apply(garbage, &sb.target, Whiteouts::Overlay).is_err());
    let err = apply(Layer::default().file(".wh.", b"").bytes(), &sb.target, Whiteouts::Overlay).unwrap_err();
    assert!(err.to_string().contains("whiteout names no file"), "{err}");
    let err =
        apply(Layer::default().file("plain", b"").file("plain/child", b"").bytes(), &sb.target, Whiteouts::Overlay)
            .unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    sb.assert_host_untouched();
}

#[test]
fn the_root_entry_sets_the_roots_metadata() {
    let sb = Sandbox::new();
    apply(Layer::default().add(E { mode: 0o750, ..e("./", Kind::Dir) }).bytes(), &sb.target, Whiteouts::Overlay)
        .unwrap();
    assert_eq!(fs::metadata(&sb.target).unwrap().permissions().mode() & 0o777, 0o750);
    let err = apply(Layer::default().file("./", b"x").bytes(), &sb.target, Whiteouts::Overlay).unwrap_err();
    assert!(err.to_string().contains("root"), "{err}");
}

#[test]
fn replacing_a_path_component_is_seen_by_later_entries() {
    // The unpacker caches the last parent directory it resolved; an entry that replaces a
    // component of that path (a symlink re-pointed, a directory made a file) must not let
    // the entries after it land where the old path led.
    let sb = Sandbox::new();
    let layer = Layer::default()
        .dir("real/")
        .dir("other/")
        .symlink("s", "real")
        .file("s/a", b"a")
        .symlink("s", "other")
        .file("s/b", b"b")
        .bytes();
    apply(layer, &sb.target, Whiteouts::Overlay).unwrap();
    assert!(sb.target.join("real/a").exists());
    assert!(sb.target.join("other/b").exists(), "s/b followed the old symlink");
    assert!(!sb.target.join("real/b").exists());

    let sb = Sandbox::new();
    let layer = Layer::default().dir("d/").file("d/x", b"x").file("d", b"now a file").file("d/y", b"lost?").bytes();
    let err = apply(layer, &sb.target, Whiteouts::Overlay).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "d/y was written into a removed directory: {err}");
}
