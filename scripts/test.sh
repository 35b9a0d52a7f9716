#!/usr/bin/env bash
# Install everything the test suite needs, then run the whole suite.
# Used by the README and by .ci/run. Safe to run again: installs are skipped when present.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# Debian packages used by end-to-end tests: curl (access API), ffmpeg/ffprobe (video),
# python3 (HTTP backends), python3-websockets (an independent client that checks the relay's
# frames, crates/relay-cli/tests/frames_e2e.rs), openssh (shell relay), openssl (test certificates), procps (kill),
# chromium (the browser test of the demo page, web/test), postgresql (the booking store's
# tests start a throw-away cluster from its binaries), nats-server and haproxy (the relay cluster's
# tests, crates/relay-cli/tests/cluster_e2e.rs: NATS with JetStream and the load balancer),
# iproute2 and nftables (the silent-cut tests put peers in network namespaces and cut
# their veth links, as root: crates/relay-cli/tests/netns_faults.rs), fonts-dejavu-core (the
# font of relay-bench soak's plots, crates/relay-bench/tests/soak_smoke.rs).
APT_PACKAGES=(curl ffmpeg python3 python3-websockets openssh-client openssh-server openssl procps chromium postgresql nats-server haproxy iproute2 nftables fonts-dejavu-core)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# websocat is not packaged by Debian 12; build it from crates.io once.
if ! command -v websocat >/dev/null 2>&1; then
  say "installing websocat from crates.io"
  cargo install --locked websocat
fi
export PATH="$HOME/.cargo/bin:$PATH"

for program in curl ffmpeg ffprobe websocat; do
  command -v "$program" >/dev/null || { echo "missing required program: $program" >&2; exit 1; }
done

say "building"
cargo build --workspace --quiet
mkdir -p target

# Formatting and lints are part of the suite: either failing fails CI.
say "checking formatting (cargo fmt --all --check)"
lint_status=0
cargo fmt --all --check || lint_status=1
say "linting (cargo clippy --workspace --all-targets -- -D warnings)"
cargo clippy --workspace --all-targets --quiet -- -D warnings || lint_status=1

# The browser test's node modules (playwright-core drives Debian's Chromium; never
# `npx playwright install`).
say "installing the browser test's node modules"
npm ci --prefix web/test --no-audit --no-fund --loglevel=error

say "running the test suite"
# A failing test must not stop the script before the browser test and the summary.
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
status=${PIPESTATUS[0]}
set -e

say "running the browser test"
if RELAY_BIN="${CARGO_TARGET_DIR:-target}/debug/relay" node --test web/test/ 2>&1 | tee target/browser-test-output.txt; then
  echo "test result: ok. 1 passed; browser test" >> target/test-output.txt
else
  status=1
  echo "browser test: 1 failed" >> target/test-output.txt
fi

if ((lint_status)); then
  echo "fmt/clippy: 1 failed" >> target/test-output.txt
  status=1
fi
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' target/test-output.txt | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test-output.txt | awk '{s+=$1} END {print s+0}')
echo
echo "summary: ${passed} passed, ${failed} failed"
exit "$status"
