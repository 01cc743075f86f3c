"""Readings sealed per second on one core: the device engine driven from Python next to the
same engine driven from Rust, in one process, against the loopback gateway (the gateway side
of the protocol in this process: no network, and its work is not timed). A benchmark, not a
test; docs/performance.md "Devices in Python" has the method and the figures.

Each round pushes BATCH one-value readings, takes the request (sealing them into a record),
lets the gateway answer, hands the answer to the engine (opening the acknowledgement,
forgetting the readings) and drains the events. Timed: push, poll_transmit, handle_response,
poll_event. Rust: the same loop in Rust (``_native.rust_engine_rate``). Python: through
``Engine.push`` with an explicit ``now`` (as Rust does), and through ``Device.push`` (what an
application calls: no ``now``, so each push also reads the clock).

    python examples/bench.py [--repeat 5] [--readings 200000] [--json]
"""

import argparse
import json
import platform
import statistics
import time
from typing import Callable, Dict, List

import iotseal
from iotseal import _native


def established(gw: "_native.LoopbackGateway", engine: iotseal.Engine, now: int) -> None:
    engine.connect()
    while not engine.is_established:
        path, body = engine.poll_transmit(now)
        status, answer = gw.serve(path, body, now)
        engine.handle_response(status, answer, None, now)
        while engine.poll_event() is not None:
            pass


def python_rate(rounds: int, batch: int, via_device: bool) -> float:
    gw = _native.LoopbackGateway()
    engine = gw.engine()
    now = int(time.time() * 1000)
    established(gw, engine, now)
    if via_device:
        device = iotseal.Device(engine, "http://127.0.0.1:9")  # never connects here
        dpush = device.push

        def push_batch() -> None:
            for _ in range(batch):
                dpush("temperature", 21.5)

    else:
        epush = engine.push

        def push_batch() -> None:
            for _ in range(batch):
                epush("temperature", 21.5, None, None, now)

    poll_transmit, handle, poll_event = engine.poll_transmit, engine.handle_response, engine.poll_event
    perf = time.perf_counter
    spent = 0.0
    for _ in range(rounds):
        t0 = perf()
        push_batch()
        path, body = poll_transmit(now)
        t1 = perf()
        status, answer = gw.serve(path, body, now)
        t2 = perf()
        handle(status, answer, None, now)
        while poll_event() is not None:
            pass
        spent += (t1 - t0) + (perf() - t2)
    assert engine.pending == 0 and engine.stats.acknowledged == rounds * batch
    return rounds * batch / spent


def rust_rate(rounds: int, batch: int) -> float:
    seconds, acked = _native.rust_engine_rate(rounds, batch)
    assert acked == rounds * batch
    return acked / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="runs of each measurement (median)")
    p.add_argument("--readings", type=int, default=200_000, help="readings per run and batch")
    p.add_argument("--json", action="store_true", help="print JSON")
    a = p.parse_args()
    measures: Dict[str, Callable[[int, int], float]] = {
        "rust": rust_rate,
        "python_engine": lambda r, b: python_rate(r, b, False),
        "python_device": lambda r, b: python_rate(r, b, True),
    }
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.uname().machine,
        "batches": {},
    }
    for batch in (1, 100):
        rounds = max(1, a.readings // batch)
        runs: Dict[str, List[float]] = {k: [] for k in measures}
        for _ in range(a.repeat):  # interleaved, so load changes hit every measure alike
            for name, f in measures.items():
                runs[name].append(f(rounds, batch))
        med = {k: statistics.median(v) for k, v in runs.items()}

        def paired(name: str) -> float:
            # Each run's Python figure over the Rust figure measured next to it, median.
            return statistics.median(p / r for p, r in zip(runs[name], runs["rust"]))

        result["batches"][batch] = {
            "readings_per_s": med,
            "runs": runs,
            "python_engine_over_rust": paired("python_engine"),
            "python_device_over_rust": paired("python_device"),
        }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['date']}, Python {result['python']}, medians of {a.repeat} runs, readings/s on"
        " one core; ratios: median of each run's Python/Rust pair"
    )
    print(f"{'batch':>5} {'Rust':>10} {'Py Engine':>10} {'Py Device':>10} {'Engine/Rust':>12} {'Device/Rust':>12}")
    for batch, r in result["batches"].items():
        m = r["readings_per_s"]
        print(
            f"{batch:>5} {m['rust']:>10,.0f} {m['python_engine']:>10,.0f} {m['python_device']:>10,.0f}"
            f" {r['python_engine_over_rust']:>12.2f} {r['python_device_over_rust']:>12.2f}"
        )


if __name__ == "__main__":
    main()
