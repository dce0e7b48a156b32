#!/usr/bin/env bash
# Builds mosquitto-devcert_<version>_<arch>.deb from the build tree, installs
# it with dpkg, checks that installing changed nothing of the broker's own
# (configuration untouched, no broker restarted), runs Debian's broker with
# the installed module and the installed devcertctl, then purges the package
# and checks that none of its files is left. Needs root (dpkg); exits 77
# (skipped) without it, or when the package is already installed (the
# machine's own installation is not touched).
#
#   test_package.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)

if [[ $(id -u) -ne 0 ]]; then
  echo "SKIPPED: installing a package needs root"
  exit 77
fi
if dpkg-query -W -f='${Status}' mosquitto-devcert 2>/dev/null | grep -q "installed"; then
  echo "SKIPPED: mosquitto-devcert is already installed on this machine; not touching it"
  exit 77
fi

work=$(mktemp -d /tmp/devcert-package.XXXXXX)
installed=0
cleanup() {
  if ((installed)); then dpkg --purge mosquitto-devcert >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building the package"
(cd "$build" && cpack -G DEB -B "$work/out" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log"; exit 1; }
deb=$(ls "$work"/out/mosquitto-devcert_*_*.deb)
echo "built $(basename "$deb")"
[[ $(basename "$deb") =~ ^mosquitto-devcert_[0-9][^_]*_amd64\.deb$ ]]

arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
module=/usr/lib/$arch/mosquitto/mosquitto_devcert.so
dropin=/usr/lib/systemd/system/mosquitto.service.d/mosquitto-devcert.conf
files=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\.||')
for f in "$module" /usr/bin/devcertctl /usr/share/doc/mosquitto-devcert/mosquitto.conf.example \
         /usr/share/doc/mosquitto-devcert/operations.md /usr/share/doc/mosquitto-devcert/copyright "$dropin"; do
  grep -qx "$f" <<<"$files" || { echo "FAIL: the package lacks $f"; exit 1; }
done

if command -v lintian >/dev/null; then
  echo "== lintian"
  # Errors fail the test; warnings are listed (a CPack-built package has no
  # changelog.Debian or Debian copyright format).
  lintian --tag-display-limit 0 "$deb" >"$work/lintian.txt" 2>&1 || true
  cat "$work/lintian.txt"
  if grep -q '^E:' "$work/lintian.txt"; then echo "FAIL: lintian errors"; exit 1; fi
fi

echo "== installing"
etc_before=$(find /etc/mosquitto -type f -exec md5sum {} + 2>/dev/null | sort || true)
# The machine's own broker (Debian's service), not brokers of other tests.
brokers_before=$(pgrep -f '^/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf$' | sort || true)
dpkg -i "$deb" >"$work/dpkg-install.log" 2>&1 || { cat "$work/dpkg-install.log"; exit 1; }
installed=1
[[ -f $module && -x /usr/bin/devcertctl && -f $dropin ]]
grep -q 'GLIBC_TUNABLES=glibc.malloc.tcache_count=512' "$dropin"
grep -q 'RuntimeDirectory=mosquitto' "$dropin"
etc_after=$(find /etc/mosquitto -type f -exec md5sum {} + 2>/dev/null | sort || true)
[[ $etc_before == "$etc_after" ]] || { echo "FAIL: installing changed /etc/mosquitto"; exit 1; }
# The system broker that ran before still runs, with the same process id.
for pid in $brokers_before; do
  kill -0 "$pid" 2>/dev/null || { echo "FAIL: broker $pid stopped while installing"; exit 1; }
done
/usr/bin/devcertctl --help >/dev/null

echo "== the installed broker, module and devcertctl"
DEVCERT_PLUGIN=$module DEVCERTCTL=/usr/bin/devcertctl DEVCERT_MOSQUITTO=/usr/sbin/mosquitto \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider "$here/test_installed.py"

echo "== removing"
dpkg -r mosquitto-devcert >"$work/dpkg-remove.log" 2>&1 || { cat "$work/dpkg-remove.log"; exit 1; }
dpkg --purge mosquitto-devcert >>"$work/dpkg-remove.log" 2>&1 || { cat "$work/dpkg-remove.log"; exit 1; }
installed=0
if dpkg-query -W -f='${Status}' mosquitto-devcert 2>/dev/null | grep -q "installed"; then
  echo "FAIL: still known to dpkg after purge"; exit 1
fi
left=0
while read -r f; do
  [[ -z $f || $f == */ ]] && continue
  if [[ -e $f ]]; then echo "FAIL: left behind: $f"; left=1; fi
done <<<"$files"
for d in /usr/lib/$arch/mosquitto /usr/lib/systemd/system/mosquitto.service.d /usr/share/doc/mosquitto-devcert; do
  if [[ -d $d ]] && [[ -z $(ls -A "$d") ]]; then echo "FAIL: empty directory left behind: $d"; left=1; fi
done
((left == 0))
etc_final=$(find /etc/mosquitto -type f -exec md5sum {} + 2>/dev/null | sort || true)
[[ $etc_before == "$etc_final" ]] || { echo "FAIL: /etc/mosquitto differs after removal"; exit 1; }
echo "package test passed"
