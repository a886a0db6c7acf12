#!/usr/bin/env python3
"""Compares a root filesystem with an expected-tree description (multilayer.expected.json).

    check_tree.py EXPECTED.json ROOTFS

Each path in "paths" must exist with the given type and, where given, mode, uid, gid,
size, sha256, symlink target, device numbers, xattrs (hex values) and hard-link identity;
each path in "absent" must not exist; no name anywhere may start with ".wh.". Prints one
line per mismatch and exits 1 if there is any.
"""

import hashlib
import json
import os
import stat
import sys

TYPES = {"file": stat.S_ISREG, "dir": stat.S_ISDIR, "symlink": stat.S_ISLNK,
         "char": stat.S_ISCHR, "block": stat.S_ISBLK, "fifo": stat.S_ISFIFO}


def check(expected, root):
    problems = []
    for rel, want in sorted(expected["paths"].items()):
        path = os.path.join(root, rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            problems.append(f"{rel}: missing")
            continue
        if not TYPES[want["type"]](st.st_mode):
            problems.append(f"{rel}: not a {want['type']} (mode {oct(st.st_mode)})")
            continue
        if "mode" in want and stat.S_IMODE(st.st_mode) != want["mode"]:
            problems.append(f"{rel}: mode {oct(stat.S_IMODE(st.st_mode))}, expected {oct(want['mode'])}")
        for key in ("uid", "gid", "size"):
            if key in want and getattr(st, "st_" + key) != want[key]:
                problems.append(f"{rel}: {key} {getattr(st, 'st_' + key)}, expected {want[key]}")
        if "sha256" in want:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            if digest != want["sha256"]:
                problems.append(f"{rel}: content differs")
        if "target" in want and os.readlink(path) != want["target"]:
            problems.append(f"{rel}: points to {os.readlink(path)!r}, expected {want['target']!r}")
        if "rdev" in want and [os.major(st.st_rdev), os.minor(st.st_rdev)] != want["rdev"]:
            problems.append(f"{rel}: device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}, expected {want['rdev']}")
        for key, value in want.get("xattrs", {}).items():
            try:
                got = os.getxattr(path, key, follow_symlinks=False).hex()
            except OSError as e:
                got = f"<{e.strerror}>"
            if got != value:
                problems.append(f"{rel}: xattr {key} = {got}, expected {value}")
        if "same_inode_as" in want:
            other = os.lstat(os.path.join(root, want["same_inode_as"]))
            if (other.st_ino, other.st_dev) != (st.st_ino, st.st_dev):
                problems.append(f"{rel}: not a hard link of {want['same_inode_as']}")
    for rel in expected.get("absent", []):
        if os.path.lexists(os.path.join(root, rel)):
            problems.append(f"{rel}: present, but a whiteout should have removed it")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name.startswith(".wh."):
                problems.append(f"{os.path.relpath(os.path.join(dirpath, name), root)}: whiteout visible")
    return problems


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: check_tree.py EXPECTED.json ROOTFS")
    with open(sys.argv[1]) as f:
        expected = json.load(f)
    problems = check(expected, sys.argv[2])
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"{len(expected['paths'])} paths as expected, {len(expected.get('absent', []))} absent")


if __name__ == "__main__":
    main()
