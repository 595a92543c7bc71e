#!/usr/bin/env bash
# The whole test suite: unit tests, the replay CLI and scenario tests, and the
# broker tests against a real tansu process each test starts itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-tansu.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo test --locked "$@"
