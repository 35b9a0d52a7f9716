#!/usr/bin/env bash
# Install the programs relay-bench compares the relay with, build the relay and the bench
# runner in release mode, and (with arguments) run one scenario:
#   scripts/bench-peers.sh                 # install + build only
#   scripts/bench-peers.sh b1 --runs 3     # then run: relay-bench b1 --runs 3
# Peers: websocat (cargo install), nats-server/wrk/iperf3 (Debian), the Node ws relay (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"

if ! command -v websocat >/dev/null; then
  cargo install --locked websocat
fi
missing=()
for pkg_bin in nats-server:nats-server wrk:wrk iperf3:iperf3 util-linux:taskset; do
  command -v "${pkg_bin#*:}" >/dev/null || missing+=("${pkg_bin%%:*}")
done
if ((${#missing[@]})); then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
command -v node >/dev/null || { echo "node (>= 18) and npm are needed for the Node ws relay" >&2; exit 1; }
(cd bench/node-ws-relay && npm ci --no-audit --no-fund)

CARGO_TARGET_DIR="$TARGET" cargo build --release -p relay-cli -p relay-bench

if (($#)); then
  # B4 holds 10k connections on each side; allow that many open files.
  ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  exec "$TARGET/release/relay-bench" "$@"
fi
