#!/usr/bin/env bash
# The hardening load test (issue 7): 1,000 simulated devices (scenarios/fleet-1000.toml: one
# keep-alive HTTPS connection each, 1 reading/s, 5 per request) against an
# `iotseal gateway run` process (SQLite, TLS 1.3) for 60 s.
#
# Fails on any error seen by a device (refusal or retried request), any reading lost or stored
# twice, any refusal counted by the gateway, a gateway that does not stop cleanly on SIGTERM,
# or gateway memory that keeps growing (RSS at the end more than max(10%, 8 MiB) above RSS a
# quarter into the run, once every device is connected).
#
# Usage: scripts/load-1000.sh [--duration SECS] [--out DIR] [--bin PATH]
# Takes about 70 s after the build (registration, 60 s of load, verification of every reading
# through the admin API). Builds and uses the release binary unless --bin names one (CI can pass
# the debug binary it has already built). Prints one summary line; DIR (default: a temporary
# directory) keeps the simulation summary (sim.json), the RSS samples (rss.csv), /metrics and
# the log.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=60
out=""
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --bin) bin="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ -z "$bin" ]; then
  cargo build --release -p iotseal-cli --quiet
  bin="${CARGO_TARGET_DIR:-$PWD/target}/release/iotseal"
fi
work="${out:-$(mktemp -d -t iotseal-load1000-XXXXXX)}"
mkdir -p "$work"
gw_pid=""
sampler_pid=""
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null || true
  [ -n "$gw_pid" ] && kill -9 "$gw_pid" 2>/dev/null || true
}
trap cleanup EXIT

# 1,000 connections from this process and 1,000 in the gateway.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"

rm -rf "$work/gw"
"$bin" gateway init --dir "$work/gw" >/dev/null
# Every simulated device connects from 127.0.0.1: lift the per-address handshake limit.
"$bin" gateway run --config "$work/gw/gateway.toml" --listen 127.0.0.1:0 \
  --handshake-rate-per-ip 100000 --handshake-burst-per-ip 100000 \
  >"$work/gateway.out" 2>"$work/gateway.log" &
gw_pid=$!
for _ in $(seq 1 300); do
  grep -q '^listening on ' "$work/gateway.out" 2>/dev/null && break
  kill -0 "$gw_pid" 2>/dev/null || { cat "$work/gateway.log" >&2; exit 1; }
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$work/gateway.out" | head -1)
[ -n "$url" ] || { echo "gateway did not start" >&2; exit 1; }

# RSS (KiB) and open descriptors of the gateway every 2 s.
page_kib=$(( $(getconf PAGESIZE) / 1024 ))
(
  echo "t_s,rss_kib,fds"
  t0=$(date +%s.%N)
  while kill -0 "$gw_pid" 2>/dev/null; do
    rss=$(awk -v p="$page_kib" '{print $2 * p}' "/proc/$gw_pid/statm" 2>/dev/null || echo "")
    fds=$(ls "/proc/$gw_pid/fd" 2>/dev/null | wc -l)
    t=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
    [ -n "$rss" ] && echo "$t,$rss,$fds"
    sleep 2
  done
) >"$work/rss.csv" &
sampler_pid=$!

start=$(date +%s)
set +e
"$bin" simulate --scenario scenarios/fleet-1000.toml --duration "$duration" \
  --pins "$work/gw/gateway.pub.toml" --gateway "$url" --token-file "$work/gw/admin.token" \
  --prefix l1k- --json >"$work/sim.json" 2>"$work/sim.log"
sim_rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
curl -sk "$url/metrics" >"$work/metrics.txt" || true
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""

kill -TERM "$gw_pid"
set +e
wait "$gw_pid"
gw_rc=$?
set -e
gw_pid=""

python3 - "$work" "$duration" "$sim_rc" "$gw_rc" "$elapsed" <<'EOF'
import csv, json, sys
work, duration, sim_rc, gw_rc, elapsed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
fail = []
try:
    s = json.load(open(f"{work}/sim.json"))
except Exception as e:
    print(open(f"{work}/sim.log").read()[-3000:], file=sys.stderr)
    sys.exit(f"no simulation summary: {e}")
if sim_rc != 0:
    fail.append(f"simulate exited {sim_rc}")
if gw_rc != 0:
    fail.append(f"gateway exited {gw_rc} on SIGTERM")
retries = sum(g["retries"] for g in s["groups"])
for k in ("lost", "duplicates", "refusals"):
    if s[k] != 0:
        fail.append(f"{k} {s[k]}")
if retries:
    fail.append(f"retries {retries}")
if s["readings_sent"] == 0 or s["readings_verified"] != s["readings_sent"]:
    fail.append(f"verified {s['readings_verified']} of {s['readings_sent']}")
refused = 0
for line in open(f"{work}/metrics.txt"):
    if line.startswith("iotseal_refusals_total{"):
        refused += int(float(line.split()[-1]))
if refused:
    fail.append(f"gateway counted {refused} refusals")
rows = [(float(r["t_s"]), int(r["rss_kib"]), int(r["fds"])) for r in csv.DictReader(open(f"{work}/rss.csv"))]
if len(rows) < 4:
    fail.append("too few RSS samples")
    growth = 0
    mid = end = peak = (0, 0, 0)
else:
    t_end = rows[-1][0]
    mid = min(rows, key=lambda r: abs(r[0] - t_end / 4))
    end = rows[-1]
    peak = max(rows, key=lambda r: r[1])
    growth = end[1] - mid[1]
    if growth > max(0.10 * mid[1], 8 * 1024):
        fail.append(f"RSS grew {growth} KiB from {mid[1]} KiB at {mid[0]:.0f} s to {end[1]} KiB")
print(
    f"load-1000: {s['readings_sent']} readings from {sum(g['devices'] for g in s['groups'])} devices "
    f"in {duration:.0f} s ({elapsed} s with setup and verification): "
    f"{s['readings_verified']} verified, lost {s['lost']}, duplicates {s['duplicates']}, "
    f"refusals {s['refusals']}, retries {retries}, gateway refusals {refused}; "
    f"ack latency p50 {s['p50_ms']:.2f} ms p99 {s['p99_ms']:.2f} ms; "
    f"gateway RSS {mid[1]/1024:.1f} MiB at {mid[0]:.0f} s -> {end[1]/1024:.1f} MiB at end "
    f"(peak {peak[1]/1024:.1f} MiB), fds {mid[2]} -> {end[2]}; details in {work}"
)
if fail:
    sys.exit("FAILED: " + "; ".join(fail))
print("OK")
EOF
