#!/usr/bin/env bash
# A local Kafka-protocol broker (tansu) for the quickstart and manual runs.
#   scripts/broker.sh start [PORT] [DIR]   start in the background (default 9092, .tansu)
#   scripts/broker.sh stop [DIR]
#   scripts/broker.sh status [DIR]
# Messages and committed offsets persist in DIR/tansu.db across restarts.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="${1:-start}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
tansu="${TANSU:-tansu}"
case "$cmd" in
  start)
    port="${2:-9092}"; dir="${3:-.tansu}"
    bash scripts/ensure-tansu.sh
    mkdir -p "$dir"
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "broker already running (pid $(cat "$dir/pid"))"; exit 0
    fi
    # tansu resolves the sqlite path against its working directory.
    (cd "$dir" && exec nohup "$tansu" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "sqlite://tansu.db" >broker.log 2>&1) &
    echo $! >"$dir/pid"
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "broker listening on 127.0.0.1:$port (pid $(cat "$dir/pid"), log $dir/broker.log)"; exit 0
      fi
      sleep 0.1
    done
    echo "broker did not start; see $dir/broker.log" >&2; exit 1 ;;
  stop)
    # Waits for the broker to exit (a busy tansu can take a while to stop
    # on SIGTERM; after 10 s it is killed), so a start right after finds
    # the port and the database free.
    dir="${2:-.tansu}"
    if [ -f "$dir/pid" ]; then
      pid="$(cat "$dir/pid")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "broker (pid $pid) did not stop on SIGTERM within 10 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
      rm -f "$dir/pid"
    fi ;;
  status)
    dir="${2:-.tansu}"
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "running (pid $(cat "$dir/pid"))"
    else
      echo "not running"; exit 3
    fi ;;
  *) echo "usage: $0 start [PORT] [DIR] | stop [DIR] | status [DIR]" >&2; exit 2 ;;
esac
