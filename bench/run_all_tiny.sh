#!/usr/bin/env bash
# Runs every benchmark once at a tiny size so that none of them can rot. It
# builds nothing: give it a build directory where the bench targets, the
# plugin and devcertctl are built. It asserts no timings; it fails only if a
# benchmark fails to run, or if the soak sees a wrong outcome or growth.
#
#   bench/run_all_tiny.sh [BUILD_DIR]      # default: build
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
python=/usr/bin/python3

work=$(mktemp -d /tmp/devcert-tiny-XXXXXX)
trap 'rm -rf "$work"' EXIT

step() { echo "== bench (tiny): $*"; }
# A step that hangs fails within its bound, naming itself, instead of
# holding up whatever runs this script.
bounded() {  # SECONDS COMMAND...
  local limit=$1 rc=0
  shift
  timeout -k 20 "$limit" "$@" || rc=$?
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    echo "did not finish within $limit s: $*" >&2
  fi
  return "$rc"
}

step "bad arguments: exit 2 with one line naming the flag"
expect_usage_error() {  # FRAGMENT COMMAND...
  local fragment=$1 out rc=0
  shift
  out=$("$@" 2>&1 >/dev/null) || rc=$?
  if [[ $rc -ne 2 || $out != *"$fragment"* || $(wc -l <<<"$out") -ne 1 ]]; then
    echo "expected exit 2 and one line with '$fragment' from: $*" >&2
    echo "got exit $rc: $out" >&2
    exit 1
  fi
}
expect_usage_error "--count needs a value" "$build/bench/devcert_make_crl" --count
expect_usage_error "--days: expected a whole number from 1 to 36500, got '0'" "$build/bench/devcert_make_crl" --days 0
expect_usage_error "--ca, --key, --count and --out are all required" "$build/bench/devcert_make_crl" --count 5
expect_usage_error "unknown argument '--bogus'" "$build/bench/devcert_fill_store" --bogus
expect_usage_error "--count: expected a whole number" "$build/bench/devcert_fill_store" --count -1
expect_usage_error "--port: expected a whole number from 1 to 65535, got '70000'" "$build/bench/devcert_loadgen" --port 70000
expect_usage_error "--certs needs a value" "$build/bench/devcert_loadgen" --port 1 --certs
expect_usage_error "--sessions: expected a whole number" "$build/bench/devcert_hold_sessions" --port 1 --sessions x
expect_usage_error "--sessions is required" "$build/bench/devcert_hold_sessions" --port 1 --certs /nonexistent
expect_usage_error "--keepalive: expected a whole number from 1 to 65535, got '0'" "$build/bench/devcert_hold_sessions" --keepalive 0
expect_usage_error "--source: expected an IPv4 address in 127.0.0.0/8, got '10.0.0.2'" "$build/bench/devcert_hold_sessions" --source 10.0.0.2
expect_usage_error "--source: expected an IPv4 address in 127.0.0.0/8, got 'localhost'" "$build/bench/devcert_hold_sessions" --source localhost
expect_usage_error "--sessions: expected counts separated by commas" "$python" "$here/many_sessions.py" --sessions 1,x
expect_usage_error "--seconds: expected a number above 0" "$python" "$here/many_sessions.py" --seconds 0

step "PKI"
"$here/pki.sh" "$work/pki" 4 >/dev/null

step "devcert_make_crl"
"$build/bench/devcert_make_crl" --ca "$work/pki/ca.crt" --key "$work/pki/ca.key" --count 100 --out "$work/crl.pem" >/dev/null
openssl crl -in "$work/crl.pem" -noout -CAfile "$work/pki/ca.crt" 2>/dev/null

step "devcert_fill_store"
"$build/bench/devcert_fill_store" --db "$work/store" --ca "$work/pki/ca.crt" --devices "$work/pki/devices" \
  --count 1000 --batch 300 2>/dev/null

step "devcert_delete_ca_bench (on a copy of the filled store)"
cp -r "$work/store" "$work/store-delete"
"$build/bench/devcert_delete_ca_bench" --db "$work/store-delete" >/dev/null

step "devcert_micro_bench (temporary store, then the filled one)"
"$build/bench/devcert_micro_bench" --records=500 --pki="$work/pki" --benchmark_min_time=0.001 >/dev/null
"$build/bench/devcert_micro_bench" --db="$work/store" --pki="$work/pki" --benchmark_min_time=0.001 \
  --benchmark_filter='Status|ConnectionCheck' >/dev/null

step "devcert_loadgen and run_connections.py"
bounded 900 "$python" "$here/run_connections.py" --build "$build" --tiny --work "$work/connections"

if [[ -f "$here/admin_bench.py" ]]; then
  step "admin_bench.py"
  bounded 600 "$python" "$here/admin_bench.py" --build "$build" --tiny --work "$work/admin"
fi
step "fleet_bench.py (a durable PostgreSQL, every fleet scenario once at a tiny size)"
bounded 600 "$python" "$here/fleet_bench.py" --build "$build" --tiny --work "$work/fleet" >/dev/null

step "many_sessions.py (N = 0 and 50, 1 s phases)"
bounded 600 "$python" "$here/many_sessions.py" --build "$build" --tiny --work "$work/many" >/dev/null

step "soak.py (45 s: churn, admin calls, RSS and descriptors; fails on a wrong outcome or growth)"
bounded 300 "$python" "$here/soak.py" --build "$build" --seconds 45 --work "$work/soak" >/dev/null

echo "== bench (tiny): all ran"
