#!/usr/bin/env bash
# The whole test suite: unit tests, the replay CLI and scenario tests, the
# broker tests against a real tansu process each test starts itself, and the
# deploy/ checks (promtool rule tests, a live scrape, manifests against the
# binary's CLI). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
bash scripts/ensure-tansu.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo test --locked "$@"
echo "== deploy checks"
cargo build --locked --quiet --bin churnwatch
bash scripts/check-deploy.sh target/debug/churnwatch
