#!/usr/bin/env bash
# The firmware build of libiotseal.a (docs/footprint.md): iotseal-c without `std` (no_std +
# alloc: C malloc, the caller's random source, keys as raw bytes), the workspace profile
# `firmware` (opt-level "z", fat LTO, one codegen unit, panic = "abort"), and one portable
# backend per primitive: the RustCrypto crates' cfgs (on x86-64 they otherwise carry SSE2, AVX2,
# AES-NI, CLMUL and SHA-NI backends chosen at run time), the compact soft AES and SHA-2; no
# unwind tables (nothing unwinds; Cortex-M targets emit none either).
#   classical: --no-default-features                  (x25519, ed25519, chacha20poly1305)
#   hybrid:    --no-default-features --features hybrid (+ ML-KEM-768, AES-256-GCM)
# Usage: build-firmware.sh classical|hybrid [TARGET_DIR]  (default: target). The library is
# TARGET_DIR/firmware/libiotseal.a. CARGO_PROFILE_FIRMWARE_OPT_LEVEL=s: the "s" variant.
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
  classical) feat=() ;;
  hybrid) feat=(--features hybrid) ;;
  *) echo "usage: $0 classical|hybrid [TARGET_DIR]" >&2; exit 2 ;;
esac
cfgs=(
  'curve25519_dalek_backend="serial"' 'chacha20_backend="soft"' 'poly1305_backend="soft"'
  'polyval_backend="soft"' 'sha2_backend="soft"' 'sha2_backend_soft="compact"'
  'keccak_backend="soft"' 'aes_backend="soft"' 'aes_backend_soft="compact"'
)
flags="${RUSTFLAGS:-} -C force-unwind-tables=no"
for c in "${cfgs[@]}"; do flags="$flags --cfg $c"; done
# Only the staticlib (`cargo rustc --crate-type`), not the crate's three types in one rustc call:
# built with the cdylib and the rlib, the archive held each crate's own objects (and the
# precompiled core's), so the profile's fat LTO never made one module of the program; alone, it
# does (docs/footprint.md: 132.8 -> 105.6 KiB classical).
RUSTFLAGS="$flags" cargo rustc --quiet -p iotseal-c --profile firmware --no-default-features \
  ${feat[@]+"${feat[@]}"} --target-dir "${2:-target}" --crate-type staticlib
