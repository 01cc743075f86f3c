"""iotseal.Device against a real gateway (`iotseal gateway run`)."""

from __future__ import annotations

import struct
import time

import pytest

import iotseal

from conftest import Gateway


def varint(v: int) -> bytes:
    """The protocol's variable-length integer (docs/protocol.md §2)."""
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return (v | 0x4000).to_bytes(2, "big")
    if v < 1 << 30:
        return (v | 0x8000_0000).to_bytes(4, "big")
    return (v | 0xC000_0000_0000_0000).to_bytes(8, "big")


def code(name: str) -> int:
    if name.startswith("other_"):
        return int(name[6:])
    return iotseal.SENSORS.index(name) + 1


def encoding(msg_id: int, time_ms: int, values, extra: bytes = b"") -> bytes:
    """A reading's encoding (docs/protocol.md §8.12), written independently of the engine."""
    out = varint(msg_id) + varint(time_ms) + bytes([len(values)])
    for name, v in values:
        out += bytes([code(name)]) + struct.pack(">f", v)
    return out + varint(len(extra)) + extra


def f32(v: float) -> bytes:
    return struct.pack(">f", v)


def test_readings_are_stored_byte_for_byte(gateway: Gateway) -> None:
    key = gateway.add_device("py-bytes")
    device = iotseal.Device.from_files(gateway.pins, key, url=gateway.url)
    t0 = int(time.time() * 1000) - 3_600_000
    sent = []  # (msg_id, time_ms or None, values, extra)

    def push(values, time_ms, extra=b""):
        if len(values) == 1 and not extra:
            msg = device.push(values[0][0], values[0][1], time_ms)
        else:
            msg = device.push_many(values, time_ms, extra)
        sent.append((msg, time_ms, values, extra))
        # What the engine will seal, before it is sent.
        if time_ms is not None:
            assert device.engine.reading(msg) == encoding(msg, time_ms, values, extra)

    push([("temperature", 21.5)], t0)
    push([("humidity", 40.1)], t0 + 1)
    assert device.flush() == 2
    push([("temperature", -12.25), ("humidity", 55.5), ("pressure", 1013.25)], t0 + 2, b"\x00\xffbin")
    push([("accel_x", 0.5), ("accel_x", -0.5)], t0 + 3)
    push([("other_200", 3.0)], t0 + 4)
    before = int(time.time() * 1000)
    push([("battery", 97.0)], None)
    after = int(time.time() * 1000)
    assert device.pending == 4
    assert device.flush() == 4
    assert device.pending == 0
    assert device.flush() == 0, "nothing queued: nothing to do"
    assert device.transport.connections == 1, "one kept-alive connection"
    assert device.stats.handshakes == 1

    stored = {r["msg_id"]: r for r in gateway.readings("py-bytes")}
    assert sorted(stored) == [m for m, *_ in sent]
    for msg, time_ms, values, extra in sent:
        r = stored[msg]
        if time_ms is None:
            assert before <= r["device_time_ms"] <= after
            time_ms = r["device_time_ms"]
        assert r["device_time_ms"] == time_ms
        assert bytes.fromhex(r["payload_hex"]) == encoding(msg, time_ms, values, extra)
        assert [name for name, _ in r["values"]] == [name for name, _ in values]
        assert [f32(v) for _, v in r["values"]] == [f32(v) for _, v in values]


def test_from_strings_and_many_readings(gateway: Gateway) -> None:
    key = gateway.add_device("py-many")
    device = iotseal.Device.from_strings(
        gateway.pins.read_text(), key.read_text(), url=gateway.url, readings_per_record=50
    )
    for i in range(1000):
        device.push("temperature", i / 10, time_ms=1_767_225_600_000 + i)
    assert device.flush() == 1000
    stored = gateway.readings("py-many")
    assert [r["msg_id"] for r in stored] == list(range(1, 1001))
    assert device.stats.records_sent >= 20  # 50 a record (more only if a request was resent)


def test_wrong_certificate_pin_is_refused(gateway: Gateway, tmp_path) -> None:
    other = Gateway(tmp_path / "other")  # another gateway's pins: another certificate
    key = gateway.add_device("py-pin")
    device = iotseal.Device.from_files(other.pins, key, url=gateway.url)
    device.push("temperature", 1.0)
    with pytest.raises(iotseal.PinMismatch) as e:
        device.flush(timeout=10)
    assert isinstance(e.value, iotseal.TransportError)
    assert "does not match the pin" in str(e.value)
    assert e.value.expected == other.pins.read_text().split('tls_cert_sha256 = "')[1][:64]
    assert device.pending == 1, "the reading stays queued"
    assert device.transport.requests == 0, "nothing was sent"
    assert gateway.readings("py-pin") == []


def test_identity_pins_of_another_gateway_are_refused(gateway: Gateway, tmp_path) -> None:
    other = Gateway(tmp_path / "other")
    key = gateway.add_device("py-idpin")
    ours, theirs = gateway.pins.read_text(), other.pins.read_text()
    # Our certificate pin, their identity keys: TLS passes, the protocol refuses.
    mixed = ours[: ours.index("[[identity]]")] + theirs[theirs.index("[[identity]]") :]
    device = iotseal.Device.from_strings(mixed, key.read_text(), url=gateway.url)
    device.push("temperature", 1.0)
    with pytest.raises(iotseal.Refused) as e:
        device.flush(timeout=20)
    assert e.value.refusal == "AuthFailed"
    assert device.pending == 1


def test_unregistered_device_is_refused(gateway: Gateway) -> None:
    key = gateway.add_device("py-stranger", register=False)
    device = iotseal.Device.from_files(gateway.pins, key, url=gateway.url)
    device.push("temperature", 1.0)
    with pytest.raises(iotseal.Refused) as e:
        device.flush(timeout=20)
    assert e.value.refusal == "AuthFailed"


def test_revoked_device_is_refused(gateway: Gateway) -> None:
    key = gateway.add_device("py-revoked")
    device = iotseal.Device.from_files(gateway.pins, key, url=gateway.url)
    device.push("temperature", 20.0)
    assert device.flush() == 1
    gateway.revoke("py-revoked")
    device.push("temperature", 21.0)
    with pytest.raises(iotseal.Refused) as e:
        device.flush(timeout=20)
    assert e.value.refusal == "AuthFailed"
    assert "AuthFailed" in str(e.value)
    assert device.pending == 1, "the reading stays queued"
    with pytest.raises(iotseal.Refused):
        device.flush(timeout=1)  # stopped until resume(), without a request
    assert [r["msg_id"] for r in gateway.readings("py-revoked")] == [1]


def test_gateway_down_keeps_readings_until_it_is_back(own_gateway: Gateway) -> None:
    gw = own_gateway
    key = gw.add_device("py-down")
    key2 = gw.add_device("py-down-2")
    device = iotseal.Device.from_files(gw.pins, key, url=gw.url)
    device.push("temperature", 1.0)
    assert device.flush() == 1
    gw.stop()
    for i in range(3):
        device.push("temperature", 2.0 + i)
    # A device whose first contact falls while the gateway is down.
    late = iotseal.Device.from_files(gw.pins, key2, url=gw.url)
    late.push("humidity", 50.0)
    with pytest.raises(iotseal.Timeout) as e:
        device.flush(timeout=2)
    assert e.value.pending == 3
    assert isinstance(e.value.__cause__, iotseal.TransportError)
    with pytest.raises(iotseal.Timeout):
        late.flush(timeout=1)
    assert device.pending == 3 and late.pending == 1
    gw.start()  # the same directory and port: its sessions are gone
    assert device.flush(timeout=30) == 3
    assert late.flush(timeout=30) == 1
    assert device.stats.handshakes == 2, "the gateway forgot the session: a new handshake"
    assert [r["msg_id"] for r in gw.readings("py-down")] == [1, 2, 3, 4]
    assert [r["values"] for r in gw.readings("py-down-2")] == [[["humidity", 50.0]]]


def test_example_client(gateway: Gateway, python: str) -> None:
    import subprocess
    from conftest import PACKAGE

    key = gateway.add_device("py-example")
    r = subprocess.run(
        [
            python,
            str(PACKAGE / "examples" / "client.py"),
            str(gateway.pins),
            str(key),
            "--url",
            gateway.url,
            "--count",
            "3",
            "--interval",
            "0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r.stdout
    for line in lines:
        assert "sealed in" in line and "B sent" in line and line.endswith("stored"), line
    stored = gateway.readings("py-example")
    assert len(stored) == 3
    assert all([n for n, _ in s["values"]] == ["temperature", "humidity"] for s in stored)
