#!/usr/bin/env bash
# Makes sure the tansu Kafka-protocol broker is installed (tests and the
# quickstart start it; see scripts/broker.sh). Building it takes ~16 minutes
# from scratch, so an existing binary is reused.
set -euo pipefail
if [ -n "${TANSU:-}" ] && [ -x "${TANSU}" ]; then exit 0; fi
if command -v tansu >/dev/null 2>&1; then exit 0; fi
if [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then exit 0; fi
echo "installing tansu (Kafka-protocol broker, one-off, ~16 min)..." >&2
cargo install tansu --locked --features libsql
