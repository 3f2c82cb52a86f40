#!/usr/bin/env bash
# Everything a fresh Debian machine needs: system packages the tests and the local runtime use, then npm ci.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pair in curl:curl python3:python3 openssl:openssl ip:iproute2 bwrap:bubblewrap iptables:iptables nsenter:util-linux setpriv:util-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing ${need[*]}; install them (apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm run build --silent
fi
