#!/bin/bash
# Runs runc's own integration suite (tests/integration/*.bats of a runc checkout the user
# prepared, see docs/conformance.md "How to run it") twice, with RUNC= Debian's runc and
# with nodectl-runtime, and prints a table per file: pass/fail/skip for each.
#
#   tests/conformance/run-runc-bats.sh RUNC_SRC [FILE.bats ...]
#   tests/conformance/run-runc-bats.sh --check RUNC_SRC   (only whether it can run)
#
# Nothing here fetches or builds anything: the checkout and its test helpers are the
# user's. What it does to run them as runc's CI does:
#   - bats runs under script(1): several tests need a terminal on stdin (runc's CI has one);
#   - in a cgroup of our own, beneath this process's cgroups, entered with a new cgroup
#     namespace and cgroupfs mounted again in a private mount namespace, so that the
#     cgroups the tests make (/sys/fs/cgroup/*/runc-cgroups-integration-test/…) land
#     beneath ours and never at a hierarchy's root; it is removed afterwards;
#   - busybox is the test images' (NODECTL_TEST_IMAGES, default target/images), put where
#     runc's get-images.sh looks for it, so that nothing is downloaded; hooks.bats' Debian
#     image, if the checkout has none, is that busybox with the host's static ldconfig
#     (the one thing its test runs from Debian).
# Environment: RUNC_BIN (default /usr/sbin/runc), NODECTL_BIN (default
# target/release/nodectl), RESULTS (default target/conformance), BATS_FILE_TIMEOUT
# (seconds per file, default 900).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
check_only=
if [ "${1:-}" = --check ]; then
	check_only=1
	shift
fi
src=${1:-}
shift || true

steps() {
	cat >&2 <<-EOF
		make conformance needs a runc v1.1.5 checkout with its test helpers built:

		  apt-get install -y bats gawk golang-go jq libseccomp-dev gcc git runc
		  git clone --branch v1.1.5 --depth 1 https://github.com/opencontainers/runc /tmp/runc
		  make -C /tmp/runc recvtty sd-helper seccompagent
		  make conformance RUNC_SRC=/tmp/runc

		(runc 1.1.5 has no fs-idmap helper; its Makefile builds the three above.)
	EOF
}

if [ -z "$src" ] || [ ! -f "$src/tests/integration/helpers.bash" ]; then
	echo "RUNC_SRC: no runc checkout at '${src}'" >&2
	steps
	exit 2
fi
src=$(cd "$src" && pwd)
for helper in recvtty sd-helper seccompagent; do
	if [ ! -x "$src/contrib/cmd/$helper/$helper" ]; then
		echo "RUNC_SRC: $src/contrib/cmd/$helper/$helper is not built" >&2
		steps
		exit 2
	fi
done
for tool in bats gawk go jq script unshare; do
	if ! command -v "$tool" >/dev/null; then
		echo "$tool is not installed" >&2
		steps
		exit 2
	fi
done
if [ "$(id -u)" -ne 0 ]; then
	echo "run as root: runc's suite runs containers" >&2
	exit 2
fi
[ -z "$check_only" ] || exit 0

runc_bin=${RUNC_BIN:-/usr/sbin/runc}
nodectl_bin=${NODECTL_BIN:-$repo/target/release/nodectl}
images=${NODECTL_TEST_IMAGES:-$repo/target/images}
results=${RESULTS:-$repo/target/conformance}
timeout_s=${BATS_FILE_TIMEOUT:-900}
[ -x "$runc_bin" ] || { echo "no runc at $runc_bin (apt-get install runc)" >&2; exit 2; }
[ -x "$nodectl_bin" ] || { echo "no nodectl at $nodectl_bin (make build)" >&2; exit 2; }
[ -f "$images/busybox/index.json" ] || { echo "no busybox image in $images (make images)" >&2; exit 2; }

mkdir -p "$results"
results=$(cd "$results" && pwd)
work=$(mktemp -d /tmp/nodectl-conformance.XXXXXX)
# The binary is the runtime when it is called nodectl-runtime.
ln -s "$nodectl_bin" "$work/nodectl-runtime"

# busybox's rootfs: the single layer of the test image, as get-images.sh names its file.
arch=$(go env GOARCH)
testdata="$src/tests/integration/testdata"
manifest=$(jq -r '.manifests[0].digest' "$images/busybox/index.json")
layer=$(jq -r '.layers[0].digest' "$images/busybox/blobs/${manifest/://}")
gzip -dc "$images/busybox/blobs/${layer/://}" | xz -T1 -c >"$testdata/busybox-$arch.tar.xz"
if [ ! -f "$testdata/debian-$arch.tar.xz" ]; then
	mkdir "$work/debian"
	gzip -dc "$images/busybox/blobs/${layer/://}" | tar -x -C "$work/debian"
	mkdir -p "$work/debian/sbin" "$work/debian/lib" "$work/debian/etc"
	cp /sbin/ldconfig "$work/debian/sbin/ldconfig"
	tar -C "$work/debian" -c . | xz -T1 -c >"$testdata/debian-$arch.tar.xz"
	rm -rf "$work/debian"
fi

# "mount point, type, super options" of each cgroup mount (mountinfo's optional fields vary
# in number; " - " ends them).
cgroup_mounts() {
	awk '{ split($0, a, " - "); split(a[1], l, " "); split(a[2], r, " ")
		if (r[1] == "cgroup" || r[1] == "cgroup2") print l[5], r[1], r[3] }' /proc/self/mountinfo
}

# Our cgroup in each hierarchy: a child of the cgroup this process is in there.
# dirs[i] is hierarchy i's, e.g. /sys/fs/cgroup/memory/<ours>/nodectl-conformance-PID.
dirs=()
while read -r mnt fstype super; do
	case $fstype in
	cgroup) key=$(echo "$super" | tr , '\n' | grep -vxE 'rw|ro' | paste -sd,) ;;
	cgroup2) key= ;;
	*) continue ;;
	esac
	own=$(awk -F: -v k="$key" '$2 == k { sub(/^[^:]*:[^:]*:/, ""); print }' /proc/self/cgroup)
	dirs+=("$mnt${own%/}/nodectl-conformance-$$")
done < <(cgroup_mounts)

# A cgroup directory; a v1 cpuset one gets its parent's cpus and mems (it starts empty).
make_cgroup() {
	mkdir "$1"
	if [ -f "$1/cpuset.cpus" ]; then
		cat "$(dirname "$1")/cpuset.cpus" >"$1/cpuset.cpus"
		cat "$(dirname "$1")/cpuset.mems" >"$1/cpuset.mems"
	fi
}

cleanup() {
	for dir in "${dirs[@]}"; do
		[ -d "$dir" ] || continue
		# Deepest first; anything still inside is left (and reported) rather than killed.
		find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || echo "left behind: $dir" >&2
	done
	rm -rf "$work"
}
trap cleanup EXIT
for dir in "${dirs[@]}"; do
	make_cgroup "$dir"
done

# One bats file for one runtime, in the private cgroup (a subshell moved there, then a new
# cgroup and mount namespace with cgroupfs mounted again), under script(1).
run_file() {
	local name=$1 bin=$2 file=$3 out=$4
	local sub="$name-$(basename "$file" .bats)"
	for dir in "${dirs[@]}"; do
		make_cgroup "$dir/$sub"
	done
	(
		for dir in "${dirs[@]}"; do
			echo "$BASHPID" >"$dir/$sub/cgroup.procs"
		done
		export -f cgroup_mounts
		exec unshare --cgroup --mount --propagation private bash -c '
			set -e
			# The hierarchies cannot be mounted again where they are (EBUSY): a new
			# /sys/fs/cgroup with each of them, and the symlinks it had (cpu -> cpu,cpuacct).
			mounts=$(cgroup_mounts)
			links=$(find /sys/fs/cgroup -maxdepth 1 -type l -printf "%f %l\n")
			mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
			while read -r mnt fstype super; do
				mkdir -p "$mnt"
				case $fstype in
				cgroup) opts=$(echo "$super" | tr , "\n" | grep -v "^rw$" | paste -sd,)
					mount -t cgroup -o "$opts" cgroup "$mnt" ;;
				cgroup2) mount -t cgroup2 cgroup2 "$mnt" ;;
				esac
			done <<<"$mounts"
			while read -r name target; do
				[ -z "$name" ] || ln -s "$target" "/sys/fs/cgroup/$name"
			done <<<"$links"
			cd "$1/tests/integration"
			RUNC="$2" timeout -k 10 "$3" script -qefc "bats --tap $(basename "$4")" /dev/null
		' run-file "$src" "$bin" "$timeout_s" "$file"
	) >"$out" 2>&1 </dev/null || true
	for dir in "${dirs[@]}"; do
		find "$dir/$sub" -depth -type d -exec rmdir {} + 2>/dev/null || echo "left behind: $dir/$sub" >&2
	done
}

# pass fail skip of a TAP log.
count() {
	local pass fail skip
	skip=$(grep -cE '^ok [0-9]+ .*# skip' "$1" || true)
	pass=$(($(grep -cE '^ok [0-9]+ ' "$1" || true) - skip))
	fail=$(grep -cE '^not ok [0-9]+ ' "$1" || true)
	echo "$pass $fail $skip"
}

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
	for f in "$src"/tests/integration/*.bats; do files+=("$(basename "$f")"); done
fi

table="$results/table.md"
{
	echo "| file | runc pass/fail/skip | nodectl pass/fail/skip |"
	echo "|---|---|---|"
} >"$table"
tr=(0 0 0) tn=(0 0 0)
for f in "${files[@]}"; do
	base=$(basename "$f" .bats)
	run_file runc "$runc_bin" "$f" "$results/runc-$base.tap"
	run_file nodectl "$work/nodectl-runtime" "$f" "$results/nodectl-$base.tap"
	read -r rp rf rs < <(count "$results/runc-$base.tap")
	read -r np nf ns < <(count "$results/nodectl-$base.tap")
	tr=($((tr[0] + rp)) $((tr[1] + rf)) $((tr[2] + rs)))
	tn=($((tn[0] + np)) $((tn[1] + nf)) $((tn[2] + ns)))
	echo "| $base | $rp/$rf/$rs | $np/$nf/$ns |" | tee -a "$table"
done
echo "| **total** | ${tr[0]}/${tr[1]}/${tr[2]} | ${tn[0]}/${tn[1]}/${tn[2]} |" >>"$table"
echo
cat "$table"
echo
echo "TAP logs and the table: $results"
