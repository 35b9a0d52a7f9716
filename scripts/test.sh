#!/usr/bin/env bash
# Install everything the test suite needs, then run the whole suite.
# Used by the README and by .ci/run. Safe to run again: installs are skipped when present.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# Debian packages used by end-to-end tests: curl (access API), ffmpeg/ffprobe (video),
# python3 (HTTP backends), openssh (shell relay), nginx (HTTP relay backend).
APT_PACKAGES=(curl ffmpeg python3 openssh-client openssh-server nginx-light)
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
cargo build --workspace --all-targets --quiet 2>&1 | grep -v '^\s*$' || true
cargo build --workspace --quiet

say "running the test suite"
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
status=${PIPESTATUS[0]}

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' target/test-output.txt | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test-output.txt | awk '{s+=$1} END {print s+0}')
echo
echo "summary: ${passed} passed, ${failed} failed"
exit "$status"
