"""The package docstring's MQTT example (the sans-IO Engine over paho-mqtt), run as written
against a gateway with the MQTT binding on the broker of IOTSEAL_TEST_MQTT (skipped without it
or without paho-mqtt; CI has both). Only the topic prefix, the file names and the readings
are substituted."""

from __future__ import annotations

import os

import pytest

import iotseal

from conftest import Gateway

BROKER = os.environ.get("IOTSEAL_TEST_MQTT")


def example() -> str:
    code = iotseal.__doc__.split("with paho-mqtt (v2, MQTT v5)::\n", 1)[1]
    lines = []
    for line in code.splitlines():
        if line and not line.startswith("    "):
            break  # the end of the indented block
        lines.append(line[4:])
    return "\n".join(lines)


@pytest.mark.skipif(not BROKER, reason="IOTSEAL_TEST_MQTT (a broker host:port) is not set")
def test_docstring_mqtt_example(tmp_path, capsys) -> None:
    pytest.importorskip("paho.mqtt")
    prefix = f"iotseal-py-test-{os.getpid()}/v1"
    gw = Gateway(tmp_path / "gw")
    gw.start(
        "--mqtt-broker",
        f"mqtt://{BROKER}",
        "--mqtt-client-id",
        f"iotseal-py-test-{os.getpid()}",
        "--mqtt-topic-prefix",
        prefix,
    )
    try:
        key = gw.add_device("py-mqtt")
        host, port = BROKER.rsplit(":", 1)
        src = example()
        for old, new in [
            ("iotseal/v1", prefix),
            ('"gateway.pub.toml", "sensor-1.key"', f'"{gw.pins}", "{key}"'),
            ('c.connect("127.0.0.1", 1883)', f'c.connect("{host}", {port})'),
            ('engine.push("temperature", 21.5)', 'engine.push("temperature", 21.5, 1767225600000)'),
        ]:
            assert old in src, old
            src = src.replace(old, new)
        exec(compile(src, "iotseal docstring (MQTT example)", "exec"), {})
        out = capsys.readouterr().out
        assert "HandshakeComplete" in out and "Acknowledged" in out
        stored = gw.readings("py-mqtt")
        assert [(r["device_time_ms"], r["values"]) for r in stored] == [
            (1767225600000, [["temperature", 21.5]])
        ]
    finally:
        gw.stop()
