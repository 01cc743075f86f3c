#!/usr/bin/env bash
# Code size of the device side linked into examples/device.c (docs/footprint.md): the example
# linked with libiotseal.a minus the same example linked with stub.c (every API function it calls a
# stub: the same C code and libcurl calls, none of the library). Both stripped, -Os,
# --gc-sections. The library is built with size settings (opt-level "s", fat LTO, one codegen
# unit, no debug info; panic = unwind, which catch_unwind needs) in its own target folder, once
# per feature set:
#   classical: --no-default-features --features tls-pin  (x25519, ed25519, chacha20poly1305)
#   hybrid:    the default features                      (+ ML-KEM-768, AES-256-GCM)
#   all:       --features all-algorithms
# Usage: iotseal-c/footprint/measure.sh   (prints the tables; FOOTPRINT_DIR: where the builds go)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${FOOTPRINT_DIR:-target/footprint}"
mkdir -p "$out"
export CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_LTO=fat \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_INCREMENTAL=0
cflags=(-std=c99 -Os -ffunction-sections -fdata-sections -Wl,--gc-sections -Iiotseal-c/include)
libs=(-lcurl -lpthread -ldl -lm)

# size(1)'s text (code and read-only data) + data, in bytes.
flash() { size "$1" | awk 'NR==2 {print $1 + $2}'; }

cc "${cflags[@]}" -s -o "$out/device-stub" iotseal-c/examples/device.c iotseal-c/footprint/stub.c "${libs[@]}"
base=$(flash "$out/device-stub")
printf '%-10s %12s %12s %12s %14s\n' build text+data delta_bytes delta_KiB libiotseal.a
printf '%-10s %12s %12s %12s %14s\n' stub "$base" - - -
for variant in classical hybrid all; do
  case $variant in
    classical) feat=(--no-default-features --features tls-pin) ;;
    hybrid) feat=() ;;
    all) feat=(--features all-algorithms) ;;
  esac
  cargo build --quiet --release -p iotseal-c --target-dir "$out/cargo" ${feat[@]+"${feat[@]}"}
  cp "$out/cargo/release/libiotseal.a" "$out/libiotseal-$variant.a"
  cc "${cflags[@]}" -s -o "$out/device-$variant" iotseal-c/examples/device.c \
    "$out/libiotseal-$variant.a" "${libs[@]}"
  # Unstripped, for breakdown.py.
  cc "${cflags[@]}" -o "$out/device-$variant-syms" iotseal-c/examples/device.c \
    "$out/libiotseal-$variant.a" "${libs[@]}"
  total=$(flash "$out/device-$variant")
  delta=$((total - base))
  printf '%-10s %12s %12s %12s %14s\n' "$variant" "$total" "$delta" \
    "$(awk -v d="$delta" 'BEGIN {printf "%.1f", d / 1024}')" \
    "$(stat -c %s "$out/libiotseal-$variant.a")"
done
for variant in classical hybrid; do
  echo "== $variant: where it goes"
  python3 iotseal-c/footprint/breakdown.py "$out/device-$variant-syms"
done
