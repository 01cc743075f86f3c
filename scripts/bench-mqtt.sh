#!/usr/bin/env bash
# HTTP vs MQTT of docs/performance.md: `iotseal bench load --transport http` and
# `--transport mqtt` against one `iotseal gateway run` process (its MQTT binding on a Mosquitto
# this script starts with `set_tcp_nodelay true`), alternating, in the same run; then the same
# MQTT load with Nagle's algorithm left on everywhere (a second gateway with
# `--mqtt-tcp-nodelay false`, a second Mosquitto without `set_tcp_nodelay`, the devices with
# `--mqtt-nagle`), which is how the first prototype ran.
# Prints a Markdown table of medians; every run's JSON goes to DIR/runs.jsonl.
#
# Usage: scripts/bench-mqtt.sh [--bin PATH] [--runs R (3)] [--duration SECS (10)]
#        [--connections "1 8"] [--out DIR]
# Needs mosquitto. Not a test: numbers depend on the machine and its load.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
duration=10
conns="1 8"
out=""
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --connections) conns="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release -p iotseal-cli --quiet
  bin="${CARGO_TARGET_DIR:-$PWD/target}/release/iotseal"
fi
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosq" ] || { echo "mosquitto not found" >&2; exit 1; }
work="${out:-$(mktemp -d -t iotseal-bench-mqtt-XXXXXX)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# broker NAME NODELAY: sets port_NAME and pid_NAME (no subshell: the pid must be kept)
broker() {
  local port; port=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay %s\n' \
    "$port" "$2" >"$work/$1.conf"
  "$mosq" -c "$work/$1.conf" >"$work/$1.log" 2>&1 &
  pids+=($!)
  printf -v "port_$1" '%s' "$port"
  printf -v "pid_$1" '%s' "$!"
  sleep 0.5
}

# CPU seconds (user + system) of a process so far.
cpu_secs() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# gateway NAME BROKER_PORT NODELAY: sets url_NAME
gateway() {
  rm -rf "$work/$1"
  "$bin" gateway init --dir "$work/$1" >/dev/null
  "$bin" gateway run --config "$work/$1/gateway.toml" --listen 127.0.0.1:0 \
    --handshake-rate-per-ip 100000 --handshake-burst-per-ip 100000 \
    --mqtt-broker "mqtt://127.0.0.1:$2" --mqtt-topic-prefix "bench/$1" \
    --mqtt-client-id "bench-$1" --mqtt-session-expiry-secs 0 --mqtt-tcp-nodelay "$3" \
    >"$work/$1.out" 2>"$work/$1.err" &
  pids+=($!)
  for _ in $(seq 1 300); do
    grep -q '^listening on ' "$work/$1.out" 2>/dev/null && break
    sleep 0.1
  done
  printf -v "url_$1" '%s' "$(sed -n 's/^listening on //p' "$work/$1.out" | head -1)"
}

broker fast true
broker slow false
fast_port=$port_fast
slow_port=$port_slow
gateway fast "$fast_port" true
gateway slow "$slow_port" false
fast_url=$url_fast
slow_url=$url_slow
[ -n "$fast_url" ] && [ -n "$slow_url" ] || { cat "$work"/*.err >&2; exit 1; }

: >"$work/runs.jsonl"
# load LABEL GW URL BROKER_PORT ARGS...: one run; the broker's CPU averaged over the whole
# run (registration and handshakes over HTTPS included, when the broker is nearly idle: a
# slight underestimate of its share while loaded) is added to its JSON.
load() {
  local label=$1 gw=$2 url=$3 port=$4; shift 4
  local bpid; bpid=$(eval echo "\$pid_$gw")
  local c0 t0 c1 t1
  c0=$(cpu_secs "$bpid"); t0=$(date +%s.%N)
  "$bin" bench load --pins "$work/$gw/gateway.pub.toml" --gateway "$url" \
    --token-file "$work/$gw/admin.token" --duration "${duration}s" --json \
    --mqtt-broker "mqtt://127.0.0.1:$port" --mqtt-topic-prefix "bench/$gw" "$@" >"$work/last.json"
  c1=$(cpu_secs "$bpid"); t1=$(date +%s.%N)
  python3 -c '
import json, sys
r = json.load(open(sys.argv[2]))
c0, c1, t0, t1 = map(float, sys.argv[3:7])
r["broker_cpu_percent"] = 100 * (c1 - c0) / (t1 - t0) if r.get("transport") == "mqtt" else None
print(json.dumps({"label": sys.argv[1], "report": r}))' "$label" "$work/last.json" "$c0" "$c1" "$t0" "$t1" \
    >>"$work/runs.jsonl"
}

for r in $(seq 1 "$runs"); do
  for c in $conns; do
    echo "round $r, $c connections ($(cut -d' ' -f1-3 /proc/loadavg))" >&2
    load "http c$c" fast "$fast_url" "$fast_port" --transport http --connections "$c"
    load "mqtt c$c" fast "$fast_url" "$fast_port" --transport mqtt --connections "$c"
    load "mqtt, Nagle on, c$c" slow "$slow_url" "$slow_port" --transport mqtt --mqtt-nagle --connections "$c"
  done
done

python3 - "$work/runs.jsonl" <<'EOF'
import json, sys, statistics as st
runs = {}
for line in open(sys.argv[1]):
    x = json.loads(line)
    runs.setdefault(x["label"], []).append(x["report"])
print("| run | requests/s | readings/s | p50 ms | p99 ms | errors | gateway CPU % | broker CPU % | client CPU % |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
med = lambda rs, k: st.median([r.get(k) or 0 for r in rs])
for label, rs in runs.items():
    print(f"| {label} | {med(rs,'requests_per_s'):,.0f} | {med(rs,'readings_per_s'):,.0f} | "
          f"{med(rs,'p50_ms'):.2f} | {med(rs,'p99_ms'):.2f} | {sum(r.get('errors',0) for r in rs)} | "
          f"{med(rs,'gateway_cpu_percent'):.0f} | "
          + (f"{med(rs,'broker_cpu_percent'):.0f}" if rs[0].get('broker_cpu_percent') is not None else "–")
          + f" | {med(rs,'client_cpu_percent'):.0f} |")
EOF
echo "runs: $work/runs.jsonl" >&2
