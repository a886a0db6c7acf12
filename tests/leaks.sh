#!/usr/bin/env bash
# The suite's last check: nothing the tests made may outlive them.
#   tests/leaks.sh snapshot FILE   record what exists now
#   tests/leaks.sh check FILE      fail, listing each leftover, if anything new exists
# Compared: network devices, network namespaces, nftables tables, mounts, cgroups, and processes of ours
# (nodectl, the test registry, etcd members, container userlands run from busybox), by
# executable.
set -u

snapshot() {
  ip -o link 2>/dev/null | awk -F': ' '{print "netdev " $2}' | cut -d@ -f1
  ip netns list 2>/dev/null | awk '{print "netns " $1}'
  nft list tables 2>/dev/null | sed 's/^table /nftables /'
  # /run/netns is iproute2's mount point for named namespaces, made by the first `ip netns
  # add` after boot and kept by design; the namespaces in it are compared above.
  awk '$5 != "/run/netns" {print "mount " $5}' /proc/self/mountinfo
  # The machine's command runner puts each command it runs (ours or anyone's) in a cgroup
  # of its own, process_api/<32 hex digits>, in every hierarchy; those come and go with
  # its commands and are not ours. Anything made inside one still is compared.
  find /sys/fs/cgroup -mindepth 1 -type d 2>/dev/null \
    | grep -Ev '^/sys/fs/cgroup/([^/]+/)?process_api(/[0-9a-f]{32})?$' \
    | sed 's/^/cgroup /'
  for p in /proc/[0-9]*; do
    cmd=$( { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null) || continue
    exe=$(readlink "$p/exe" 2>/dev/null) || exe=""
    # By executable, not command line: a compiler building the crate named nodectl is
    # not one of ours.
    case "$exe" in
      *nodectl*|*docker-registry*|*/busybox*|*/etcd) echo "process ${p#/proc/} $cmd" ;;
    esac
  done
}

case "${1:-}" in
  snapshot) snapshot | sort -u > "$2" ;;
  check)
    now=$(mktemp)
    # Give lazily unmounted filesystems and exiting processes a moment to go.
    for _ in 1 2 3 4 5; do
      snapshot | sort -u > "$now"
      left=$(comm -13 "$2" "$now")
      [ -z "$left" ] && break
      sleep 1
    done
    rm -f "$now"
    if [ -n "$left" ]; then
      echo "leak check: the tests left these behind:"
      echo "$left" | head -50 | sed 's/^/  /'
      exit 1
    fi
    echo "leak check: nothing left behind"
    ;;
  *) echo "usage: $0 snapshot|check FILE" >&2; exit 2 ;;
esac
