#!/bin/sh
# Checks the deployment files: the systemd unit (systemd-analyze verify), the HAProxy
# configurations (haproxy -c) and the NATS configurations (nats-server -t, when installed).
#   deploy/check.sh [IOTSEAL_BINARY]
#
# `systemd-analyze verify` refuses a unit whose ExecStart binary does not exist, and
# /usr/local/bin/iotseal is not installed where this runs: the unit is checked as a temporary
# copy with ExecStart pointing at a binary that exists (the argument, else target/release/
# iotseal, else target/debug/iotseal, else /bin/true). Nothing else in the copy changes.
# systemd and haproxy are installed with apt-get only when their commands are missing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

install_missing() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "check.sh: $1 is missing: apt-get install -y $2"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
}

install_missing systemd-analyze systemd
install_missing haproxy haproxy

bin=${1:-}
if [ -z "$bin" ]; then
    for b in "$root/target/release/iotseal" "$root/target/debug/iotseal" /bin/true; do
        if [ -x "$b" ]; then bin=$b; break; fi
    done
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#^ExecStart=/usr/local/bin/iotseal #ExecStart=$bin #" \
    "$here/iotseal-gateway.service" > "$tmp/iotseal-gateway.service"
grep -q "^ExecStart=$bin " "$tmp/iotseal-gateway.service" || {
    echo "check.sh: ExecStart of iotseal-gateway.service not found" >&2; exit 1; }
# verify prints warnings and errors; any output is treated as a failure.
out=$(systemd-analyze verify "$tmp/iotseal-gateway.service" 2>&1) || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then echo "$out" >&2; exit 1; fi
echo "ok: systemd-analyze verify iotseal-gateway.service (ExecStart=$bin)"

haproxy -c -q -f "$here/haproxy.cfg"
echo "ok: haproxy -c haproxy.cfg"
# `haproxy -c` does not check descriptors: HAProxy needs about 2 x maxconn of them at start
# ("Cannot raise FD limit to 200020" with maxconn 100000 under 20,000). Keep 1,000 spare.
fd_limit=${IOTSEAL_FD_LIMIT:-20000}
for f in "$here/haproxy.cfg" "$here/haproxy-compose.cfg"; do
    m=$(awk '/^global/{g=1;next} /^[^ \t#]/{g=0} g && $1=="maxconn"{print $2}' "$f")
    if [ -z "$m" ] || [ $((2 * m + 1000)) -gt "$fd_limit" ]; then
        echo "check.sh: $(basename "$f"): global maxconn '$m' needs more than $fd_limit descriptors" >&2
        exit 1
    fi
    echo "ok: $(basename "$f"): maxconn $m fits $fd_limit descriptors"
done
haproxy -c -q -f "$here/haproxy-compose.cfg"
echo "ok: haproxy -c haproxy-compose.cfg"

if command -v nats-server >/dev/null 2>&1; then
    for c in "$here"/nats/nats-1.conf "$here"/nats/nats-2.conf "$here"/nats/nats-3.conf; do
        nats-server -t -c "$c" >/dev/null 2>&1 || { nats-server -t -c "$c"; exit 1; }
        echo "ok: nats-server -t $(basename "$c")"
    done
else
    echo "skipped: nats-server not on PATH (NATS configurations not checked)"
fi
