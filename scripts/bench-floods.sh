#!/usr/bin/env bash
# Availability under floods (issue 19, docs/performance.md "Availability under floods"): a fresh
# `gateway run` with the default settings (SQLite; the per-address connection cap, half-open
# table, Address cookies and per-address handshake rate all at their defaults), attacked by the
# threat lab from this process (`iotseal attack --gateway`):
#   - hello-flood-addresses: fresh valid hellos from 250 loopback addresses at full speed for
#     30 s (twice the default 30 s skew, capped at 30 s), each following an Address retry once;
#   - connection-hog: one address tries to hold 10,000 TLS connections for 8 s;
# while four honest devices (another address) open sessions and send readings. Prints each
# attack's verdict and what the honest devices saw (sessions, readings stored, worst latency);
# the targets: every handshake within 5 s during the flood, served within 2 s during the hog.
#
# Usage: [IOTSEAL_BIN=target/release/iotseal] [IOTSEAL_GATEWAY_ARGS="..."] scripts/bench-floods.sh
# IOTSEAL_GATEWAY_ARGS: extra `gateway run` flags, e.g. "--handshake-rate-per-ip 100000
# --handshake-burst-per-ip 100000" to take the per-address rate limit out of the defence.
# Not a test: what an attacker on the same 2 cores takes from the gateway depends on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/gateway.sh
iotseal_bin
work="$(mktemp -d -t iotseal-floods-XXXXXX)"
gw_pid=""
trap '[ -n "$gw_pid" ] && { kill -9 "$gw_pid"; wait "$gw_pid"; } 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 40000 2>/dev/null || ulimit -n 20000 2>/dev/null || true  # the hog: up to 10,000 (half the limit)

# shellcheck disable=SC2086 # word splitting of the extra flags is wanted
start_gateway "$work" ${IOTSEAL_GATEWAY_ARGS:-}
echo "gateway $url (pid $gw_pid), $(nproc) cores, $(date -u +%FT%TZ)" >&2

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$gw_pid/status"; }
rss0=$(rss)
status=0
"$bin" attack --gateway "$url" --pins "$work/gw/gateway.pub.toml" \
  --token-file "$work/gw/admin.token" --skew-secs 30 \
  --only hello-flood-addresses,connection-hog --json >"$work/attack.json" || status=$?
echo "gateway RSS ${rss0} KiB before, $(rss) KiB after" >&2

python3 - "$work/attack.json" <<'EOF'
import json, sys
out = json.load(open(sys.argv[1]))
rows = out["attacks"] if isinstance(out, dict) else out
for a in rows:
    s = a.get("service") or {}
    print(f'{a["name"]}: blocked={a["blocked"]} attempts={a["attempts"]} '
          f'sessions {s.get("handshakes_completed")}/{s.get("handshakes_attempted")} '
          f'readings {s.get("readings_stored")}/{s.get("readings_sent")} '
          f'refused {s.get("requests_refused")} median {s.get("median_latency_ms", 0):.0f} ms '
          f'worst {s.get("worst_latency_ms", 0):.0f} ms')
    for e in a.get("evidence", []):
        print("   ", e)
EOF
exit "$status"
