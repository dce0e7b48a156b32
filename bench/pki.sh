#!/usr/bin/env bash
# Mints the benchmark PKI: an EC P-256 root CA, a server certificate for
# 127.0.0.1 and K device certificates with known serials, so that the store
# filler, the CRL maker and the load generator agree on who is who.
#
#   bench/pki.sh DIR [K] [CASN]   # K device certificates (default 32), CA serial
#                                 # CASN in hex (default 0ca1: a second PKI for
#                                 # the same store needs another)
#
# DIR/ca.crt ca.key                   root CA (CN=devcert bench CA)
# DIR/server.crt server.key           CN=localhost, SAN IP:127.0.0.1
# DIR/devices/dev-NNNN.crt .key       device i has serial 0x0d000000 + i
# DIR/devices/serials.txt             their canonical serials, one a line
#
# Device serials sit in their own range (0d......), apart from the synthetic
# serials that devcert_fill_store and devcert_make_crl generate (5a.../7b...),
# so a connecting device is never revoked or inactive by accident.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 || ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
dir=$1
count=${2:-32}
ca_serial=${3:-0ca1}
if ! [[ $count =~ ^[0-9]+$ ]] || ((count < 1 || count > 100000)); then
  echo "pki.sh: K must be a whole number from 1 to 100000, got '$count'" >&2
  exit 2
fi

if ! [[ $ca_serial =~ ^[0-9a-f]{1,40}$ ]]; then
  echo "pki.sh: CASN must be hexadecimal (lower case), got '$ca_serial'" >&2
  exit 2
fi
ca_cn="devcert bench CA"
[[ $ca_serial == 0ca1 ]] || ca_cn="devcert bench CA $ca_serial"

mkdir -p "$dir/devices"
cd "$dir"
days=3650

cat > ext-ca.cnf <<'CNF'
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
cat > ext-server.cnf <<'CNF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
cat > ext-device.cnf <<'CNF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

newkey ca.key
openssl req -new -x509 -key ca.key -subj "/O=devcert bench/CN=$ca_cn" -days $days \
  -set_serial "0x$ca_serial" -sha256 -extensions v3 -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[v3]\n%s\n' "$(cat ext-ca.cnf)") \
  -out ca.crt

newkey server.key
openssl req -new -key server.key -subj "/O=devcert bench/CN=localhost" -out server.csr
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 0x5e -days $days -sha256 \
  -extfile ext-server.cnf -out server.crt 2>/dev/null
rm -f server.csr

: > devices/serials.txt
for ((i = 1; i <= count; i++)); do
  name=$(printf 'dev-%04d' "$i")
  serial=$(printf '%08x' $((0x0d000000 + i)))
  newkey "devices/$name.key"
  openssl req -new -key "devices/$name.key" -subj "/O=devcert bench/CN=$name" -out "devices/$name.csr"
  openssl x509 -req -in "devices/$name.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$serial" -days $days \
    -sha256 -extfile ext-device.cnf -out "devices/$name.crt" 2>/dev/null
  rm -f "devices/$name.csr"
  echo "$serial" >> devices/serials.txt
done
rm -f ext-ca.cnf ext-server.cnf ext-device.cnf
echo "pki.sh: CA, server and $count device certificates in $PWD"
