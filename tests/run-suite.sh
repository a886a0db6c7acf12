#!/usr/bin/env bash
# `make test`'s test run: every test binary of the crate (the lib's unit tests and each
# file under tests/), a few at a time, then the doc tests.
#   tests/run-suite.sh CARGO_FLAGS...          e.g. --profile testing --locked
#   NODECTL_TEST_JOBS=N                         binaries at once (default 3)
#
# Each binary already runs its tests on every core (--test-threads); most of a test's time
# is spent waiting (timers, daemons starting, the kernel), so binaries run side by side
# fill it. Files may run at once because each test makes what it needs under names of its
# own: state roots in temporary directories, and bridge names, CIDRs, namespaces and
# cgroups from a per-file prefix or base and the process id (tests/common).
#
# Each binary's output is printed whole when it ends, then a summary; the exit status is 1
# if any failed. Logs stay in target/test-logs.
set -u
cd "$(dirname "$0")/.."
jobs=${NODECTL_TEST_JOBS:-3}
cargo=${CARGO:-cargo}
logs=target/test-logs
rm -rf "$logs"
mkdir -p "$logs"

"$cargo" test "$@" --no-run --message-format=json-render-diagnostics > "$logs/build.json" || exit 1
# The test harnesses among the artifacts (a `"test":true` profile; a target's own
# `"test":true` only says it may have tests), by executable.
mapfile -t built < <(grep '"reason":"compiler-artifact"' "$logs/build.json" | grep '"profile":{[^}]*"test":true' \
  | grep -o '"executable":"[^"]*"' | sed 's/^"executable":"//; s/"$//')
if [ "${#built[@]}" -eq 0 ]; then
  echo "tests/run-suite.sh: cargo built no test binaries" >&2
  exit 1
fi

# The longest first, so that the last to start are short and the jobs end together. In
# order of their time on a 2-core machine; a binary not listed starts after these.
slow=(store_etcd cluster runtime store_etcd_tls pods join server_services_etcd
  server_nodelifecycle server_replicaset server_services daemon store_sqlite server_leader
  server_endpoints server_rbac server_api cluster_network daemon_gc)
ordered=()
for name in "${slow[@]}"; do
  for b in "${built[@]}"; do
    [ "$(basename "$b" | sed 's/-[0-9a-f]*$//')" = "$name" ] && ordered+=("$b")
  done
done
for b in "${built[@]}"; do
  case " ${ordered[*]} " in *" $b "*) ;; *) ordered+=("$b") ;; esac
done

run_one() {
  local bin=$1 logs=$2 name start rc
  name=$(basename "$bin")
  start=$(date +%s)
  "$bin" --test-threads="$(nproc)" > "$logs/$name.log" 2>&1
  rc=$?
  echo "$rc $(( $(date +%s) - start ))" > "$logs/$name.status"
  # One block per binary, never interleaved with another's.
  flock "$logs/.print" bash -c 'echo "==== $1 (exit $2)"; cat "$3"' _ "$name" "$rc" "$logs/$name.log"
}
export -f run_one
printf '%s\n' "${ordered[@]}" | xargs -d '\n' -P "$jobs" -I{} bash -c 'run_one "$1" "$2"' _ {} "$logs"

"$cargo" test "$@" --doc > "$logs/doc.log" 2>&1
doc=$?
cat "$logs/doc.log"

echo "==== test binaries (exit status, seconds):"
failed=0
for b in "${ordered[@]}"; do
  name=$(basename "$b")
  read -r rc secs 2>/dev/null < "$logs/$name.status" || { rc=missing; secs=-; }
  printf '  %-40s %s %s\n' "$name" "$rc" "$secs"
  [ "$rc" = 0 ] || failed=1
done
[ "$doc" = 0 ] || { echo "  doc tests failed"; failed=1; }
[ "$failed" = 0 ] && echo "all test binaries passed" || echo "FAILED: see above and $logs"
exit "$failed"
