#!/usr/bin/env bash
# Benchmark of the HTTP relay: wrk against nginx directly and through
# `relay http serve` + `relay http client` on the same machine (127.0.0.1).
# Not a test: it prints numbers. Needs wrk and nginx (apt-get install -y wrk nginx-light)
# and a release build (cargo build --release -p relay-cli).
#
# usage: crates/http-relay/bench/http-relay-bench.sh [path/to/relay] [duration]
set -euo pipefail
RELAY=${1:-target/release/relay}
DURATION=${2:-10s}
WORK=$(mktemp -d /tmp/http-relay-bench.XXXX)
BACKEND_PORT=18181
RELAY_PORT=18182
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is required (apt-get install -y wrk)" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is required (apt-get install -y nginx-light)" >&2; exit 1; }

chmod 755 "$WORK"  # nginx workers run unprivileged and must read the files
mkdir -p "$WORK/www"
head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/www/1k"
head -c 1048576 /dev/urandom > "$WORK/www/1m"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        root $WORK/www;
        default_type application/octet-stream;
        keepalive_requests 1000000;
    }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$BACKEND_PORT/1k" && break; sleep 0.1; done
"$RELAY" http serve --port=$RELAY_PORT --bind=127.0.0.1 --log_level=4 2>"$WORK/server.log" & PIDS+=($!)

start_client() {
  "$RELAY" http client --backend_scheme=http --relay_scheme=http --log_level=4 \
    --backend_address=127.0.0.1:$BACKEND_PORT --relay_address=127.0.0.1:$RELAY_PORT \
    --server_name=bench --num_pending_requests="$1" 2>"$WORK/client-$1.log" &
  CLIENT_PID=$!
  PIDS+=($CLIENT_PID)
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$RELAY_PORT/client/bench/1k" && return 0
    sleep 0.1
  done
  echo "relay client did not come up" >&2; exit 1
}

run() { # label connections url
  local out
  out=$(wrk -t1 -c"$2" -d"$DURATION" --latency "$3")
  if grep -q "Non-2xx" <<<"$out"; then echo "error responses from $3:" >&2; echo "$out" >&2; exit 1; fi
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$rps" "$p50" "$p99"
}

echo "| path | connections | requests/s | p50 | p99 |"
echo "|---|---|---|---|---|"
for size in 1k 1m; do
  for c in 1 16; do
    run "direct nginx, $size" "$c" "http://127.0.0.1:$BACKEND_PORT/$size"
  done
done
for pollers in 1 16; do
  start_client "$pollers"
  for size in 1k 1m; do
    for c in 1 16; do
      run "relay ($pollers poller(s)), $size" "$c" "http://127.0.0.1:$RELAY_PORT/client/bench/$size"
    done
  done
  kill "$CLIENT_PID"; wait "$CLIENT_PID" 2>/dev/null || true
  sleep 0.5
done
