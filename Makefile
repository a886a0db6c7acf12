# nodectl. Two commands set up a fresh machine (see README.md):
#   make        install what is needed, build, build the test images, run the default job
#   make test   formatting, lints, the whole test suite as root, ending with the leak check
# `make conformance RUNC_SRC=DIR` runs runc's integration suite for runc and nodectl-runtime.
# `make bench` measures against GNU tar, crun and runc, pod start-up, and the API server on
# SQLite and etcd; it is not a test.

CARGO      ?= cargo
IMAGES     := target/images
NODECTL    := target/release/nodectl
# What `make lint` and `make test` build with (Cargo.toml: release's code, less optimized).
TESTING    := --profile testing

.PHONY: all deps build images demo lint test vm-test soak bench conformance clean

all: demo

deps:
	@bash rootfs-tools/install-deps.sh

build: deps
	$(CARGO) build --release --locked

images: deps
	@bash rootfs-tools/build-images.sh $(IMAGES)

# The default job: put the busybox image into the store and run the hello pod from it.
demo: build images
	$(NODECTL) image import $(IMAGES)/busybox --name busybox:latest
	$(NODECTL) image ls
	$(NODECTL) run manifests/hello.yaml

# Formatting and lints (clippy.toml, [lints] in Cargo.toml) are part of the tests.
lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy $(TESTING) --all-targets --locked -- -D warnings

# Lint and tests share one profile, so the C libraries, build scripts and proc macros are
# built once. tests/run-suite.sh runs the test binaries three at a time (NODECTL_TEST_JOBS).
test: lint images
	@bash tests/leaks.sh snapshot target/leaks.before
	CARGO=$(CARGO) NODECTL_TEST_IMAGES=$(CURDIR)/$(IMAGES) bash tests/run-suite.sh $(TESTING) --locked
	@bash tests/vm/run.sh target/vm target/testing/nodectl
	@bash tests/leaks.sh check target/leaks.before

# 1,000 pods made and removed through the node daemon, in rounds of 50: nothing may be left
# behind and the daemon's descriptors and memory may not grow (not in CI: ~10 minutes).
soak: build images
	NODECTL_SOAK_PODS=1000 NODECTL_TEST_IMAGES=$(CURDIR)/$(IMAGES) $(CARGO) test --release --locked --test daemon -- many_pods --nocapture

# The cgroup v2 driver, proven in a VM (Debian's kernel under qemu, pure cgroup2).
vm-test: build
	@bash tests/vm/run.sh target/vm

bench: build images
	$(CARGO) bench --locked --bench unpack
	NODECTL_TEST_IMAGES=$(CURDIR)/$(IMAGES) $(CARGO) bench --locked --bench runtime
	NODECTL_TEST_IMAGES=$(CURDIR)/$(IMAGES) $(CARGO) bench --locked --bench podman
	NODECTL_TEST_IMAGES=$(CURDIR)/$(IMAGES) $(CARGO) bench --locked --bench pods
	NODECTL_TEST_IMAGES=$(CURDIR)/$(IMAGES) $(CARGO) bench --locked --bench daemon
	$(CARGO) bench --locked --bench api
	$(CARGO) bench --locked --bench scheduler
	$(CARGO) bench --locked --bench cluster
	NODECTL_TEST_IMAGES=$(CURDIR)/$(IMAGES) $(CARGO) bench --locked --bench services

# runc v1.1.5's own integration suite, run for Debian's runc and for nodectl-runtime side
# by side, a table per file (not part of `make test`: it needs runc's source, which the user
# fetches; without RUNC_SRC it prints the steps). docs/conformance.md, "How to run it".
conformance:
	@bash tests/conformance/run-runc-bats.sh --check "$(RUNC_SRC)"
	$(MAKE) build images
	NODECTL_TEST_IMAGES=$(CURDIR)/$(IMAGES) bash tests/conformance/run-runc-bats.sh "$(RUNC_SRC)"

clean:
	$(CARGO) clean
