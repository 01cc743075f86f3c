#!/usr/bin/env bash
# The gateway load benchmark of docs/performance.md: `iotseal bench load` against an
# `iotseal gateway run` process, side by side with nginx (TLS 1.3, `return 204`) loaded by the
# same client (`bench load --baseline`) at the same connection counts, in the same run.
# Prints a Markdown table of medians; every run's JSON goes to DIR/runs.jsonl.
#
# Usage: scripts/bench-load.sh [--runs R (3)] [--duration SECS (10)] [--out DIR]
#        [--nginx-workers W (2)] [--connections "8 64"]
# Needs nginx (Debian: apt-get install nginx-light) and openssl for the baseline; without
# them the baseline rows are skipped. Not a test: numbers depend on the machine and its load.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
duration=10
out=""
nginx_workers=2
conns="8 64"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --nginx-workers) nginx_workers="$2"; shift 2 ;;
    --connections) conns="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

. scripts/lib/gateway.sh
iotseal_bin
load=("$bin" bench load)
work="${out:-$(mktemp -d -t iotseal-bench-load-XXXXXX)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
gw_pid=""
nginx_pid=""
cleanup() {
  [ -n "$gw_pid" ] && kill -9 "$gw_pid" 2>/dev/null || true
  [ -n "$nginx_pid" ] && kill -TERM "$nginx_pid" 2>/dev/null || true
}
trap cleanup EXIT
ulimit -n 8192 2>/dev/null || true

start_gateway "$work" --handshake-rate-per-ip 100000 --handshake-burst-per-ip 100000

nginx_url=""
if command -v nginx >/dev/null && command -v openssl >/dev/null; then
  mkdir -p "$work/nginx"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -keyout "$work/nginx/key.pem" -out "$work/nginx/cert.pem" 2>/dev/null
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$work/nginx/nginx.conf" <<EOF
worker_processes $nginx_workers;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  client_body_temp_path $work/nginx/body;
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $work/nginx/cert.pem;
    ssl_certificate_key $work/nginx/key.pem;
    ssl_protocols TLSv1.3;
    location / { return 204; }
  }
}
EOF
  nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
  nginx_pid=$!
  sleep 1
  nginx_url="https://127.0.0.1:$port/"
  echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), $nginx_workers workers, at $nginx_url" >&2
else
  echo "nginx or openssl missing: no baseline rows (apt-get install nginx-light)" >&2
fi
echo "gateway $url (pid $gw_pid); $runs runs of ${duration}s each; JSON in $work/runs.jsonl" >&2

# one LABEL ARGS...: one run, its JSON appended to runs.jsonl with the label.
one() {
  local label="$1"; shift
  local j
  j=$("${load[@]}" --duration "${duration}s" --json "$@" 2>/dev/null) || { echo "run $label failed" >&2; return 0; }
  printf '{"label":"%s","report":%s}\n' "$label" "$j" >>"$work/runs.jsonl"
  python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print("  %s: %.0f req/s %.0f readings/s p50 %.2f p99 %.2f ms errors %d server CPU %s%%" % (sys.argv[1], r["requests_per_s"], r["readings_per_s"], r["p50_ms"], r["p99_ms"], r["errors"], r["gateway_cpu_percent"]), file=sys.stderr)' "$label" "$j"
}

gw_args=(--pins "$work/gw/gateway.pub.toml" --gateway "$url" --token-file "$work/gw/admin.token")
for r in $(seq 1 "$runs"); do
  echo "round $r" >&2
  for c in $conns; do
    one "gateway b1 c$c" "${gw_args[@]}" --connections "$c" --batch 1
    [ -n "$nginx_url" ] && one "nginx c$c" --baseline "$nginx_url" --connections "$c" --body-size 200
    one "gateway b100 c$c" "${gw_args[@]}" --connections "$c" --batch 100
  done
done
# Latency at half the maximum rate (the median maximum just measured).
for c in $conns; do
  for b in 1 100; do
    half=$(python3 - "$work/runs.jsonl" "gateway b$b c$c" <<'EOF'
import json, statistics, sys
xs = [json.loads(l)["report"]["requests_per_s"] for l in open(sys.argv[1]) if json.loads(l)["label"] == sys.argv[2]]
print(f"{statistics.median(xs) / 2:.0f}" if xs else "")
EOF
)
    [ -n "$half" ] || continue
    for r in $(seq 1 "$runs"); do
      one "gateway b$b c$c half-rate" "${gw_args[@]}" --connections "$c" --batch "$b" --rate "$half"
    done
  done
done

kill -TERM "$gw_pid"; wait "$gw_pid" || true; gw_pid=""
[ -n "$nginx_pid" ] && { kill -QUIT "$nginx_pid"; wait "$nginx_pid" || true; nginx_pid=""; }

python3 - "$work/runs.jsonl" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    o = json.loads(line)
    rows.setdefault(o["label"], []).append(o["report"])
med = lambda rs, k: statistics.median([r[k] for r in rs if r.get(k) is not None] or [0])
print("| run | conns | readings/req | requests/s | readings/s | p50 ms | p99 ms | errors | server CPU % | server RSS MiB | client CPU % | n |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for label, rs in rows.items():
    r0 = rs[0]
    rate = f" (paced {r0['target_rate']:.0f}/s)" if r0.get("target_rate") else ""
    print(f"| {label}{rate} | {r0['connections']} | {r0['batch']} | {med(rs, 'requests_per_s'):.0f} | {med(rs, 'readings_per_s'):.0f} "
          f"| {med(rs, 'p50_ms'):.2f} | {med(rs, 'p99_ms'):.2f} | {sum(r['errors'] for r in rs)} "
          f"| {med(rs, 'gateway_cpu_percent'):.0f} | {med(rs, 'gateway_rss_mb'):.1f} | {med(rs, 'client_cpu_percent'):.0f} | {len(rs)} |")
for c in sorted({r[0]["connections"] for r in rows.values()}):
    g, n = rows.get(f"gateway b1 c{c}"), rows.get(f"nginx c{c}")
    if g and n:
        # Ratio per round (same moment of the run), then the median.
        ratios = [a["requests_per_s"] / b["requests_per_s"] for a, b in zip(g, n) if b["requests_per_s"]]
        print(f"\nc{c}: gateway/nginx requests/s ratio, median of {len(ratios)} paired rounds: {statistics.median(ratios):.2f}")
EOF
