"""The sans-IO engine from Python, against the in-process loopback gateway (no network)."""

from __future__ import annotations

import pytest

import iotseal
from iotseal import events
from iotseal._native import LoopbackGateway

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def run(gw: LoopbackGateway, engine: iotseal.Engine, now: int = NOW) -> list:
    """Carries requests until none is left; returns the events."""
    seen = []
    while True:
        t = engine.poll_transmit(now)
        if t is None:
            return seen
        path, body = t
        assert path in ("/v1/handshake", "/v1/records") and isinstance(body, bytes)
        status, answer = gw.serve(path, body, now)
        engine.handle_response(status, answer, None, now)
        while (e := engine.poll_event()) is not None:
            seen.append(e)


def test_events_are_typed_and_readings_acknowledged() -> None:
    gw = LoopbackGateway()
    engine = gw.engine()
    assert engine.poll_transmit(NOW) is None, "nothing queued"
    assert engine.poll_timeout() is None
    ids = [engine.push("temperature", 20.0 + i, now=NOW) for i in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    seen = run(gw, engine)
    assert all(isinstance(e, events.Event) for e in seen)
    done = [e for e in seen if isinstance(e, events.HandshakeComplete)]
    assert len(done) == 1 and done[0].suite == "x25519mlkem768/ed25519/aes256gcm"
    assert done[0].session_id == engine.session_id
    acked = [m for e in seen if isinstance(e, events.Acknowledged) for m in e.msg_ids]
    assert acked == ids
    assert engine.pending == 0 and engine.is_established and gw.readings == 5
    s = engine.stats
    assert (s.handshakes, s.requests, s.acknowledged, s.readings_sent) == (1, 2, 5, 5)
    assert s.refusals == {}
    assert "Acknowledged" in repr(seen[-1])


def test_busy_and_lost_answers_back_off() -> None:
    gw = LoopbackGateway()
    engine = gw.engine()
    engine.push("humidity", 40.0, now=NOW)
    assert engine.poll_transmit(NOW) is not None
    assert engine.is_waiting
    engine.handle_response(503, b"\x7f\x06", 2, NOW)
    e = engine.poll_event()
    assert isinstance(e, events.BackingOff)
    assert (e.cause, e.refusal) == ("Refused", "Busy")
    assert e.until_ms >= NOW + 2000, "Retry-After is a floor"
    assert engine.poll_timeout() == e.until_ms
    assert engine.poll_transmit(NOW + 1000) is None
    t = engine.poll_transmit(e.until_ms)
    assert t is not None and t[0] == "/v1/handshake"
    engine.handle_transport_error(e.until_ms)
    lost = engine.poll_event()
    assert isinstance(lost, events.BackingOff) and lost.cause == "Transport"
    assert engine.stats.refusals == {"Busy": 1}
    assert engine.stats.transport_errors == 1
    engine.handle_timeout(lost.until_ms)
    run(gw, engine, lost.until_ms)
    assert engine.pending == 0


def test_refusal_stops_until_resume() -> None:
    gw = LoopbackGateway()
    engine = gw.engine()
    engine.push("temperature", 1.0, now=NOW)
    engine.poll_transmit(NOW)
    engine.handle_response(403, b"\x7f\x02", None, NOW)
    e = engine.poll_event()
    assert isinstance(e, events.Refused) and e.refusal == "AuthFailed"
    assert engine.refusal == "AuthFailed"
    assert engine.poll_transmit(NOW) is None
    engine.resume()
    assert engine.refusal is None
    run(gw, engine)
    assert engine.pending == 0


def test_queue_full() -> None:
    engine = LoopbackGateway().engine(queue_capacity=2)
    engine.push("temperature", 1.0, now=NOW)
    engine.push("temperature", 2.0, now=NOW)
    with pytest.raises(iotseal.QueueFull):
        engine.push("temperature", 3.0, now=NOW)
    assert isinstance(engine.poll_event(), events.QueueFull)
    assert engine.next_msg_id == 3, "a refused push takes no message id"


def test_bad_readings_are_refused() -> None:
    engine = LoopbackGateway().engine()
    with pytest.raises(ValueError, match="unknown sensor"):
        engine.push("temprature", 1.0)
    with pytest.raises(TypeError):
        engine.push(1, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most 32"):
        engine.push_many([("temperature", 1.0)] * 33)
    with pytest.raises(ValueError, match="at most 4096"):
        engine.push("temperature", 1.0, extra=bytes(4097))
    assert engine.pending == 0
    m = engine.push_many([("other_200", 1.0), ("energy", 2.0)], time_ms=5, extra=b"x")
    assert engine.reading(m) == bytes([m, 5, 2, 200]) + b"\x3f\x80\x00\x00" + bytes(
        [11]
    ) + b"\x40\x00\x00\x00" + b"\x01x"


def test_config_errors(tmp_path) -> None:
    with pytest.raises(iotseal.ConfigError, match="missing"):
        iotseal.Engine.from_files(str(tmp_path / "missing.toml"), str(tmp_path / "k.key"))
    with pytest.raises(iotseal.ConfigError):
        iotseal.Engine.from_strings("url = 3", "id = 'x'")
    with pytest.raises(ValueError):  # ConfigError is a ValueError too
        iotseal.Engine.from_strings("not toml [", "")
    with pytest.raises(iotseal.ConfigError, match="readings per record"):
        LoopbackGateway().engine(readings_per_record=0)
    with pytest.raises(iotseal.ConfigError, match="unknown suite"):
        LoopbackGateway(suite="rot13/ed25519/aes256gcm")
    engine = LoopbackGateway().engine()
    assert engine.gateway_url is None and engine.tls_cert_sha256 is None
    with pytest.raises(iotseal.ConfigError, match="no gateway URL"):
        iotseal.Device(engine)
    with pytest.raises(iotseal.ConfigError, match="certificate pin"):
        iotseal.Device(engine, "https://127.0.0.1:1")


def test_exception_hierarchy() -> None:
    for cls in (
        iotseal.ConfigError,
        iotseal.QueueFull,
        iotseal.TransportError,
        iotseal.PinMismatch,
        iotseal.Refused,
        iotseal.Timeout,
    ):
        assert issubclass(cls, iotseal.Error)
    assert issubclass(iotseal.PinMismatch, iotseal.TransportError)
    assert issubclass(iotseal.Timeout, TimeoutError)
    assert iotseal.Refused("Busy").refusal == "Busy"
    assert iotseal.Timeout(3).pending == 3
