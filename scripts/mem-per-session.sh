#!/usr/bin/env bash
# Gateway memory per idle session, real process (docs/performance.md): a fresh `gateway run`
# (release build, SQLite, defaults), then ROUNDS rounds of `bench load --connections N`: each
# round registers N new devices, each handshakes and sends a few readings, then its connection
# closes and its session stays idle in the table. Prints sessions and RSS after each round and
# the least-squares slope (bytes per session) over the rounds after the first two.
# Idle sessions are measured as the gateway holds them once `limits.park_after_secs` has
# passed: the script runs it with park_after_secs = 0 and a 1 s sweep, and waits for a sweep
# after each round. PARK_AFTER_SECS=3600 measures sessions that are never parked.
#
# Usage: [PARK_AFTER_SECS=0] scripts/mem-per-session.sh [ROUNDS (16)] [N (500)]
# Not a test: RSS depends on the allocator and the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-16}"
n="${2:-500}"

. scripts/lib/gateway.sh
iotseal_bin
work="$(mktemp -d -t iotseal-mem-XXXXXX)"
gw_pid=""
trap '[ -n "$gw_pid" ] && kill -9 "$gw_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 8192 2>/dev/null || true

start_gateway "$work" --handshake-rate-per-ip 100000 --handshake-burst-per-ip 100000 \
  --park-after-secs "${PARK_AFTER_SECS:-0}" --sweep-interval-secs 1

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$gw_pid/status"; }
sessions() {
  curl -sk "$url/metrics" | awk '/^iotseal_active_sessions / { print $2 }'
}
parked() {
  curl -sk "$url/metrics" | awk '/^iotseal_parked_sessions / { print $2 }'
}

echo "round sessions parked rss_kib"
: >"$work/points"
for r in $(seq 1 "$rounds"); do
  "$bin" bench load --gateway "$url" --pins "$work/gw/gateway.pub.toml" \
    --token-file "$work/gw/admin.token" --connections "$n" --duration 300ms --warmup 100ms \
    --prefix "mem$r-" --json >/dev/null
  sleep 1.5
  s=$(sessions)
  k=$(rss_kib)
  echo "$r $s $(parked) $k"
  [ "$r" -gt 2 ] && echo "$s $k" >>"$work/points"
done
awk '{ n++; sx += $1; sy += $2 * 1024; sxx += $1 * $1; sxy += $1 * $2 * 1024 }
  END { printf "slope: %.0f bytes per idle session (rounds 3..%d)\n",
        (n * sxy - sx * sy) / (n * sxx - sx * sx), n + 2 }' "$work/points"
