#!/usr/bin/env bash
# Chaos soak (not in CI; `cargo test` runs a two-minute version): for each
# seed, a real broker, three instances, traffic produced at a fixed rate,
# and on a seeded random schedule kill -9 (restart after the session
# timeout), broker restarts and SIGSTOP/SIGCONT pauses longer than the
# session timeout. Each run checks that every alert a replay of the produced
# events raises was published, no alert id has two contents, every bad event
# was dead-lettered, and the survivors' member export equals the replay's.
#
# Usage: bash scripts/soak.sh [SECONDS=600] [SEED...=1 2 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
shift || true
seeds=("$@")
[ "${#seeds[@]}" -gt 0 ] || seeds=(1 2 3)
bash scripts/ensure-deps.sh
bash scripts/ensure-tansu.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo build --locked --tests --quiet
for seed in "${seeds[@]}"; do
  echo "== soak seed $seed, $secs s"
  CHURNWATCH_SOAK_SECS="$secs" CHURNWATCH_SOAK_SEED="$seed" \
    cargo test --locked --quiet --test soak -- --nocapture 2>&1 \
    | grep -E '^soak|^  fault|test result|panicked|differ|never|not caught'
done
