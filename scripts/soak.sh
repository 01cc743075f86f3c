#!/usr/bin/env bash
# Soak test (issue 7; not in CI): an `iotseal gateway run` process under a simulated fleet for a
# long time, its resident memory, open files, threads and sessions sampled every few seconds
# into a CSV and plotted (SVG by scripts/plot_soak.py, Python standard library only; also a PNG
# when gnuplot is installed).
#
# The fleet runs as consecutive `iotseal simulate` rounds of at most 10 minutes (each with
# fresh devices, each verified reading by reading in storage), so sessions are created all the
# time and old ones expire (idle timeout lowered to 120 s): memory must level off, not climb.
#
# Usage: scripts/soak.sh [--minutes M (60)] [--devices N (300)] [--interval SECS (5)]
#                        [--out DIR (soak-YYYYmmdd-HHMMSS)]
# Output: DIR/samples.csv, DIR/soak.svg (and soak.png), DIR/round-*.json, DIR/gateway.log.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=60
devices=300
interval=5
out="soak-$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --devices) devices="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

cargo build --release -p iotseal-cli --quiet
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/iotseal"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
gw_pid=""
sampler_pid=""
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null || true
  [ -n "$gw_pid" ] && kill -9 "$gw_pid" 2>/dev/null || true
}
trap cleanup EXIT
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"

rm -rf "$out/gw"
"$bin" gateway init --dir "$out/gw" >/dev/null
"$bin" gateway run --config "$out/gw/gateway.toml" --listen 127.0.0.1:0 \
  --handshake-rate-per-ip 100000 --handshake-burst-per-ip 100000 \
  --idle-timeout-secs 120 --sweep-interval-secs 5 \
  >"$out/gateway.out" 2>"$out/gateway.log" &
gw_pid=$!
for _ in $(seq 1 300); do
  grep -q '^listening on ' "$out/gateway.out" 2>/dev/null && break
  kill -0 "$gw_pid" 2>/dev/null || { cat "$out/gateway.log" >&2; exit 1; }
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$out/gateway.out" | head -1)
[ -n "$url" ] || { echo "gateway did not start" >&2; exit 1; }
echo "gateway $url (pid $gw_pid); soaking for $minutes min with $devices devices; samples in $out/samples.csv"

page_kib=$(( $(getconf PAGESIZE) / 1024 ))
(
  echo "t_s,rss_kib,fds,threads,sessions,readings_stored"
  t0=$(date +%s.%N)
  while kill -0 "$gw_pid" 2>/dev/null; do
    rss=$(awk -v p="$page_kib" '{print $2 * p}' "/proc/$gw_pid/statm" 2>/dev/null || echo "")
    fds=$(ls "/proc/$gw_pid/fd" 2>/dev/null | wc -l)
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$gw_pid/status" 2>/dev/null || echo 0)
    m=$(curl -sk --max-time 2 "$url/metrics" || true)
    sessions=$(printf '%s\n' "$m" | awk '/^iotseal_active_sessions / {print $2}')
    stored=$(printf '%s\n' "$m" | awk '/^iotseal_readings_stored_total / {print $2}')
    t=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
    [ -n "$rss" ] && echo "$t,$rss,$fds,${threads:-0},${sessions:-0},${stored:-0}"
    sleep "$interval"
  done
) >"$out/samples.csv" &
sampler_pid=$!

end=$(( $(date +%s) + minutes * 60 ))
round=0
status=0
while [ "$(date +%s)" -lt $(( end - 20 )) ]; do
  round=$(( round + 1 ))
  left=$(( end - $(date +%s) ))
  secs=$(( left > 600 ? 600 : left - 15 ))
  echo "round $round: $secs s"
  if ! "$bin" simulate --scenario scenarios/fleet-1000.toml --devices "$devices" \
      --duration "$secs" --seed "$round" --prefix "soak$round-" \
      --pins "$out/gw/gateway.pub.toml" --gateway "$url" --token-file "$out/gw/admin.token" \
      --json >"$out/round-$round.json" 2>"$out/round-$round.log"; then
    echo "round $round FAILED (see $out/round-$round.log)" >&2
    status=1
  fi
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("  sent %d verified %d lost %d p99 %.2f ms" % (s["readings_sent"], s["readings_verified"], s["lost"], s["p99_ms"]))' \
    "$out/round-$round.json" || true
done
# A last quiet stretch, longer than the idle timeout: every session expires.
echo "quiet for 130 s: sessions expire"
sleep 130
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""
kill -TERM "$gw_pid"
wait "$gw_pid" || { echo "gateway exited with $? on SIGTERM" >&2; status=1; }
gw_pid=""

python3 scripts/plot_soak.py "$out/samples.csv" "$out/soak.svg"
if command -v gnuplot >/dev/null; then
  gnuplot -e "set terminal pngcairo size 1000,600 noenhanced; set output '$out/soak.png'; \
    set datafile separator ','; set key autotitle columnhead; set xlabel 'minutes'; \
    set ylabel 'RSS MiB'; set y2label 'open fds'; set y2tics; set ytics nomirror; \
    plot '$out/samples.csv' using (\$1/60):(\$2/1024) with lines title 'RSS MiB', \
         '' using (\$1/60):3 axes x1y2 with lines title 'open fds'" 2>/dev/null \
    || gnuplot -e "set terminal png size 1000,600; set output '$out/soak.png'; \
    set datafile separator ','; set xlabel 'minutes'; set y2tics; \
    plot '$out/samples.csv' every ::1 using (\$1/60):(\$2/1024) with lines title 'RSS MiB', \
         '' every ::1 using (\$1/60):3 axes x1y2 with lines title 'open fds'" || true
fi
echo "plot: $out/soak.svg"
exit $status
