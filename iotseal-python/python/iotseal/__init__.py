"""iotseal for devices written in Python: readings sealed end to end to an iotseal gateway.

Five lines::

    import iotseal

    device = iotseal.Device.from_files("gateway.pub.toml", "sensor-1.key")
    device.push("temperature", 21.5)
    device.flush()          # -> 1: acknowledged by the gateway, stored

The protocol (handshake, sealing, acknowledgements, retries, backoff) is the Rust device
engine of iotseal (``iotseal-device-core``), compiled into ``iotseal._native``; this module
only moves its requests over HTTPS with ``http.client`` and ``ssl`` (docs/protocol.md §18).

Classes and functions
---------------------
- ``Device``: the synchronous HTTPS device. ``push``/``push_many`` queue readings (nothing is
  sent), ``flush`` sends them and returns once all are acknowledged, or raises ``Timeout``.
- ``Engine``: the sans-IO engine, for other transports (see "Custom transports" below).
- ``events``: what the engine reports (``Device(on_event=...)``, ``Engine.poll_event``).
- Exceptions: ``Error`` and its subclasses ``ConfigError``, ``QueueFull``, ``TransportError``
  (``PinMismatch``), ``Refused``, ``Timeout``.

The certificate pin
-------------------
The device trusts exactly one TLS certificate: the one whose DER has the SHA-256
``tls_cert_sha256`` of ``gateway.pub.toml``. ``ssl`` is set to check neither a CA chain nor
the host name (``CERT_NONE``, ``check_hostname = False``, TLS 1.3 only); right after the TLS
handshake, before a byte of the request is written, SHA-256 of
``sock.getpeercert(binary_form=True)`` (the DER of the end-entity certificate the server
sent) is compared with the pin in constant time (``hmac.compare_digest``), and the
connection is closed with ``PinMismatch`` unless they are equal. That is exactly the rule of
docs/protocol.md §18.2, which the Rust SDK follows: accept if and only if the leaf
certificate's DER hashes to the pin, no CA chain, no host name, no validity dates, no
revocation; OpenSSL still checks the TLS 1.3 CertificateVerify signature with that
certificate's key during the handshake (``CERT_NONE`` turns off chain verification, not the
handshake signature), so a server that merely replays the certificate without its private
key fails the handshake. The one difference is when: the Rust SDK rejects inside the TLS
handshake, this driver just after it; either way nothing is sent to a server that does not
match. The pin only authenticates the TLS connection; the readings are sealed end to end
to the gateway's pinned identity keys whatever terminates TLS.

Custom transports
-----------------
``Engine`` does no I/O: push readings, take requests from ``poll_transmit``, carry them, and
hand back the answers. Over MQTT (docs/protocol.md §17) with paho-mqtt (v2, MQTT v5)::

    import os, queue, time
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    import iotseal

    engine = iotseal.Engine.from_files("gateway.pub.toml", "sensor-1.key", mqtt=True)
    client_id = "iots-" + os.urandom(9).hex()
    inbox, answers = f"iotseal/v1/inbox/{client_id}", queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5)
    c.on_message = lambda c, u, m: answers.put(
        (m.properties.CorrelationData, m.payload))
    c.connect("127.0.0.1", 1883)
    c.subscribe(inbox, qos=1)
    c.loop_start()
    engine.push("temperature", 21.5)
    counter = 0
    while engine.pending:
        t = engine.poll_transmit()
        if t is None:                      # backing off: wait for the engine's timer
            wake = engine.poll_timeout()
            time.sleep(max(0.0, (wake / 1000 - time.time())) if wake else 0.05)
            engine.handle_timeout()
            continue
        path, body = t
        counter += 1
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic, props.CorrelationData = inbox, counter.to_bytes(8, "big")
        kind = "hs" if path == "/v1/handshake" else "rec"
        c.publish(f"iotseal/v1/{kind}/{client_id}", body, qos=1, properties=props)
        try:
            while True:
                corr, payload = answers.get(timeout=10)
                if corr == props.CorrelationData:
                    engine.handle_payload(payload)
                    break
        except queue.Empty:
            engine.handle_transport_error()
        while (event := engine.poll_event()) is not None:
            print(event)
    c.loop_stop()
    c.disconnect()
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Tuple, Union

from . import events
from ._errors import (
    ConfigError,
    Error,
    PinMismatch,
    QueueFull,
    Refused,
    Timeout,
    TransportError,
)
from ._native import SENSORS, Engine, Stats, __version__

__all__ = [
    "SENSORS",
    "ConfigError",
    "Device",
    "Engine",
    "Error",
    "PinMismatch",
    "QueueFull",
    "Refused",
    "Stats",
    "Timeout",
    "TransportError",
    "TransportStats",
    "events",
    "__version__",
]

#: Seconds one request may take (as the Rust SDK, docs/protocol.md §18.4).
REQUEST_TIMEOUT = 10.0
#: A kept-alive connection idle this long is not reused (the gateway closes idle connections
#: after 30 s, §18.1; the Rust SDK also stops at 20 s).
IDLE_REUSE_LIMIT = 20.0
#: The largest answer read (§18.4).
MAX_ANSWER = 1 << 20

_CONNECTION_ERRORS = (OSError, http.client.HTTPException, ssl.SSLError)


@dataclass
class TransportStats:
    """What the HTTPS driver did (``Device.transport``)."""

    #: Connections opened (each a TLS handshake and a pin check).
    connections: int = 0
    #: HTTP requests sent.
    requests: int = 0
    #: Request bodies, bytes (the sealed protocol messages: M1, M3 with records, batches).
    bytes_sent: int = 0
    #: Answer bodies, bytes.
    bytes_received: int = 0
    #: Seconds spent in the engine producing requests (sealing readings into records, and
    #: the handshake's public-key work).
    seal_seconds: float = 0.0
    #: Requests that got no answer.
    transport_errors: int = 0


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that trusts exactly the certificate whose DER has SHA-256 ``pin``."""

    def __init__(self, host: str, port: int, pin: bytes, timeout: float) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # The pin is the identity (docs/protocol.md §18.2): no CA chain, no host name, no dates.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        super().__init__(host, port, timeout=timeout, context=ctx)
        self._pin = pin

    def connect(self) -> None:
        super().connect()  # TCP, then the TLS handshake (CertificateVerify checked by OpenSSL)
        assert isinstance(self.sock, ssl.SSLSocket)
        der = self.sock.getpeercert(binary_form=True)
        got = hashlib.sha256(der or b"").digest()
        if der is None or not hmac.compare_digest(got, self._pin):
            self.close()
            raise PinMismatch(
                f"the TLS certificate of {self.host}:{self.port} does not match the pin "
                f"(tls_cert_sha256 of the pins file): expected {self._pin.hex()}, the server "
                f"sent one with SHA-256 {got.hex() if der else '(none)'}; not our gateway, or "
                "its certificate changed and the device needs the new gateway.pub.toml",
                expected=self._pin.hex(),
                got=got.hex() if der else "",
            )


class Device:
    """A device sending readings to an iotseal gateway over HTTPS, synchronously.

    Make one with ``Device.from_files`` (or ``from_strings``). ``push`` and ``push_many``
    only queue (in memory, bounded: ``QueueFull``); ``flush`` sends everything queued and
    returns once the gateway has acknowledged all of it. A reading is forgotten only when
    the gateway acknowledged it (stored); until then it stays queued, across failed
    ``flush`` calls, and goes out at the next one. One connection is kept alive between
    requests. Not thread-safe: use one ``Device`` per thread, or a lock.
    """

    def __init__(
        self,
        engine: Engine,
        url: Optional[str] = None,
        *,
        on_event: Optional[Callable[[events.Event], None]] = None,
    ) -> None:
        """A device driving ``engine`` to ``url`` (default: the ``url`` of its pins file).
        ``on_event`` is called with every engine event (``iotseal.events``)."""
        url = url or engine.gateway_url
        if not url:
            raise ConfigError("no gateway URL: pass url=... (the engine has no pins file)")
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("https", "http") or not u.hostname:
            raise ConfigError(f"gateway URL {url!r}: expected https://HOST[:PORT]")
        pin = engine.tls_cert_sha256
        if u.scheme == "https" and pin is None:
            raise ConfigError("an https URL needs a certificate pin (a pins file)")
        self._engine = engine
        self._url = url
        self._scheme = u.scheme
        self._host = u.hostname
        self._port = u.port or (443 if u.scheme == "https" else 80)
        self._base = u.path.rstrip("/")
        self._pin = pin
        self._on_event = on_event
        self._conn: Optional[http.client.HTTPConnection] = None
        self._last_used = 0.0
        self._last_now = 0
        #: What the driver did.
        self.transport = TransportStats()
        # The engine's bound methods themselves, with the signatures below: no Python frame
        # between the application and the engine (a third of the cost of a push,
        # docs/performance.md "Devices in Python").
        self.push = engine.push  # type: ignore[method-assign]
        self.push_many = engine.push_many  # type: ignore[method-assign]

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_files(
        cls,
        pins_path: Union[str, "os.PathLike[str]"],
        key_path: Union[str, "os.PathLike[str]"],
        url: Optional[str] = None,
        *,
        on_event: Optional[Callable[[events.Event], None]] = None,
        **settings: object,
    ) -> "Device":
        """A device from the gateway's ``gateway.pub.toml`` and the device's identity file
        (``iotseal device keygen``), sending to ``url`` (default: the pins file's ``url``).
        ``settings`` are those of ``Engine.from_files`` (``queue_capacity``,
        ``readings_per_record``, ``records_per_request``, ``max_request_len``, ``suites``).
        Raises ``ConfigError`` for a file that cannot be read or used."""
        engine = Engine.from_files(str(pins_path), str(key_path), **settings)  # type: ignore[arg-type]
        return cls(engine, url, on_event=on_event)

    @classmethod
    def from_strings(
        cls,
        pins_toml: str,
        key_toml: str,
        url: Optional[str] = None,
        *,
        on_event: Optional[Callable[[events.Event], None]] = None,
        **settings: object,
    ) -> "Device":
        """As ``from_files``, from the files' contents."""
        engine = Engine.from_strings(pins_toml, key_toml, **settings)  # type: ignore[arg-type]
        return cls(engine, url, on_event=on_event)

    # -- readings -----------------------------------------------------------------------

    def push(
        self,
        sensor: str,
        value: float,
        time_ms: Optional[int] = None,
        extra: Optional[bytes] = None,
    ) -> int:
        """Queues a reading of one value (``sensor``: a name of ``iotseal.SENSORS``, such as
        ``"temperature"``; the value is sent as a 32-bit float) and returns its message id.
        ``time_ms``: when it was taken, ms since the Unix epoch (default: now, on the clock
        corrected by the gateway's); ``extra``: opaque bytes stored with it (at most 4096).
        Nothing is sent: see ``flush``. Raises ``QueueFull`` when the queue is full."""
        return self._engine.push(sensor, value, time_ms, extra)

    def push_many(
        self,
        values: Union[Mapping[str, float], Iterable[Tuple[str, float]]],
        time_ms: Optional[int] = None,
        extra: bytes = b"",
    ) -> int:
        """Queues one reading of several values, ``{"temperature": 21.5, "humidity": 40.0}``
        (or pairs, where a sensor may appear twice; at most 32), as ``push``."""
        return self._engine.push_many(values, time_ms, extra)

    @property
    def pending(self) -> int:
        """Readings queued and not yet acknowledged."""
        return self._engine.pending

    @property
    def stats(self) -> Stats:
        """The engine's counters (handshakes, records, readings, refusals, backoffs)."""
        return self._engine.stats

    @property
    def engine(self) -> Engine:
        """The sans-IO engine this device drives."""
        return self._engine

    @property
    def url(self) -> str:
        """The gateway's URL."""
        return self._url

    # -- sending ------------------------------------------------------------------------

    def flush(self, timeout: float = 30.0) -> int:
        """Sends every queued reading and waits until the gateway has acknowledged all of
        them; returns how many were acknowledged during this call.

        Failures are retried with backoff (the engine's) until ``timeout`` seconds have
        passed; then ``Timeout`` is raised (``pending`` readings stay queued, the last
        transport error is its ``__cause__``). Raises ``PinMismatch`` at once when the server's
        certificate does not match the pin, and ``Refused`` when the gateway refuses the
        device in a way retrying cannot fix (unknown or revoked device): readings stay
        queued in both cases."""
        engine = self._engine
        deadline = time.monotonic() + timeout
        acked = 0
        last_error: Optional[BaseException] = None
        while True:
            acked += self._drain_events()
            refusal = engine.refusal
            if refusal is not None:
                raise Refused(
                    refusal,
                    f"the gateway refused the device: {refusal}"
                    + (
                        " (unknown or revoked device, a key the gateway does not have for it, "
                        "or identity pins of another gateway)"
                        if refusal == "AuthFailed"
                        else ""
                    )
                    + f"; {engine.pending} reading(s) stay queued, device.resume() to try again",
                )
            if engine.pending == 0 and not engine.is_waiting:
                return acked
            now = self._now()
            started = time.perf_counter()
            transmit = engine.poll_transmit(now)
            self.transport.seal_seconds += time.perf_counter() - started
            if transmit is not None:
                path, body = transmit
                try:
                    status, answer, retry_after = self._send(path, body, deadline)
                except PinMismatch:
                    self.transport.transport_errors += 1
                    engine.handle_transport_error(self._now())
                    self._drain_events()
                    raise
                except _CONNECTION_ERRORS as e:
                    self.transport.transport_errors += 1
                    last_error = TransportError(f"{path}: {type(e).__name__}: {e}")
                    last_error.__cause__ = e
                    engine.handle_transport_error(self._now())
                else:
                    engine.handle_response(status, answer, retry_after, self._now())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(engine.pending, acked) from last_error
            wake = engine.poll_timeout()
            wait = 0.05 if wake is None else max(0.0, (wake - now) / 1000.0)
            time.sleep(min(wait, remaining))
            engine.handle_timeout(self._now())

    def resume(self) -> None:
        """After ``Refused``: try again at the next ``flush`` (once the device is registered
        again, or its key or pins were fixed)."""
        self._engine.resume()

    def close(self) -> None:
        """Closes the kept-alive connection (queued readings stay queued)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Device(id={self._engine.device_id!r}, url={self._url!r}, pending={self.pending})"

    # -- internals ----------------------------------------------------------------------

    def _now(self) -> int:
        # The engine wants a clock that does not go backwards during a handshake.
        now = max(self._last_now, int(time.time() * 1000))
        self._last_now = now
        return now

    def _drain_events(self) -> int:
        acked = 0
        while True:
            e = self._engine.poll_event()
            if e is None:
                return acked
            if isinstance(e, events.Acknowledged):
                acked += len(e.msg_ids)
            if self._on_event is not None:
                self._on_event(e)

    def _connection(self, timeout: float) -> Tuple[http.client.HTTPConnection, bool]:
        """The kept-alive connection (and True), or a new one (and False)."""
        if self._conn is not None and time.monotonic() - self._last_used > IDLE_REUSE_LIMIT:
            self.close()
        if self._conn is not None:
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
            return self._conn, True
        conn: http.client.HTTPConnection
        if self._scheme == "https":
            assert self._pin is not None
            conn = _PinnedHTTPSConnection(self._host, self._port, self._pin, timeout)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        self.transport.connections += 1
        self._conn = conn
        return conn, False

    def _send(self, path: str, body: bytes, deadline: float) -> Tuple[int, bytes, Optional[int]]:
        """POSTs ``body``; returns (status, answer, Retry-After seconds). A request on a reused
        connection that the gateway had closed meanwhile goes once more on a new one (the
        same bytes: always safe, docs/protocol.md §18.9)."""
        for attempt in (0, 1):
            timeout = max(0.05, min(REQUEST_TIMEOUT, deadline - time.monotonic()))
            conn, reused = self._connection(timeout)
            try:
                result = self._exchange(conn, path, body)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self.close()
                raise
            self._last_used = time.monotonic()
            return result
        raise AssertionError("unreachable")

    def _exchange(
        self, conn: http.client.HTTPConnection, path: str, body: bytes
    ) -> Tuple[int, bytes, Optional[int]]:
        conn.request(
            "POST",
            self._base + path,
            body=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        self.transport.requests += 1
        self.transport.bytes_sent += len(body)
        resp = conn.getresponse()
        length = resp.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > MAX_ANSWER:
            raise TransportError(f"answer of {length} bytes: at most {MAX_ANSWER}")
        answer = resp.read(MAX_ANSWER + 1)
        if len(answer) > MAX_ANSWER:
            raise TransportError(f"answer over {MAX_ANSWER} bytes")
        self.transport.bytes_received += len(answer)
        retry = resp.getheader("Retry-After")
        retry_after = None
        if retry is not None and retry.strip().isdigit():
            retry_after = min(int(retry), 0xFFFF_FFFF)
        if resp.will_close:
            self.close()
        return resp.status, answer, retry_after

