# Sourced by the benchmark scripts (bench-load.sh, bench-floods.sh, mem-burst.sh,
# mem-per-session.sh): the binary and a fresh gateway on a free loopback port.
#
# iotseal_bin: sets $bin to $IOTSEAL_BIN, or builds the release binary and uses it.
# start_gateway DIR ARGS...: `gateway init --dir DIR/gw`, then `gateway run` on 127.0.0.1:0 with
#   ARGS in the background (its stdout in DIR/gateway.out, its log in DIR/gateway.log); sets
#   $gw_pid and $url once it listens, or prints its log and exits 1.

iotseal_bin() {
  [ -n "${IOTSEAL_BIN:-}" ] || cargo build --release -p iotseal-cli --quiet
  bin="${IOTSEAL_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/iotseal}"
}

start_gateway() {
  local dir="$1"
  shift
  rm -rf "$dir/gw"
  "$bin" gateway init --dir "$dir/gw" >/dev/null
  "$bin" gateway run --config "$dir/gw/gateway.toml" --listen 127.0.0.1:0 "$@" \
    >"$dir/gateway.out" 2>"$dir/gateway.log" &
  gw_pid=$!
  for _ in $(seq 1 300); do
    grep -q '^listening on ' "$dir/gateway.out" 2>/dev/null && break
    sleep 0.1
  done
  url=$(sed -n 's/^listening on //p' "$dir/gateway.out" | head -1)
  [ -n "$url" ] || { cat "$dir/gateway.log" >&2; exit 1; }
}
