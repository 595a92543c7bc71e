#!/usr/bin/env bash
# Checks deploy/ with the real tools available without Docker or Kubernetes:
# promtool (rules, rule unit tests, Prometheus config, a live scrape), the
# churnwatch binary itself (CLI arguments and config files of the compose
# file and the manifests), PyYAML and the dashboard checker.
# Usage: bash scripts/check-deploy.sh [path/to/churnwatch]
# (CHECK_DEPLOY_WRITE=1 also regenerates deploy/k8s/prometheusrule.yaml from rules.yml)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/churnwatch}"
[ -x "$bin" ] || cargo build --locked --quiet --bin churnwatch
work="$(mktemp -d)"
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

# A python with PyYAML (Debian's python3-yaml serves /usr/bin/python3).
py=""
for cand in python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import yaml' 2>/dev/null; then py="$cand"; break; fi
done
if [ -z "$py" ]; then
  python3 -m pip install --quiet --user pyyaml && py=python3
fi

echo "== promtool check rules / test rules"
promtool check rules deploy/prometheus/rules.yml
promtool test rules deploy/prometheus/rules_test.yml

echo "== promtool check config (compose's prometheus.yml, rule path mapped to the repo)"
sed "s#/etc/prometheus/rules.yml#$PWD/deploy/prometheus/rules.yml#" \
  deploy/prometheus/prometheus.yml > "$work/prometheus.yml"
promtool check config "$work/prometheus.yml"

echo "== scrape a running churnwatch (brokers unreachable: metrics still served, /readyz 503)"
port=$(( 20000 + RANDOM % 20000 ))
CHURNWATCH_KAFKA_BROKERS=127.0.0.1:1 CHURNWATCH_STATE_DIR="$work/state" \
  CHURNWATCH_HTTP_LISTEN="127.0.0.1:$port" "$bin" run >"$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/metrics" -o "$work/metrics.txt" && break
  sleep 0.1
done
ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")
health=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")
[ "$ready" = 503 ] || { echo "readyz answered $ready without a broker, want 503"; exit 1; }
[ "$health" = 200 ] || { echo "healthz answered $health, want 200"; exit 1; }
promtool check metrics < "$work/metrics.txt"
echo "scrape: $(grep -c '^# TYPE churnwatch_' "$work/metrics.txt") metric families; readyz $ready, healthz $health"
kill -TERM "$pid"; wait "$pid" || { echo "churnwatch run exited non-zero on SIGTERM"; cat "$work/run.log"; exit 1; }
pid=""

echo "== dashboard"
"$py" scripts/check-dashboard.py

echo "== compose, Kubernetes manifests, Dockerfile"
"$py" scripts/check_deploy.py --binary "$bin" --metrics "$work/metrics.txt" ${CHECK_DEPLOY_WRITE:+--write}
