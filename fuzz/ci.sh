#!/usr/bin/env bash
# The fuzz step of .ci/run: installs cargo-fuzz if missing, builds every target once, replays
# the committed reproducers (regressions/<target>/), then fuzzes each target for FUZZ_SECS
# seconds (default 10) starting from its seed corpus (corpus/<target>/). Any crash, leak,
# timeout or out-of-memory fails the step; the crashing input is printed (hex) and kept under
# $FUZZ_OUT (default: a temporary folder). Only the stable toolchain is needed:
# RUSTC_BOOTSTRAP=1 lets it take the nightly-only flags cargo-fuzz passes (-Zsanitizer=...).
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
SECS="${FUZZ_SECS:-10}"
OUT="${FUZZ_OUT:-$(mktemp -d -t iotseal-fuzz.XXXXXX)}"
FLAGS=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10)

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
start=$(date +%s)
cargo fuzz build
built=$(date +%s)
echo "fuzz: built every target in $((built - start)) s"
# cargo fuzz builds into $CARGO_TARGET_DIR when it is set, else into fuzz/target.
bin="${CARGO_TARGET_DIR:-target}/$(rustc -vV | sed -n 's/^host: //p')/release"

targets=$(cd fuzz_targets && ls ./*.rs | sed 's|^\./||; s|\.rs$||')
summary=()
for t in $targets; do
  mkdir -p "$OUT/$t"
  if compgen -G "regressions/$t/*" >/dev/null; then
    echo "--- $t: replaying regressions/$t/"
    if ! "$bin/$t" "${FLAGS[@]}" regressions/"$t"/* >"$OUT/$t-regressions.log" 2>&1; then
      tail -n 60 "$OUT/$t-regressions.log"
      echo "fuzz: target $t fails on a committed reproducer" >&2
      exit 1
    fi
    grep '^Executed' "$OUT/$t-regressions.log" || true
  fi
  echo "--- $t: fuzzing for ${SECS} s"
  log="$OUT/$t.log"
  if ! "$bin/$t" "${FLAGS[@]}" -max_total_time="$SECS" -print_final_stats=1 \
      -artifact_prefix="$OUT/$t-" "$OUT/$t" "corpus/$t" >"$log" 2>&1; then
    tail -n 60 "$log"
    for a in "$OUT/$t"-*; do
      [ -f "$a" ] && echo "input $a: $(od -An -tx1 -v "$a" | tr -d " \n" | head -c 4000)"
    done
    echo "fuzz: target $t failed (log and input in $OUT)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  corp=$(find "corpus/$t" -type f | wc -l)
  summary+=("$(printf '%-14s %6s seeds %10s runs %7s exec/s' "$t" "$corp" "$runs" "$rate")")
done
printf '%s\n' "${summary[@]}"
echo "fuzz: every target ran ${SECS} s without a crash ($(($(date +%s) - start)) s in all)"
