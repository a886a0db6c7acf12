#!/usr/bin/env bash
# Installs what building nodectl, its test images and its tests need, from Debian's
# packages. Safe to run again: it installs only what is missing.
set -eu

packages=(
  busybox-static   # the test images' userland (a static binary runs in any rootfs)
  umoci skopeo     # build and check OCI layouts and docker-archives
  zstd jq
  docker-registry apache2-utils  # a real registry on loopback for pull tests; htpasswd
  runc crun        # baselines for `make bench`
  podman containerd  # tests/podman.rs, tests/containerd.rs: real engines drive nodectl-runtime as their OCI runtime (issue 16)
  dnsmasq-base     # `make bench`: the plain resolver the cluster DNS's forwarding is measured against
  iproute2 gcc
  nftables         # nft: the network tests read our hostPort table with it (nodectl itself speaks netlink)
  libseccomp-dev pkg-config  # seccomp filters from the OCI spec (the libseccomp crate links it)
  qemu-system-x86  # make vm-test: the cgroup v2 driver on a pure cgroup2 kernel
  protobuf-compiler libprotobuf-dev  # protoc and its well-known types (descriptor.proto): etcd-client compiles etcd's gRPC API at build time
  etcd-server      # /usr/bin/etcd (3.4): the store's etcd backend is tested against real members
)
need=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The official Python client, a real client of the control plane's tests
# (tests/server_python.rs); 32.x is the client of Kubernetes 1.32, as our kubectl is.
python_client=32.0.1
if ! python3 -c "import kubernetes, sys; sys.exit(kubernetes.__version__ != '$python_client')" 2>/dev/null; then
  echo "installing: python kubernetes==$python_client (pip)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  # Debian's own python3 is "externally managed" (PEP 668): pip needs to be told.
  python3 -m pip install -q "kubernetes==$python_client" 2>/dev/null ||
    python3 -m pip install -q --break-system-packages "kubernetes==$python_client"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install a Rust toolchain (rustup) first" >&2
  exit 1
fi

# make test checks formatting and lints: rustfmt and clippy come with rustup's default
# profile; a minimal toolchain gets them here.
if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi
