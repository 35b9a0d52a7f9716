#!/usr/bin/env bash
# Fuzz every target (or the ones named) with AFL++, one after the other, each for
# FUZZ_SECONDS (default 600), niced, and print one summary line per target from AFL's
# fuzzer_stats. Needs `cargo install cargo-afl` and the harness built first:
#
#   CARGO_TARGET_DIR=target/afl cargo afl build -p relay-fuzz --features afl --bin relay-fuzz-afl
#   fuzz/run-all.sh                      # all targets, 10 minutes each
#   FUZZ_SECONDS=60 fuzz/run-all.sh playfile connection_action
#
# Output goes to FUZZ_OUT (default target/fuzz-runs)/<target>/ (AFL's queue, crashes,
# hangs and fuzzer_stats under default/, its log in afl.log); summary.tsv collects the
# numbers that docs/RELIABILITY.md reports.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-600}
out=${FUZZ_OUT:-target/fuzz-runs}
built=${FUZZ_BIN:-${CARGO_TARGET_DIR:-target/afl}/debug/relay-fuzz-afl}
[ -x "$built" ] || { echo "no harness at $built; build it first (see the top of $0)" >&2; exit 1; }
mkdir -p "$out/bin"
# A copy, so that rebuilding the harness during a run does not change the binary under AFL.
bin="$out/bin/relay-fuzz-afl"
cp "$built" "$bin.new" && mv "$bin.new" "$bin"

if (($#)); then
  targets=("$@")
else
  targets=(auth_token ws_admission host_commands ts_ingest http_relay connection_action
           playfile book_manifest book_query)
fi

summary="$out/summary.tsv"
[ -f "$summary" ] || printf 'target\tseconds\texecs_per_sec\texecs_done\tedges_found\ttotal_edges\tbitmap_cvg\tcorpus_count\tsaved_crashes\tsaved_hangs\n' > "$summary"

for target in "${targets[@]}"; do
  dir="$out/$target"
  mkdir -p "$dir"
  echo "== $target: ${seconds}s from $(date -u +%H:%M:%S) into $dir"
  # No UI, no CPU pinning (the machine is shared), and the host's core_pattern is not ours
  # to change.
  AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
    nice -n 10 cargo afl fuzz -V "$seconds" -i "fuzz/corpus/$target" -o "$dir" -- "$bin" "$target" \
    > "$dir/afl.log" 2>&1 || echo "   afl-fuzz exited with $? (see $dir/afl.log)"
  stats="$dir/default/fuzzer_stats"
  if [ -f "$stats" ]; then
    get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
    started=$(get start_time); last=$(get last_update)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$((last - started))" \
      "$(get execs_per_sec)" "$(get execs_done)" "$(get edges_found)" "$(get total_edges)" \
      "$(get bitmap_cvg)" "$(get corpus_count)" "$(get saved_crashes)" "$(get saved_hangs)" \
      | tee -a "$summary"
  fi
done
