#!/usr/bin/env bash
# Fails when the plugin module needs a mosquitto_* function that a make-built
# broker does not export. Such a broker links with --dynamic-list=linker.syms,
# so any other function makes dlopen fail with "undefined symbol" -- while
# Debian's package and CMake builds export everything and hide the mistake.
#
#   check_broker_symbols.sh MODULE ALLOWED_LIST
set -euo pipefail
module=$1
allowed=$2
[[ -f $module ]] || { echo "no module at '$module'" >&2; exit 1; }

needed=$(nm -D --undefined-only "$module" | awk '{print $NF}' | sed 's/@.*//' | grep '^mosquitto_' | sort -u || true)
listed=$(grep -v '^#' "$allowed" | grep -v '^[[:space:]]*$' | sort -u)
outside=$(comm -23 <(printf '%s\n' "$needed" | grep -v '^$' || true) <(printf '%s\n' "$listed"))

echo "broker functions the module calls:"
printf '  %s\n' $needed
if [[ -n $outside ]]; then
  echo "FAIL: not exported by a make-built mosquitto 2.0 (see $allowed):" >&2
  printf '  %s\n' $outside >&2
  exit 1
fi
# The three entry points and nothing else of ours may be exported.
exported=$(nm -D --defined-only "$module" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sed 's/@.*//' | sort -u)
expected=$(printf '%s\n' mosquitto_plugin_cleanup mosquitto_plugin_init mosquitto_plugin_version)
if [[ $exported != "$expected" ]]; then
  echo "FAIL: the module exports more or less than the three entry points:" >&2
  printf '  %s\n' $exported >&2
  exit 1
fi
echo "ok: every broker function is in the 2.0 linker.syms set"
