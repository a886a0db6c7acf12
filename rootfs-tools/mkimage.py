#!/usr/bin/env python3
"""Builds nodectl's test images offline, deterministically, from Debian's busybox-static.

    mkimage.py OUT_DIR

writes (see README.md beside this file):
    busybox/                 OCI image layout, one gzip layer
    busybox.oci.tar          OCI archive (tar of that layout)
    busybox.docker25.tar     Docker 25 `docker save`: OCI layout plus manifest.json
    busybox.docker-legacy.tar  classic `docker save`: <id>/layer.tar, one of them a symlink
    busybox-zstd/            the same image with a zstd layer
    busybox-index/           an image index: linux/arm64 (a dummy) first, then linux/amd64
    multilayer/              four layers exercising every unpacker rule
    multilayer.expected.json what the merged multilayer root filesystem must hold

Fixed mtimes, owners and entry order make every digest the same on every run. The
classic docker-archive written by skopeo (busybox.docker.tar) comes from build-images.sh.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

MTIME = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"
BUSYBOX = "/bin/busybox"

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {
    None: "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Layer:
    """A layer's tar stream, in PAX format (xattrs, large ids), entries in the order added."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name, kind, mode, uid=0, gid=0, xattrs=None):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        info.mtime = MTIME
        if xattrs:
            info.pax_headers = {"SCHILY.xattr." + k: v for k, v in xattrs.items()}
        return info

    def dir(self, name, mode=0o755, **kw):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, **kw))
        return self

    def file(self, name, data=b"", mode=0o644, **kw):
        info = self._info(name, tarfile.REGTYPE, mode, **kw)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))
        return self

    def symlink(self, name, target, **kw):
        info = self._info(name, tarfile.SYMTYPE, 0o777, **kw)
        info.linkname = target
        self.tar.addfile(info)
        return self

    def hardlink(self, name, target, mode=0o644, **kw):
        # A hard link is the same inode, and unpackers (containers/storage, GNU tar) apply
        # a link entry's mode to it: the entry must carry the target's mode, as tar and
        # docker write it, or the shared binary ends up not executable.
        info = self._info(name, tarfile.LNKTYPE, mode, **kw)
        info.linkname = target
        self.tar.addfile(info)
        return self

    def device(self, name, kind, major, minor, mode=0o666):
        info = self._info(name, tarfile.CHRTYPE if kind == "c" else tarfile.BLKTYPE, mode)
        info.devmajor, info.devminor = major, minor
        self.tar.addfile(info)
        return self

    def fifo(self, name, mode=0o644):
        self.tar.addfile(self._info(name, tarfile.FIFOTYPE, mode))
        return self

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


def compress(data, how):
    if how is None:
        return data
    if how == "gzip":
        # mtime=0 and no file name: the same input gives the same bytes.
        return gzip.compress(data, compresslevel=6, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, check=True, capture_output=True).stdout
    raise ValueError(how)


class Layout:
    """An OCI image layout being written."""

    def __init__(self, path):
        if os.path.exists(path):
            shutil.rmtree(path)
        os.makedirs(os.path.join(path, "blobs", "sha256"))
        self.path = path
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def blob(self, data):
        digest = sha(data)
        with open(os.path.join(self.path, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    def image(self, layers, arch="amd64", cmd=("sh",)):
        """Writes config, layers and manifest; returns the manifest descriptor."""
        descs, diff_ids = [], []
        for tar_bytes, how in layers:
            diff_ids.append("sha256:" + sha(tar_bytes))
            descs.append(dict(mediaType=MT_LAYER[how], **self.blob(compress(tar_bytes, how))))
        config = {
            "created": CREATED,
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": list(cmd)},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": CREATED, "created_by": "nodectl rootfs-tools"} for _ in layers],
        }
        config_desc = dict(mediaType=MT_CONFIG, **self.blob(canonical(config)))
        manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config_desc, "layers": descs}
        return dict(mediaType=MT_MANIFEST, **self.blob(canonical(manifest)))

    def index(self, manifests):
        with open(os.path.join(self.path, "index.json"), "wb") as f:
            f.write(canonical({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests}))


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def busybox_layer():
    listing = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True, text=True).stdout.split()
    with open(BUSYBOX, "rb") as f:
        binary = f.read()
    layer = Layer()
    for d in ["bin", "dev", "etc", "proc", "root", "sbin", "sys", "usr", "usr/bin", "usr/sbin", "var"]:
        layer.dir(d, mode=0o700 if d == "root" else 0o755)
    layer.dir("tmp", mode=0o1777)
    layer.file("bin/busybox", binary, mode=0o755)
    for applet in sorted(set(listing)):
        if applet != "bin/busybox" and applet.split("/")[0] in ("bin", "sbin", "usr"):
            layer.hardlink(applet, "bin/busybox", mode=0o755)
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    layer.file("etc/group", b"root:x:0:\nnobody:x:65534:\n")
    return layer.bytes()


def ref_name(desc, name="latest", full=None):
    annotations = {"org.opencontainers.image.ref.name": name}
    if full:
        annotations["io.containerd.image.name"] = full
    return dict(desc, annotations=annotations)


def tar_dir(src, dest, extra=None):
    """Tars a directory with fixed metadata (an OCI archive or a docker-archive)."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        def add(path, arc):
            info = tar.gettarinfo(path, arc)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = MTIME
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            if os.path.isdir(path) and not os.path.islink(path):
                for child in sorted(os.listdir(path)):
                    add(os.path.join(path, child), arc + "/" + child if arc != "." else child)
        for child in sorted(os.listdir(src)):
            add(os.path.join(src, child), child)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), MTIME
            tar.addfile(info, io.BytesIO(data))


def docker25(layout, dest, full_name, short_name):
    """Docker 25's `docker save`: the OCI layout with uncompressed layers, plus the legacy
    manifest.json whose paths point into blobs/."""
    index = json.load(open(os.path.join(layout, "index.json")))
    index["manifests"] = [ref_name(m, "latest", full_name) for m in index["manifests"]]
    manifest = json.load(open(os.path.join(layout, "blobs/sha256", index["manifests"][0]["digest"][7:])))
    legacy = [{
        "Config": "blobs/sha256/" + manifest["config"]["digest"][7:],
        "RepoTags": [short_name],
        "Layers": ["blobs/sha256/" + l["digest"][7:] for l in manifest["layers"]],
    }]
    tmp = dest + ".d"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    shutil.copytree(layout, tmp)
    with open(os.path.join(tmp, "index.json"), "wb") as f:
        f.write(canonical(index))
    repo, tag = short_name.split(":")
    tar_dir(tmp, dest, {"manifest.json": canonical(legacy), "repositories": canonical({repo: {tag: manifest["config"]["digest"][7:]}})})
    shutil.rmtree(tmp)


def docker_legacy(layer_tar, config, dest, short_name):
    """The classic `docker save` form: <id>/layer.tar per layer. The manifest names a second
    id whose layer.tar is a symlink to the first, as docker writes shared layers."""
    real, linked = sha(b"real" + layer_tar), sha(b"linked" + layer_tar)
    config_bytes = canonical(config)
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, data=None, kind=tarfile.REGTYPE, link=""):
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.linkname = kind, MTIME, link
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        add(real, kind=tarfile.DIRTYPE)
        add(real + "/layer.tar", layer_tar)
        add(real + "/VERSION", b"1.0")
        add(linked, kind=tarfile.DIRTYPE)
        add(linked + "/layer.tar", kind=tarfile.SYMTYPE, link="../" + real + "/layer.tar")
        add(sha(config_bytes) + ".json", config_bytes)
        add("manifest.json", canonical([{"Config": sha(config_bytes) + ".json", "RepoTags": [short_name], "Layers": [linked + "/layer.tar"]}]))


# cap_net_bind_service+ep, VFS_CAP_REVISION_2 (magic 0x02000001, effective flag set).
CAPABILITY = bytes([0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00] + [0] * 12)


def multilayer():
    """Four layers and the merged tree they must give. Each rule of the image spec's
    changeset format appears at least once."""
    l1 = (Layer()
          .dir("etc").file("etc/config", b"v1\n").file("etc/motd", b"welcome\n")
          .dir("data").file("data/old-file", b"old").dir("data/olddir").file("data/olddir/inside", b"x")
          .dir("opq").file("opq/lower1", b"1").file("opq/lower2", b"2")
          .dir("replace-dir").file("replace-dir/child", b"c")
          .file("replace-file", b"file")
          .dir("dev").device("dev/null", "c", 1, 3).device("dev/loop0", "b", 7, 0)
          .dir("run").fifo("run/fifo", mode=0o600)
          .dir("bin").file("bin/suid", b"#!/bin/sh\n", mode=0o4755).file("bin/sgid", b"#!/bin/sh\n", mode=0o2755)
          .dir("tmp", mode=0o1777)
          .dir("home", mode=0o755).dir("home/user", mode=0o700, uid=1000, gid=1000)
          .file("home/user/file", b"mine", mode=0o640, uid=1000, gid=1000)
          .file("nobody-file", b"n", uid=65534, gid=65534)
          .file("bin/ping", b"ping", mode=0o755, xattrs={"security.capability": CAPABILITY.decode("latin-1"), "user.origin": "layer1"})
          .symlink("link-rel", "etc/motd").symlink("link-abs", "/etc/motd")
          .bytes())
    l2 = (Layer()
          .file("data/.wh.old-file").file("data/.wh.olddir")
          .file("etc/config", b"v2\n")
          .file("opq/new1", b"n1").file("opq/.wh..wh..opq").file("opq/new2", b"n2")
          .file("replace-dir", b"now a file")
          .dir("replace-file").file("replace-file/child", b"now a dir")
          .bytes())
    l3 = (Layer()
          .dir("l3").file("l3/orig", b"shared inode", mode=0o600).hardlink("l3/link", "l3/orig")
          .file("big-ids", b"b", uid=3_000_000, gid=3_000_001)
          .bytes())
    l4 = (Layer()
          .file("etc/.wh.motd")
          .file(".wh.nobody-file")
          .file("etc/config", b"v4\n", mode=0o600)
          .bytes())
    f = lambda data, mode=0o644, uid=0, gid=0, **kw: dict(type="file", sha256=sha(data), size=len(data), mode=mode, uid=uid, gid=gid, **kw)
    d = lambda mode=0o755, uid=0, gid=0: dict(type="dir", mode=mode, uid=uid, gid=gid)
    expected = {
        "paths": {
            "etc": d(), "etc/config": f(b"v4\n", 0o600),
            "data": d(),
            "opq": d(), "opq/new1": f(b"n1"), "opq/new2": f(b"n2"),
            "replace-dir": f(b"now a file"),
            "replace-file": d(), "replace-file/child": f(b"now a dir"),
            "dev/null": dict(type="char", rdev=[1, 3]), "dev/loop0": dict(type="block", rdev=[7, 0]),
            "run/fifo": dict(type="fifo", mode=0o600),
            "bin/suid": f(b"#!/bin/sh\n", 0o4755), "bin/sgid": f(b"#!/bin/sh\n", 0o2755),
            "tmp": d(0o1777),
            "home/user": d(0o700, 1000, 1000), "home/user/file": f(b"mine", 0o640, 1000, 1000),
            "bin/ping": f(b"ping", 0o755, xattrs={"security.capability": CAPABILITY.hex(), "user.origin": b"layer1".hex()}),
            "link-rel": dict(type="symlink", target="etc/motd"), "link-abs": dict(type="symlink", target="/etc/motd"),
            "l3/orig": f(b"shared inode", 0o600, same_inode_as="l3/link"), "l3/link": f(b"shared inode", 0o600),
            "big-ids": f(b"b", 0o644, 3_000_000, 3_000_001),
        },
        "absent": ["data/old-file", "data/olddir", "opq/lower1", "opq/lower2", "replace-dir/child",
                   "etc/motd", "nobody-file"],
    }
    return [(l1, "gzip"), (l2, None), (l3, "gzip"), (l4, None)], expected


def main(out):
    os.makedirs(out, exist_ok=True)
    layer = busybox_layer()

    lay = Layout(os.path.join(out, "busybox"))
    desc = lay.image([(layer, "gzip")])
    lay.index([ref_name(desc)])
    tar_dir(lay.path, os.path.join(out, "busybox.oci.tar"))

    # Docker 25 writes layers uncompressed.
    plain = Layout(os.path.join(out, ".busybox-plain"))
    plain.index([plain.image([(layer, None)])])
    docker25(plain.path, os.path.join(out, "busybox.docker25.tar"), "docker.io/library/busybox:latest", "busybox:latest")
    config = json.load(open(os.path.join(plain.path, "blobs/sha256",
                                         json.load(open(os.path.join(plain.path, "blobs/sha256", json.load(open(os.path.join(plain.path, "index.json")))["manifests"][0]["digest"][7:])))["config"]["digest"][7:])))
    docker_legacy(layer, config, os.path.join(out, "busybox.docker-legacy.tar"), "busybox:latest")
    shutil.rmtree(plain.path)

    zst = Layout(os.path.join(out, "busybox-zstd"))
    zst.index([ref_name(zst.image([(layer, "zstd")]))])

    idx = Layout(os.path.join(out, "busybox-index"))
    arm = idx.image([(Layer().file("hello", b"arm64 only\n").bytes(), "gzip")], arch="arm64")
    amd = idx.image([(layer, "gzip")])
    inner = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [
        dict(arm, platform={"architecture": "arm64", "os": "linux", "variant": "v8"}),
        dict(amd, platform={"architecture": "amd64", "os": "linux"}),
    ]}
    idx.index([ref_name(dict(mediaType=MT_INDEX, **idx.blob(canonical(inner))))])

    layers, expected = multilayer()
    ml = Layout(os.path.join(out, "multilayer"))
    ml.index([ref_name(ml.image(layers))])
    with open(os.path.join(out, "multilayer.expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: mkimage.py OUT_DIR")
    main(sys.argv[1])
