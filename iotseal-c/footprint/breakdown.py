#!/usr/bin/env python3
"""Sizes of the symbols of an unstripped build of examples/device.c, by what they belong to
(docs/footprint.md). Usage: breakdown.py BINARY. Generic code of core/alloc/std instantiated for
another crate's types (drop glue, sorting, Vec growth) counts as that crate's."""
import collections, re, subprocess, sys

GROUPS = {
    "protocol, engine, C API": {"iotseal_proto", "iotseal_device_core", "iotseal"},
    "crypto": {"sha2", "sha3", "keccak", "curve25519_dalek", "ed25519_dalek", "x25519_dalek",
               "poly1305", "chacha20", "chacha20poly1305", "hkdf", "hmac", "ml_kem", "module_lattice",
               "aes", "aes_gcm", "ghash", "polyval", "ctr", "cipher", "digest", "universal_hash",
               "crypto_common", "iotseal_crypto_rustcrypto", "getrandom", "subtle", "zeroize",
               "rand_core", "hybrid_array", "p256", "primeorder", "elliptic_curve", "ecdsa", "ml_dsa",
               "crypto_bigint", "cpufeatures"},
    "key files (TOML, serde, hex)": {"toml", "toml_parser", "toml_datetime", "toml_writer",
                                     "serde", "serde_core", "serde_spanned", "hex", "winnow"},
    "curl pin (X.509, PEM, base64)": {"der", "x509_cert", "spki", "const_oid", "pem_rfc7468",
                                      "base64ct"},
    "Rust runtime (std, core, alloc, backtraces)": {"std", "core", "alloc", "gimli", "addr2line",
                                                    "rustc_demangle", "miniz_oxide", "adler2",
                                                    "memchr", "object", "__rustc", "panic_unwind"},
}

def group(name):
    m = re.match(r"^<?(?:&|\*const |\*mut |dyn )?([A-Za-z_][A-Za-z0-9_]*)::", name)
    if m:
        crate = m.group(1)
        if crate in ("core", "alloc", "std"):
            # Generic code of the runtime instantiated for another crate's types counts as theirs.
            inner = [c for c in re.findall(r"[<(&, ]([a-z_][a-z0-9_]*)::", name)
                     if c not in ("core", "alloc", "std")]
            if inner:
                crate = inner[0]
    elif name.startswith("iotseal_"):
        crate = "iotseal"
    elif name.startswith(("rust_", "__rust", "_ZN")):
        crate = "std"
    else:
        crate = "other"
    for g, crates in GROUPS.items():
        if crate in crates:
            return g
    return "other (C program, libc glue, unnamed)"

out = subprocess.run(["nm", "--size-sort", "-S", "-C", sys.argv[1]], capture_output=True,
                     text=True, check=True).stdout
sizes = collections.Counter()
for line in out.splitlines():
    parts = line.split(" ", 3)
    if len(parts) < 4 or parts[2] not in "tTrRdD":
        continue
    sizes[group(parts[3])] += int(parts[1], 16)
sections = subprocess.run(["size", "-A", sys.argv[1]], capture_output=True, text=True,
                          check=True).stdout
for line in sections.splitlines():
    f = line.split()
    if len(f) >= 2 and f[0] in (".eh_frame", ".eh_frame_hdr", ".gcc_except_table"):
        sizes["unwind tables (.eh_frame, .gcc_except_table)"] += int(f[1])
    if len(f) >= 2 and f[0] == ".rela.dyn":
        sizes["relocations (.rela.dyn, PIE)"] += int(f[1])
for g, s in sizes.most_common():
    print(f"{s / 1024:8.1f} KiB  {g}")
