"""Type stubs of the extension module ``iotseal._native`` (Rust, PyO3): the sans-IO device
engine of iotseal, its events and counters. ``now`` arguments are the caller's clock in
milliseconds since the Unix epoch; left out, the system clock."""

from os import PathLike
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

__version__: str
#: The sensor names ``push`` accepts (besides ``other_<code>``), in wire-code order.
SENSORS: Tuple[str, ...]

_Values = Union[Mapping[str, float], Iterable[Tuple[str, float]]]

class Engine:
    """The sans-IO device engine. Call order: ``push`` readings; ``poll_transmit`` gives at
    most one request ``(path, body)``; send it and report the outcome with
    ``handle_response`` (HTTP), ``handle_payload`` (MQTT) or ``handle_transport_error``;
    drain ``poll_event``; when ``poll_transmit`` gives nothing, wait until ``poll_timeout()``
    and call ``handle_timeout``."""

    @staticmethod
    def from_files(
        pins_path: Union[str, "PathLike[str]"],
        key_path: Union[str, "PathLike[str]"],
        *,
        queue_capacity: Optional[int] = None,
        readings_per_record: Optional[int] = None,
        records_per_request: Optional[int] = None,
        max_request_len: Optional[int] = None,
        suites: Optional[List[str]] = None,
        mqtt: bool = False,
    ) -> "Engine":
        """An engine from a ``gateway.pub.toml`` and a device identity file. Raises
        ``iotseal.ConfigError``."""
    @staticmethod
    def from_strings(
        pins_toml: str,
        key_toml: str,
        *,
        queue_capacity: Optional[int] = None,
        readings_per_record: Optional[int] = None,
        records_per_request: Optional[int] = None,
        max_request_len: Optional[int] = None,
        suites: Optional[List[str]] = None,
        mqtt: bool = False,
    ) -> "Engine":
        """As ``from_files``, from the files' contents."""
    def push(
        self,
        sensor: str,
        value: float,
        time_ms: Optional[int] = None,
        extra: Optional[bytes] = None,
        now: Optional[int] = None,
    ) -> int:
        """Queues a reading of one value; returns its message id. Raises
        ``iotseal.QueueFull``, ``ValueError`` (unknown sensor, extra over 4096 bytes)."""
    def push_many(
        self,
        values: _Values,
        time_ms: Optional[int] = None,
        extra: Optional[bytes] = None,
        now: Optional[int] = None,
    ) -> int:
        """Queues a reading of several values (at most 32); returns its message id."""
    def poll_transmit(self, now: Optional[int] = None) -> Optional[Tuple[str, bytes]]:
        """The next request, ``(path, body)`` with path ``/v1/handshake`` or ``/v1/records``."""
    def handle_response(
        self,
        status: int,
        body: bytes,
        retry_after: Optional[int] = None,
        now: Optional[int] = None,
    ) -> None:
        """The HTTP answer to the request in flight (``retry_after``: the header, seconds)."""
    def handle_payload(self, payload: bytes, now: Optional[int] = None) -> None:
        """The MQTT answer to the request in flight."""
    def handle_transport_error(self, now: Optional[int] = None) -> None:
        """The request in flight got no answer."""
    def handle_timeout(self, now: Optional[int] = None) -> None:
        """Timers: ends a backoff that is over, drops an expired session."""
    def poll_timeout(self) -> Optional[int]:
        """When to call again without input (ms since the Unix epoch), or None."""
    def poll_event(self) -> Optional[Event]:
        """The next event, oldest first."""
    def connect(self) -> None:
        """Asks for a handshake even with nothing queued."""
    def resume(self) -> None:
        """Leaves the stopped state after a terminal refusal."""
    def drop_session(self) -> None:
        """Forgets the session."""
    def reading(self, msg_id: int) -> Optional[bytes]:
        """A queued reading's encoding (docs/protocol.md §8.12), None once acknowledged."""
    @property
    def stats(self) -> Stats: ...
    @property
    def pending(self) -> int: ...
    @property
    def is_waiting(self) -> bool: ...
    @property
    def is_established(self) -> bool: ...
    @property
    def session_id(self) -> Optional[int]: ...
    @property
    def suite(self) -> Optional[str]: ...
    @property
    def refusal(self) -> Optional[str]: ...
    @property
    def device_id(self) -> str: ...
    @property
    def next_msg_id(self) -> int: ...
    @property
    def clock_offset_ms(self) -> int: ...
    @property
    def request_budget(self) -> int: ...
    @property
    def gateway_url(self) -> Optional[str]: ...
    @property
    def tls_cert_sha256(self) -> Optional[bytes]: ...

class Stats:
    """The engine's counters."""

    handshake_attempts: int
    handshakes: int
    hello_retries: int
    clock_adoptions: int
    requests: int
    handshake_resends: int
    records_sent: int
    readings_sent: int
    acknowledged: int
    transport_errors: int
    bad_answers: int
    stray_answers: int
    key_updates: int
    sessions_lost: int
    backoffs: int
    queue_full: int
    events_dropped: int
    #: Refusals by name, those that happened.
    refusals: Dict[str, int]

class Event:
    """Base class of the engine's events."""

class HandshakeComplete(Event):
    session_id: int
    suite: str
    clock_adjusted_ms: Optional[int]

class HelloRetried(Event):
    reason: str

class HandshakeFailed(Event):
    error: str

class Acknowledged(Event):
    msg_ids: List[int]

class Refused(Event):
    refusal: str

class SessionLost(Event):
    reason: str
    refusal: Optional[str]

class KeyUpdated(Event):
    epoch: int

class BackingOff(Event):
    until_ms: int
    cause: str
    refusal: Optional[str]

class QueueFull(Event): ...

class LoopbackGateway:
    """A gateway in this process that knows one device (benchmarks, tests)."""

    def __init__(self, suite: Optional[str] = None) -> None: ...
    def engine(
        self,
        *,
        queue_capacity: Optional[int] = None,
        readings_per_record: Optional[int] = None,
        records_per_request: Optional[int] = None,
        max_request_len: Optional[int] = None,
    ) -> Engine: ...
    def serve(self, path: str, body: bytes, now: Optional[int] = None) -> Tuple[int, bytes]: ...
    @property
    def readings(self) -> int: ...

def rust_engine_rate(rounds: int, batch: int, suite: Optional[str] = None) -> Tuple[float, int]:
    """The benchmark loop driven from Rust: (seconds in the engine, readings acknowledged)."""
