#!/usr/bin/env bash
# Makes sure the tansu Kafka-protocol broker is installed (tests and the
# quickstart start it; see scripts/broker.sh), with both storage engines the
# tests use: SQLite (`libsql`: survives a broker restart) and memory
# (`dynostore`: auto-creates topics on metadata requests, as Apache Kafka's
# defaults do). Building it takes ~16 minutes from scratch, so an existing
# binary that has both is reused.
set -euo pipefail
tansu_bin() {
  if [ -n "${TANSU:-}" ] && [ -x "${TANSU}" ]; then echo "$TANSU"; return; fi
  if command -v tansu >/dev/null 2>&1; then command -v tansu; return; fi
  local b="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
  if [ -x "$b" ]; then echo "$b"; fi
}
# A build without a storage feature exits at once when asked for it.
has_storage() {
  local bin="$1" url="$2" port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local dir; dir=$(mktemp -d)
  ( cd "$dir" && timeout 2 "$bin" broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine "$url" \
      >/dev/null 2>&1 ); local rc=$?
  rm -rf "$dir"
  [ "$rc" = 124 ]
}
bin="$(tansu_bin)"
if [ -n "$bin" ] && has_storage "$bin" "memory://tansu/" && has_storage "$bin" "sqlite://tansu.db"; then
  exit 0
fi
echo "installing tansu with SQLite and memory storage (Kafka-protocol broker, one-off, ~16 min)..." >&2
cargo install tansu --locked --force --features libsql,dynostore
