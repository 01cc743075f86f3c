"""A sensor sending temperature and humidity every few seconds, with timestamps, printing what
each reading cost: the time the engine spent sealing it and the bytes on the wire (request and
answer bodies; the first reading also pays for the handshake).

    python examples/client.py gateway.pub.toml sensor-1.key [--url URL] [--count N] [--interval S]
"""

import argparse
import math
import random
import sys
import time

import iotseal


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pins", help="the gateway's gateway.pub.toml")
    p.add_argument("key", help="this device's identity file (iotseal device keygen)")
    p.add_argument("--url", help="gateway URL (default: the url of the pins file)")
    p.add_argument("--count", type=int, default=0, help="readings to send (0: forever)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between readings")
    a = p.parse_args()
    device = iotseal.Device.from_files(a.pins, a.key, url=a.url)
    t = device.transport
    i = 0
    while a.count == 0 or i < a.count:
        taken = int(time.time() * 1000)
        celsius = 21.0 + 2.0 * math.sin(i / 10) + random.uniform(-0.1, 0.1)
        humidity = 45.0 + 5.0 * math.cos(i / 10)
        msg_id = device.push_many({"temperature": celsius, "humidity": humidity}, time_ms=taken)
        seal, sent, received = t.seal_seconds, t.bytes_sent, t.bytes_received
        try:
            device.flush(timeout=max(a.interval, 5.0))
            status = "stored"
        except iotseal.Timeout as e:  # kept, sent with the next one
            status = f"queued ({e.pending} waiting: {e.__cause__ or e})"
        except iotseal.Error as e:
            sys.exit(f"error: {e}")
        print(
            f"#{msg_id} {time.strftime('%H:%M:%S', time.localtime(taken / 1000))} "
            f"{celsius:.2f} °C {humidity:.1f} %: sealed in {(t.seal_seconds - seal) * 1e6:.0f} µs, "
            f"{t.bytes_sent - sent} B sent, {t.bytes_received - received} B received, {status}",
            flush=True,
        )
        i += 1
        if a.count == 0 or i < a.count:
            time.sleep(a.interval)
    device.close()


if __name__ == "__main__":
    main()
