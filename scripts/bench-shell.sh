#!/usr/bin/env bash
# B6: TCP through the shell relay (shell client → relay → shell host) against direct
# loopback, in the same run: 1-byte echo round trip and bulk throughput.
# Usage: scripts/bench-shell.sh [runs]   (prints a markdown table; not a test)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cargo build --release -q -p relay-cli
cargo build --release -q -p relay-shell --example tcp_probe
BIN=${CARGO_TARGET_DIR:-target}/release
RELAY=$BIN/relay
PROBE=$BIN/examples/tcp_probe
SECRET=bench-secret
pick() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PA=$(pick); PR=$(pick); PS=$(pick); PC=$(pick)
ACCESS=http://127.0.0.1:$PA
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 not open" >&2; exit 1; }
tok() { RELAY_TOKEN_AUDIENCE=$ACCESS RELAY_TOKEN_SECRET=$SECRET RELAY_TOKEN_LIFETIME=3600 RELAY_TOKEN_TOPIC=bench $RELAY token --role "$1"; }

$PROBE serve "$PS" & pids+=($!)
RELAY_AUDIENCE=$ACCESS RELAY_URL=ws://127.0.0.1:$PR RELAY_SECRET=$SECRET RELAY_PORT_ACCESS=$PA RELAY_PORT_RELAY=$PR \
  RELAY_BIND=127.0.0.1 RELAY_LOG_FILE=stderr $RELAY serve 2>/dev/null & pids+=($!)
wait_port "$PS"; wait_port "$PA"
SHELLHOST_RELAYSESSION=$ACCESS/shell/bench SHELLHOST_TOKEN=$(tok host) SHELLHOST_LOCALPORT=$PS \
  $RELAY shell host 2>/dev/null & pids+=($!)
SHELLCLIENT_RELAYSESSION=$ACCESS/shell/bench SHELLCLIENT_TOKEN=$(tok client) SHELLCLIENT_LOCALPORT=$PC \
  $RELAY shell client 2>/dev/null & pids+=($!)
wait_port "$PC"
# The host's management connection comes up asynchronously: wait until the tunnel answers.
for _ in $(seq 50); do $PROBE rtt 127.0.0.1:$PC 1 >/dev/null 2>&1 && break; sleep 0.2; done

echo "| run | path | 1-byte RTT p50 µs | p99 µs | max µs | 256 MiB throughput Mbit/s |"
echo "|---|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
  for path in direct relay; do
    port=$PS; [ "$path" = relay ] && port=$PC
    r=$($PROBE rtt 127.0.0.1:$port 2000)
    t=$($PROBE throughput 127.0.0.1:$port 256)
    p50=$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$r"); p99=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$r"); mx=$(sed -E 's/.*max_us=([0-9]+).*/\1/' <<<"$r")
    mb=$(sed -E 's/mbit_s=([0-9]+).*/\1/' <<<"$t")
    echo "| $run | $path | $p50 | $p99 | $mx | $mb |"
  done
done
