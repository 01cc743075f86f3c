#!/usr/bin/env bash
# Memory given back after a connection burst (issue 19, docs/performance.md "Memory after a
# connection burst"): a fresh `gateway run` (SQLite, defaults but the connection caps), then a
# client opens N TLS connections from ADDRS loopback addresses (127.0.0.11, .12, ...; the
# per-address cap stays at its default), sends `GET /healthz` on each and keeps it open, and
# closes them all at once. Prints the gateway's VmRSS before, at the peak (sampled while the
# connections open and while they are held) and 5, 30 and 60 s after the close, and the
# after/before ratios (the target: within 1.5x of before within 60 s); also RssAnon, the heap
# and stacks without the binary's mapped pages. "Before" is taken after a warm-up burst of 200
# connections and 12 s of quiet (jemalloc's decay time is 10 s), so that the code and the
# tables a burst first touches are counted on both sides.
#
# Usage: [IOTSEAL_BIN=target/release/iotseal] scripts/mem-burst.sh [N (10000)] [ADDRS (10)]
# Not a test: RSS depends on the allocator, the build and the machine. Needs python3.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
addrs="${2:-10}"

. scripts/lib/gateway.sh
iotseal_bin
work="$(mktemp -d -t iotseal-burst-XXXXXX)"
gw_pid=""
trap '[ -n "$gw_pid" ] && kill -9 "$gw_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n $((n + 1024)) 2>/dev/null || ulimit -n 20000 2>/dev/null || true

start_gateway "$work" --max-connections $((n + 1000))


python3 - "$url" "$gw_pid" "$n" "$addrs" <<'EOF'
import asyncio, ssl, sys, time, urllib.parse

url, pid, n, addrs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
u = urllib.parse.urlsplit(url)
host, port = u.hostname, u.port

def rss_kib() -> tuple[int, int]:
    """(VmRSS, RssAnon) of the gateway, KiB."""
    got = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon"):
                got[key] = int(line.split()[1])
    return got["VmRSS"], got["RssAnon"]

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # a throwaway gateway: only its memory is measured
request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

async def burst(count: int) -> tuple[list, int, float]:
    """Opens `count` connections (256 at a time), each after one answered request."""
    held, failed = [], 0
    sem = asyncio.Semaphore(256)

    async def one(i: int) -> None:
        nonlocal failed
        src = f"127.0.0.{11 + i % addrs}"
        async with sem:
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=ctx, local_addr=(src, 0)), 20
                )
                w.write(request)
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 20)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head[:40])
                held.append((r, w))
            except Exception:
                failed += 1

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(count)))
    return held, failed, time.monotonic() - t0

def show(label: str, before: tuple[int, int], now: tuple[int, int]) -> None:
    print(f"{label:<10} rss_kib {now[0]:>7} ratio {now[0] / before[0]:5.2f}   "
          f"anon_kib {now[1]:>7} ratio {now[1] / before[1]:5.2f}")

async def main() -> None:
    warm, _, _ = await burst(200)
    for _, w in warm:
        w.transport.abort()
    await asyncio.sleep(12)
    before = rss_kib()
    peak = before

    async def sample() -> None:
        nonlocal peak
        while True:
            now = rss_kib()
            peak = (max(peak[0], now[0]), max(peak[1], now[1]))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    held, failed, opened = await burst(n)
    await asyncio.sleep(2)  # held open
    sampler.cancel()
    for _, w in held:
        w.transport.abort()
    closed_at = time.monotonic()
    print(f"connections: {len(held)} held ({failed} failed) from {addrs} addresses, "
          f"opened in {opened:.1f} s")
    show("before", before, before)
    show("peak", before, peak)
    for mark in (5, 30, 60):
        await asyncio.sleep(max(0.0, closed_at + mark - time.monotonic()))
        show(f"after {mark} s", before, rss_kib())

asyncio.run(main())
EOF
