#!/usr/bin/env bash
# The main job on a fresh machine, no manual steps: builds churnwatch, starts
# a local Kafka-protocol broker (tansu), runs `churnwatch run` against it,
# streams simulated member journeys into `member-events`, and shows the
# alerts and metrics. churnwatch then keeps running in the foreground
# (Ctrl-C stops it and the broker). QUICKSTART_EXIT=1 exits after the demo.
#
# Every run starts from an empty demo broker (data/quickstart-broker) and an
# empty churnwatch state (data/quickstart, config/quickstart.toml): a second
# run on the same checkout would otherwise produce the same journeys again,
# which churnwatch rightly takes as duplicates (no new alerts to show), with
# the first run's consumer group still on the broker. QUICKSTART_KEEP=1
# keeps both and resumes where the last run stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
members="${QUICKSTART_MEMBERS:-2000}"
broker_dir=data/quickstart-broker

bash scripts/ensure-deps.sh
bash scripts/ensure-tansu.sh
cargo build --release --locked
cw=target/release/churnwatch
# A broker an interrupted run left behind goes first, kept or not.
bash scripts/broker.sh stop "$broker_dir"
if [ "${QUICKSTART_KEEP:-0}" != 1 ]; then
  echo "== starting from an empty demo broker and state ($broker_dir, data/quickstart; QUICKSTART_KEEP=1 resumes instead)"
  rm -rf "$broker_dir" data/quickstart
fi
bash scripts/broker.sh start 9092 "$broker_dir"

pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  bash scripts/broker.sh stop "$broker_dir"
}
trap cleanup EXIT INT TERM

"$cw" run --config config/quickstart.toml &
pid=$!
for _ in $(seq 1 300); do
  if curl -fs http://127.0.0.1:9464/readyz >/dev/null 2>&1; then break; fi
  kill -0 "$pid" || { echo "churnwatch run exited" >&2; exit 1; }
  sleep 0.2
done
curl -fs http://127.0.0.1:9464/readyz

echo "== producing simulated journeys for $members members (1% bad lines)"
"$cw" simulate --members "$members" --bad-ratio 0.01 --duplicate-ratio 0.01 --brokers 127.0.0.1:9092

echo "== waiting for the pipeline to catch up and publish its alerts"
# Until nothing new is consumed and the outbox is empty (the alerts are on
# the broker): catching up on a burst can take tansu a minute or more.
metric_sum() {
  curl -fs http://127.0.0.1:9464/metrics \
    | awk -v n="$1" '{ split($1, a, "{") } a[1] == n { s += $2 } END { print s + 0 }'
}
last=-1
for _ in $(seq 1 300); do
  consumed=$(metric_sum churnwatch_events_consumed_total)
  depth=$(metric_sum churnwatch_outbox_depth)
  if [ "$consumed" != 0 ] && [ "$consumed" = "$last" ] && [ "$depth" = 0 ]; then break; fi
  last=$consumed
  sleep 1
done
echo "== a few alerts from churn-alerts"
"$cw" peek --brokers 127.0.0.1:9092 --topic churn-alerts --max 5
echo "== a few dead letters from member-events-dlq"
"$cw" peek --brokers 127.0.0.1:9092 --topic member-events-dlq --max 3
echo "== metrics (http://127.0.0.1:9464/metrics)"
curl -fs http://127.0.0.1:9464/metrics \
  | grep -E '^churnwatch_(alerts_published_total|events_rejected_total|events_consumed_total|outbox_depth|partitions_assigned)' \
  | grep -v ' 0$' || true

if [ "${QUICKSTART_EXIT:-0}" = 1 ]; then exit 0; fi
echo "== churnwatch is running: metrics at http://127.0.0.1:9464/metrics"
echo "== alerts as they arrive (more traffic: $cw simulate --brokers 127.0.0.1:9092 --rate 500); Ctrl-C stops everything"
"$cw" peek --brokers 127.0.0.1:9092 --topic churn-alerts --max 1000000000 --idle-secs 1000000000 &
peek=$!
trap 'kill "$peek" 2>/dev/null || true; cleanup' EXIT INT TERM
wait "$pid"
