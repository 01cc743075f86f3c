#!/usr/bin/env bash
# Code size of the device side linked into examples/device.c (docs/footprint.md): the example
# linked with libiotseal.a minus the same example linked with stub.c (every API function it calls a
# stub: the same C code and libcurl calls, none of the library). Both stripped, -Os,
# --gc-sections.
#
# std builds: the library with size settings (opt-level "s", fat LTO, one codegen unit, no
# debug info; panic = unwind, which catch_unwind needs) in its own target folder, once per
# feature set:
#   classical: --no-default-features --features std,tls-pin  (x25519, ed25519, chacha20poly1305)
#   hybrid:    the default features                          (+ ML-KEM-768, AES-256-GCM)
#   all:       --features all-algorithms
# firmware builds (build-firmware.sh: no std, profile `firmware`, panic = abort, one portable
# backend per primitive, no unwind tables), classical and hybrid, at opt-level "z" (the
# profile's) and "s";
# the example built with -DIOTSEAL_FROM_RAW (keys as bytes), linked as a position-independent
# executable (the compiler's default here) and with -no-pie (as firmware is linked), both without
# unwind tables (no-eh-frame.ld, as a firmware linker script; the baseline too).
# Usage: iotseal-c/footprint/measure.sh [std|firmware|all]  (default all; prints the tables;
# FOOTPRINT_DIR: where the builds go)
set -euo pipefail
cd "$(dirname "$0")/../.."
what="${1:-all}"
out="${FOOTPRINT_DIR:-target/footprint}"
mkdir -p "$out"
export CARGO_INCREMENTAL=0
release=(CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_LTO=fat
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_DEBUG=0)
cflags=(-std=c99 -Os -ffunction-sections -fdata-sections -Wl,--gc-sections -Iiotseal-c/include)
libs=(-lcurl -lpthread -ldl -lm)
example=iotseal-c/examples/device.c
stub=iotseal-c/footprint/stub.c

# size(1)'s text (code and read-only data) + data, in bytes.
flash() { size "$1" | awk 'NR==2 {print $1 + $2}'; }
kib() { awk -v d="$1" 'BEGIN {printf "%.1f", d / 1024}'; }
row() { printf '%-22s %12s %12s %12s %14s\n' "$@"; }

if [ "$what" != firmware ]; then
  cc "${cflags[@]}" -s -o "$out/device-stub" "$example" "$stub" "${libs[@]}"
  base=$(flash "$out/device-stub")
  row build text+data delta_bytes delta_KiB libiotseal.a
  row stub "$base" - - -
  for variant in classical hybrid all; do
    case $variant in
      classical) feat=(--no-default-features --features std,tls-pin) ;;
      hybrid) feat=() ;;
      all) feat=(--features all-algorithms) ;;
    esac
    env "${release[@]}" cargo build --quiet --release -p iotseal-c --target-dir "$out/cargo" \
      ${feat[@]+"${feat[@]}"}
    cp "$out/cargo/release/libiotseal.a" "$out/libiotseal-$variant.a"
    cc "${cflags[@]}" -s -o "$out/device-$variant" "$example" "$out/libiotseal-$variant.a" "${libs[@]}"
    # Unstripped, for breakdown.py.
    cc "${cflags[@]}" -o "$out/device-$variant-syms" "$example" "$out/libiotseal-$variant.a" \
      "${libs[@]}"
    total=$(flash "$out/device-$variant")
    delta=$((total - base))
    row "$variant" "$total" "$delta" "$(kib "$delta")" "$(stat -c %s "$out/libiotseal-$variant.a")"
  done
  for variant in classical hybrid; do
    echo "== $variant: where it goes"
    python3 iotseal-c/footprint/breakdown.py "$out/device-$variant-syms"
  done
fi

if [ "$what" != std ]; then
  # The firmware variant of the example: raw_keys.h included ahead of device.c. The stub is
  # compiled on its own (raw_keys.h renames the key-file calls the stub defines).
  fwflags=("${cflags[@]}" -DIOTSEAL_FROM_RAW -include iotseal-c/examples/raw_keys.h
    -Wl,-T,iotseal-c/footprint/no-eh-frame.ld)
  cc "${cflags[@]}" -c -o "$out/fw-stub.o" "$stub"
  declare -A fwbase
  for pie in pie no-pie; do
    cc "${fwflags[@]}" "-$pie" -s -o "$out/fw-stub-$pie" "$example" "$out/fw-stub.o" -lcurl
    fwbase[$pie]=$(flash "$out/fw-stub-$pie")
  done
  echo "== firmware (no std, panic = abort, one backend per primitive)"
  row build text+data delta_bytes delta_KiB libiotseal.a
  row "stub (pie)" "${fwbase[pie]}" - - -
  row "stub (no-pie)" "${fwbase[no-pie]}" - - -
  for opt in z s; do
    for variant in classical hybrid; do
      CARGO_PROFILE_FIRMWARE_OPT_LEVEL=$opt iotseal-c/footprint/build-firmware.sh "$variant" \
        "$out/cargo"
      lib="$out/libiotseal-fw-$opt-$variant.a"
      cp "$out/cargo/firmware/libiotseal.a" "$lib"
      for pie in pie no-pie; do
        name="fw-$opt-$variant-$pie"
        cc "${fwflags[@]}" "-$pie" -s -o "$out/$name" "$example" "$lib" -lcurl
        cc "${fwflags[@]}" "-$pie" -o "$out/$name-syms" "$example" "$lib" -lcurl
        total=$(flash "$out/$name")
        delta=$((total - ${fwbase[$pie]}))
        row "$opt $variant $pie" "$total" "$delta" "$(kib "$delta")" "$(stat -c %s "$lib")"
      done
    done
  done
  for variant in classical hybrid; do
    echo "== firmware z $variant no-pie: where it goes"
    python3 iotseal-c/footprint/breakdown.py "$out/fw-z-$variant-no-pie-syms"
  done
fi
