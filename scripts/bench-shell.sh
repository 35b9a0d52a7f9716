#!/usr/bin/env bash
# B6: TCP through the shell relay (shell client → relay → shell host) against direct
# loopback and against peer TCP tunnels, all to the same probe server, in the same run and
# the same loop: 1-byte echo round trip, bulk throughput, and the tunnel processes' RSS.
# Usage: scripts/bench-shell.sh [runs]   (prints a markdown table; not a test)
#
# Peers (each optional but loud: a missing one gets a "not installed" row):
# - websocat: TCP over one websocket per connection, like ours, in 2 processes
#   (ws-l server + tcp-l client) instead of our 3 (shell client, relay, shell host).
# - bore (bore-cli): plain TCP reverse tunnel, no websocket framing: a control connection
#   plus one extra TCP connection to the server per tunnelled connection.
# - wstunnel: erebe's Rust wstunnel is not on crates.io (it ships as GitHub release
#   binaries, which this workplace cannot fetch), so `cargo install` fails at once; the
#   `wstunnel` on npm/PyPI are unrelated older programs. The script still tries the
#   install and uses a `wstunnel` binary found on PATH (v7+ command line, untested here).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
echo "uptime at start: $(uptime)"

# Install missing peers with cargo's own temporary target dir (not the bench's).
install_peer() { # binary crate
  command -v "$1" >/dev/null && return 0
  echo "installing $2 (for $1) ..." >&2
  env -u CARGO_TARGET_DIR cargo install --locked -q "$2" >&2 || echo "cargo install $2 failed; $1 will be skipped" >&2
}
install_peer websocat websocat
install_peer bore bore-cli
install_peer wstunnel wstunnel

cargo build --release -q -p relay-cli
cargo build --release -q -p relay-shell --example tcp_probe
BIN=${CARGO_TARGET_DIR:-target}/release
RELAY=${RELAY_BIN:-$BIN/relay} # RELAY_BIN: another build of relay to measure
PROBE=$BIN/examples/tcp_probe
SECRET=bench-secret
LOGS=$(mktemp -d)
pick() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PA=$(pick); PR=$(pick); PS=$(pick); PC=$(pick)
ACCESS=http://127.0.0.1:$PA
pids=()
KEEP_LOGS=0 # the tunnels' stderr logs are kept only when something failed to start
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ "$KEEP_LOGS" = 1 ] || rm -rf "$LOGS"; }
trap cleanup EXIT
# Bounded waits: up to 10 s for a port, then fail (the relay path) or skip (a peer).
port_open() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
wait_port() { port_open "$1" || { echo "port $1 not open" >&2; exit 1; }; }
# A tunnel may accept before its far side is up: wait until a round trip goes through.
tunnel_ready() { for _ in $(seq 50); do timeout 5 "$PROBE" rtt 127.0.0.1:"$1" 1 >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }
tok() { RELAY_TOKEN_AUDIENCE=$ACCESS RELAY_TOKEN_SECRET=$SECRET RELAY_TOKEN_LIFETIME=3600 RELAY_TOKEN_TOPIC=bench $RELAY token --role "$1"; }

declare -A PORT TPIDS SKIP   # per path: port the probe dials, tunnel pids, reason skipped
declare -A LABEL             # per tunnel pid: its role, for the RSS breakdown
paths=(direct relay)
PORT[direct]=$PS; TPIDS[direct]=""

$PROBE serve "$PS" & pids+=($!)
RELAY_AUDIENCE=$ACCESS RELAY_URL=ws://127.0.0.1:$PR RELAY_SECRET=$SECRET RELAY_PORT_ACCESS=$PA RELAY_PORT_RELAY=$PR \
  RELAY_BIND=127.0.0.1 RELAY_LOG_FILE=stderr $RELAY serve 2>"$LOGS/relay.log" & pids+=($!); TPIDS[relay]=$!; LABEL[$!]="relay serve"
wait_port "$PS"; wait_port "$PA"
SHELLHOST_RELAYSESSION=$ACCESS/shell/bench SHELLHOST_TOKEN=$(tok host) SHELLHOST_LOCALPORT=$PS \
  $RELAY shell host 2>"$LOGS/shell-host.log" & pids+=($!); TPIDS[relay]+=" $!"; LABEL[$!]="shell host"
SHELLCLIENT_RELAYSESSION=$ACCESS/shell/bench SHELLCLIENT_TOKEN=$(tok client) SHELLCLIENT_LOCALPORT=$PC \
  $RELAY shell client 2>"$LOGS/shell-client.log" & pids+=($!); TPIDS[relay]+=" $!"; LABEL[$!]="shell client"
wait_port "$PC"
# The host's management connection comes up asynchronously: wait until the tunnel answers.
tunnel_ready "$PC" || { KEEP_LOGS=1; echo "relay tunnel not answering; logs in $LOGS" >&2; exit 1; }
PORT[relay]=$PC

# add_peer NAME PORT: keep NAME in the loop if its tunnel answers, else say why.
add_peer() {
  paths+=("$1")
  if port_open "$2" && tunnel_ready "$2"; then PORT[$1]=$2; else SKIP[$1]="did not start (logs in $LOGS)"; KEEP_LOGS=1; fi
}

if command -v websocat >/dev/null; then
  PW=$(pick); QW=$(pick)
  websocat -b -E ws-l:127.0.0.1:"$PW" tcp:127.0.0.1:"$PS" 2>"$LOGS/websocat-server.log" & pids+=($!); TPIDS[websocat]=$!; LABEL[$!]="server"
  port_open "$PW" || true
  websocat -b -E tcp-l:127.0.0.1:"$QW" ws://127.0.0.1:"$PW" 2>"$LOGS/websocat-client.log" & pids+=($!); TPIDS[websocat]+=" $!"; LABEL[$!]="client"
  add_peer websocat "$QW"
else paths+=(websocat); SKIP[websocat]="not installed"; fi

if command -v bore >/dev/null; then
  # The control port is fixed at 7835; the public port is pinned with --min/--max-port.
  XB=$(pick)
  bore server --bind-addr 127.0.0.1 --min-port "$XB" --max-port "$XB" 2>"$LOGS/bore-server.log" >&2 & pids+=($!); TPIDS[bore]=$!; LABEL[$!]="server"
  if port_open 7835; then
    bore local "$PS" --local-host 127.0.0.1 --to 127.0.0.1 --port "$XB" 2>"$LOGS/bore-local.log" >&2 & pids+=($!); TPIDS[bore]+=" $!"; LABEL[$!]="local"
  fi
  add_peer bore "$XB"
else paths+=(bore); SKIP[bore]="not installed"; fi

if command -v wstunnel >/dev/null; then
  PT=$(pick); QT=$(pick)
  wstunnel server ws://127.0.0.1:"$PT" 2>"$LOGS/wstunnel-server.log" >&2 & pids+=($!); TPIDS[wstunnel]=$!; LABEL[$!]="server"
  port_open "$PT" || true
  wstunnel client -L tcp://"$QT":127.0.0.1:"$PS" ws://127.0.0.1:"$PT" 2>"$LOGS/wstunnel-client.log" >&2 & pids+=($!); TPIDS[wstunnel]+=" $!"; LABEL[$!]="client"
  add_peer wstunnel "$QT"
else paths+=(wstunnel); SKIP[wstunnel]="not installed (not on crates.io)"; fi

# Sum of VmRSS (MiB) over the given pids.
rss_mib() {
  local kb=0 p v
  for p in "$@"; do v=$(awk '/^VmRSS:/{print $2}' /proc/"$p"/status 2>/dev/null || true); kb=$((kb + ${v:-0})); done
  awk -v k="$kb" 'BEGIN{printf "%.1f", k/1024}'
}
field() { sed -nE "s/.*$1=([0-9]+).*/\1/p" <<<"$2"; }

echo
echo "| run | path | 1-byte RTT p50 µs | p99 µs | max µs | 256 MiB throughput Mbit/s | tunnel RSS MiB |"
echo "|---|---|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
  for path in "${paths[@]}"; do
    if [ -n "${SKIP[$path]:-}" ]; then echo "| $run | $path | ${SKIP[$path]} | | | | |"; continue; fi
    port=${PORT[$path]}
    r=$(timeout 120 "$PROBE" rtt 127.0.0.1:"$port" 2000 2>/dev/null) || r=""
    t=$(timeout 120 "$PROBE" throughput 127.0.0.1:"$port" 256 2>/dev/null) || t=""
    # Ours = shell client + relay + shell host; peers = all their processes; direct = none.
    rss="—"; [ -n "${TPIDS[$path]}" ] && rss=$(rss_mib ${TPIDS[$path]})
    echo "| $run | $path | $(field p50_us "$r") | $(field p99_us "$r") | $(field max_us "$r") | $(field mbit_s "$t") | $rss |"
  done
done
echo
# Which process holds the memory: RSS per tunnel process after the last run.
for path in "${paths[@]}"; do
  [ -n "${SKIP[$path]:-}" ] || [ -z "${TPIDS[$path]}" ] && continue
  line="$path:"
  for p in ${TPIDS[$path]}; do line+=" ${LABEL[$p]}=$(rss_mib "$p")"; done
  echo "RSS MiB per process, $line"
done
echo "uptime at end: $(uptime)"
echo "peers: $(command -v bore >/dev/null && bore --version) / $(command -v websocat >/dev/null && websocat --version) / $(command -v wstunnel >/dev/null && wstunnel --version || echo 'wstunnel not installed')"
