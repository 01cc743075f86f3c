#!/usr/bin/env bash
# Throughput of one gateway node against three cluster nodes on this machine, with the same
# total load: `iotseal bench load` (the load generator) with CONNS synthetic devices; with
# three nodes the devices are split over the nodes (each load process talks to one node, as
# behind a round-robin balancer without affinity, so most requests are forwarded once).
# Needs NATS (nats://127.0.0.1:4222) and PostgreSQL (IOTSEAL_TEST_PG, a fresh schema is made).
#   deploy/bench-cluster.sh [BIN] [SECONDS] [CONNS]
set -euo pipefail
BIN=${1:-target/release/iotseal}
SECS=${2:-10}
CONNS=${3:-24}
NATS=${IOTSEAL_TEST_NATS:-nats://127.0.0.1:4222}
PG=${IOTSEAL_TEST_PG:-postgres://root@127.0.0.1:5432/test}
T=$(mktemp -d)
trap 'kill "${NODE_PIDS[@]}" 2>/dev/null || true; rm -rf "$T"' EXIT
"$BIN" gateway init --dir "$T/gw" >/dev/null

NODE_PIDS=()
start_node() { # name prefix schema-url
  "$BIN" gateway run --config "$T/gw/gateway.toml" --listen 127.0.0.1:0 --storage "$3" \
    --cluster "$NATS" --cluster-node-id "$1" --cluster-prefix "$2" \
    --handshake-rate-per-ip 1000000 --handshake-burst-per-ip 1000000 \
    >"$T/$1.out" 2>"$T/$1.log" &
  NODE_PIDS+=($!)
  for _ in $(seq 1 100); do grep -q 'listening on' "$T/$1.out" 2>/dev/null && break; sleep 0.1; done
}

run() { # nodes
  local n=$1 schema="bench_$(date +%s%N)" prefix="b$(date +%s%N)"
  psql "$PG" -qc "CREATE SCHEMA $schema" >/dev/null
  local url="$PG?options=-c%20search_path%3D$schema"
  local urls=()
  NODE_PIDS=()
  for i in $(seq 1 "$n"); do
    start_node "n$i-$prefix" "$prefix" "$url"
    urls+=("$(sed -n 's/^listening on //p' "$T/n$i-$prefix.out")")
  done
  sleep 3 # leases spread
  local per=$((CONNS / n)) pids=()
  for i in $(seq 0 $((n - 1))); do
    "$BIN" bench load --pins "$T/gw/gateway.pub.toml" --gateway "${urls[$i]}" \
      --token-file "$T/gw/admin.token" --connections "$per" --duration "${SECS}s" \
      --json >"$T/load-$n-$i.json" 2>"$T/load-$n-$i.err" &
    pids+=($!)
  done
  wait "${pids[@]}"
  python3 - "$n" "$T"/load-"$n"-*.json <<'PY'
import json, sys
n = sys.argv[1]
rs = [json.load(open(f)) for f in sys.argv[2:]]
tot = sum(r["requests_per_s"] for r in rs)
cpu = [round(r.get("gateway_cpu_percent", 0)) for r in rs]
p50 = max(r["p50_ms"] for r in rs)
p99 = max(r["p99_ms"] for r in rs)
err = sum(r["errors"] + r["refusals"] for r in rs)
print(f"nodes={n} requests/s={tot:.0f} (per load process {[round(r['requests_per_s']) for r in rs]}) "
      f"p50<={p50:.1f} ms p99<={p99:.1f} ms errors+refusals={err} node CPU % {cpu}")
PY
  kill "${NODE_PIDS[@]}" 2>/dev/null || true
  wait "${NODE_PIDS[@]}" 2>/dev/null || true
  sleep 1
  PGOPTIONS="-c client_min_messages=warning" psql "$PG" -qc "DROP SCHEMA $schema CASCADE" >/dev/null
}

run 1
run 3
