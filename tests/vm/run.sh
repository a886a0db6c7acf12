#!/usr/bin/env bash
# make vm-test: prove the cgroup v2 driver and AppArmor where they can be seen working.
# This machine's cgroups are hybrid (v1 for cpu, memory and pids) and its kernel has no
# AppArmor, so we boot Debian's 6.1 kernel in qemu (TCG) on a pure cgroup2 hierarchy with an
# initramfs of busybox-static, Debian's apparmor_parser and our binary, run containers there
# that memory.max, pids.max, cpu.max and io.max must stop and AppArmor profiles must confine,
# and check what the guest prints.
#   tests/vm/run.sh [WORK_DIR [BINARY]]   (default target/vm, the kernel downloaded once;
#   default binary target/release/nodectl, `make test` gives its own build's)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
work=${1:-$top/target/vm}
bin=$(realpath "${2:-$top/target/release/nodectl}")
mkdir -p "$work"

if [ ! -f "$work/vmlinuz" ]; then
  pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1)
  [ -n "$pkg" ] || { echo "vm-test: no linux-image-6.1.0-*-amd64 package in apt's lists" >&2; exit 1; }
  (cd "$work" && rm -f ./*.deb && apt-get download "$pkg" 2>/dev/null)
  rm -rf "$work/kernel" && dpkg-deb -x "$work"/*.deb "$work/kernel"
  cp "$work"/kernel/boot/vmlinuz-* "$work/vmlinuz"
fi

root=$work/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,run,newroot,t}
cp /bin/busybox "$root/bin/busybox"
objcopy --strip-debug "$bin" "$root/bin/nodectl"
ln -s nodectl "$root/bin/nodectl-runtime"
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# AppArmor's parser, to load the profile the apparmor container runs under (it needs only
# libc, copied above for our binary).
if [ ! -x "$work/apparmor/sbin/apparmor_parser" ]; then
  (cd "$work" && rm -f apparmor_*.deb && apt-get download apparmor 2>/dev/null)
  rm -rf "$work/apparmor" && dpkg-deb -x "$work"/apparmor_*.deb "$work/apparmor"
fi
cp "$work/apparmor/sbin/apparmor_parser" "$root/sbin/apparmor_parser"
cat > "$root/nodectl-vmtest.profile" <<'PROFILE'
profile nodectl-vmtest flags=(attach_disconnected,mediate_deleted) {
  file,
  capability,
  signal,
  unix,
  network,
  deny /proc/cmdline r,
}
PROFILE
# A RAM disk (/dev/ram0, 1:0) for io.max to throttle.
cp "$(ls "$work"/kernel/lib/modules/*/kernel/drivers/block/brd.ko | head -1)" "$root/brd.ko"
cp "$here/init" "$root/init"
chmod +x "$root/init"

# One busybox root filesystem for the three containers.
rootfs=$root/rootfs
mkdir -p "$rootfs"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$rootfs/bin/busybox"
for a in sh yes head cat echo sleep true seq dd cut tr; do ln -s busybox "$rootfs/bin/$a"; done

spec() { # NAME JQ-FILTER
  mkdir -p "$root/t/$1"
  "$bin" runtime spec --bundle "$root/t/$1" >/dev/null
  jq --arg name "$1" '.root.path = "/rootfs" | .process.terminal = false | .root.readonly = true | '"$2" \
    "$root/t/$1/config.json" > "$root/t/$1/config.json.new"
  mv "$root/t/$1/config.json.new" "$root/t/$1/config.json"
}
spec mem '.process.args = ["sh", "-c", "a=$(yes | head -c 67108864); echo survived"] | .linux.resources.memory = {"limit": 20971520, "swap": 20971520}'
spec pids '.process.args = ["sh", "-c", "for i in $(seq 20); do sleep 30 & done; echo started"] | .linux.resources.pids = {"limit": 10}'
spec cpu '.process.args = ["sh", "-c", "while :; do :; done"] | .linux.resources.cpu = {"quota": 20000, "period": 100000} | .linux.resources.memory = {"reservation": 8388608, "swappiness": 10}'

# io.max on the RAM disk (4 MiB read at 1 MiB/s), a 2MB huge page limit and a raw unified
# file; then the limits v2 has no controller for, or the host no device for.
spec io '.process.args = ["sh", "-c", "echo iomax=$(tr \" \" , < /sys/fs/cgroup/io.max) huge=$(cat /sys/fs/cgroup/hugetlb.2MB.max) pids=$(cat /sys/fs/cgroup/pids.max); s=$(cut -d\" \" -f1 /proc/uptime); dd if=/dev/ram0 of=/dev/null bs=64k count=64 iflag=direct 2>/dev/null; e=$(cut -d\" \" -f1 /proc/uptime); echo elapsed_cs=$(( ${e%.*}${e#*.} - ${s%.*}${s#*.} ))"] | .linux.devices += [{"path": "/dev/ram0", "type": "b", "major": 1, "minor": 0, "fileMode": 432}] | .linux.resources.devices += [{"allow": true, "type": "b", "major": 1, "minor": 0, "access": "r"}] | .linux.resources.blockIO = {"throttleReadBpsDevice": [{"major": 1, "minor": 0, "rate": 1048576}]} | .linux.resources.hugepageLimits = [{"pageSize": "2MB", "limit": 4194304}] | .linux.resources.unified = {"pids.max": "7"}'
# Device rules on v2 (an eBPF filter): the same RAM disk without an access rule cannot be
# read (it is listed in linux.devices, so it may be made), a disk that is not listed cannot
# even be made with CAP_MKNOD, and /dev/null still works.
spec devdeny '.process.args = ["sh", "-c", "dd if=/dev/ram0 of=/dev/null bs=4k count=1 2>/dev/null && echo read || echo read-denied; mknod /dev/x b 8 0 2>/dev/null && echo mknod || echo mknod-denied; echo hi > /dev/null && echo null-ok"] | .linux.devices += [{"path": "/dev/ram0", "type": "b", "major": 1, "minor": 0, "fileMode": 432}] | .process.capabilities |= with_entries(.value += ["CAP_MKNOD"])'
spec netcls '.process.args = ["true"] | .linux.resources.network = {"classID": 1}'
spec rdma '.process.args = ["true"] | .linux.resources.rdma = {"nodectl_test0": {"hcaHandles": 1}}'
spec aa '.process.args = ["sh", "-c", "cat /proc/self/attr/current; cat /proc/cmdline > /dev/null 2>&1 && echo read || echo denied"] | .process.apparmorProfile = "nodectl-vmtest"'
# With CAP_SYS_ADMIN a container may mount, unless its profile says no: nodectl-default does.
sysadmin='.process.capabilities |= with_entries(.value += ["CAP_SYS_ADMIN"])'
spec aadef '.process.args = ["sh", "-c", "cat /proc/self/attr/current; mount -t tmpfs none /tmp 2>/dev/null && echo mounted || echo mount-denied; ls /sys/kernel/ > /dev/null && echo sys-read"] | .process.apparmorProfile = "nodectl-default" | '"$sysadmin"
spec aanone '.process.args = ["sh", "-c", "mount -t tmpfs none /tmp 2>/dev/null && echo mounted || echo mount-denied"] | '"$sysadmin"
spec aaexec '.process.args = ["sleep", "60"] | .process.apparmorProfile = "nodectl-vmtest"'

(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$work/initramfs.gz"

echo "vm-test: booting $(basename "$(ls "$work"/kernel/boot/vmlinuz-*)") under qemu (TCG)"
timeout 900 qemu-system-x86_64 -accel tcg -m 1536 -smp 2 -nographic -no-reboot \
  -kernel "$work/vmlinuz" -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 quiet panic=-1 rdinit=/init apparmor=1 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" \
  < /dev/null > "$work/console.log" 2>&1 || true
# The firmware's escape sequences may share a line with the first result.
tr -d '\r' < "$work/console.log" | grep -ao 'VMTEST.*' | tee "$work/results"

fail() { echo "vm-test: FAILED: $*" >&2; echo "(console: $work/console.log)" >&2; exit 1; }
r=$(cat "$work/results")
grep -q '^VMTEST done' <<<"$r" || fail "the guest did not finish"
grep -q 'controllers:.*memory' <<<"$r" || fail "no cgroup2 memory controller"
grep -q '^VMTEST mem rc=137 oom_reported=1' <<<"$r" || fail "memory.max did not end in a reported OOM kill (137)"
f=$(sed -n 's/^VMTEST pids rc=[0-9]* fork_failures=\([0-9]*\)/\1/p' <<<"$r")
[ "${f:-0}" -ge 1 ] || fail "pids.max let the forks through"
usage=$(sed -n 's/^VMTEST cpu usage_ns=\([0-9]*\) .*/\1/p' <<<"$r")
wall=$(sed -n 's/^VMTEST cpu usage_ns=[0-9]* wall_cs=\([0-9]*\)/\1/p' <<<"$r")
# usage / wall as a percentage of one cpu: the quota is 20%.
pct=$(( usage / (wall * 100000) ))
echo "vm-test: busy loop under cpu.max 20000/100000 used ${pct}% of a cpu"
[ "$pct" -ge 10 ] && [ "$pct" -le 30 ] || fail "cpu.max did not hold the loop near 20% (got ${pct}%)"
grep -q '^VMTEST cpu_max 20000 100000' <<<"$r" || fail "cpu.max was not set"
grep -q '^VMTEST memory_low 8388608' <<<"$r" || fail "memory.reservation did not become memory.low"
grep -q '^VMTEST io rc=0 iomax=1:0,rbps=1048576,wbps=max,riops=max,wiops=max huge=4194304 pids=7 elapsed_cs=' <<<"$r" \
  || fail "io.max, hugetlb.2MB.max or a unified file was not set"
cs=$(sed -n 's/^VMTEST io .* elapsed_cs=\([0-9]*\).*/\1/p' <<<"$r")
echo "vm-test: 4 MiB read under io.max rbps=1MiB/s took ${cs}0 ms"
# A lower bound only: the throttle cannot make the read faster; unthrottled it takes ms.
[ "${cs:-0}" -ge 200 ] || fail "io.max did not slow the read (took ${cs}0 ms)"
grep -q '^VMTEST devices: read-denied mknod-denied null-ok$' <<<"$r" || fail "the v2 device filter let a device without a rule through"
grep -q '^VMTEST netcls rc=1 .*net_cls' <<<"$r" || fail "network.classID was not refused naming net_cls on v2"
grep -q '^VMTEST rdma rc=1 .*rdma.max' <<<"$r" || fail "rdma for a missing device was not refused naming rdma.max"
grep -q '^VMTEST apparmor loaded=0$' <<<"$r" || fail "apparmor_parser did not load the test profile"
grep -q '^VMTEST apparmor run: nodectl-vmtest (enforce) denied$' <<<"$r" || fail "process.apparmorProfile was not applied (or its deny rule did not hold)"
grep -q '^VMTEST apparmor exec: nodectl-vmtest (enforce)$' <<<"$r" || fail "exec did not inherit the container's AppArmor profile"
grep -q '^VMTEST apparmor default loaded=0$' <<<"$r" || fail "nodectl apparmor-profile --load did not load nodectl-default"
grep -q '^VMTEST apparmor none: mounted$' <<<"$r" || fail "a container with CAP_SYS_ADMIN and no profile could not mount"
grep -q '^VMTEST apparmor default: nodectl-default (enforce) mount-denied sys-read$' <<<"$r" \
  || fail "nodectl-default did not confine the container as it should"
grep -q '^VMTEST nesting: ./nodectl ./nodectl-init $' <<<"$r" \
  || fail "nodectl took the leaf its processes were moved to for its own cgroup (containers nested below it)"
grep -q '^VMTEST leftovers: 0 containers, 0 cgroups' <<<"$r" || fail "containers or cgroups left behind"
echo "vm-test: passed"
