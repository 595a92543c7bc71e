#!/usr/bin/env bash
# Installs the Debian packages a fresh machine with only the Rust toolchain
# lacks (skipped when all are present), so the README's two commands work
# with no manual step:
#   clang, libclang-dev      RocksDB bindings (bindgen)
#   cmake, pkg-config,
#   libssl-dev               librdkafka
#   prometheus               promtool: alert-rule tests, metrics format check
#   python3, python3-yaml    contract checker, deploy checks
#   curl                     quickstart and deploy checks talk to /metrics
#   chromium                 renders `report --html` in tests/members_cli.rs
set -euo pipefail
need=()
for p in clang libclang-dev cmake pkg-config libssl-dev prometheus python3 python3-yaml curl chromium; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
[ "${#need[@]}" -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing Debian packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
