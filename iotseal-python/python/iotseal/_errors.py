"""The exceptions of iotseal (re-exported by the package; the extension module raises
``ConfigError`` and ``QueueFull`` from here)."""

from __future__ import annotations

from typing import Optional


class Error(Exception):
    """Base class of every iotseal error."""


class ConfigError(Error, ValueError):
    """A pins file, identity file or setting that cannot be used (the message says which
    field and why)."""


class QueueFull(Error):
    """The reading queue is full: wait for acknowledgements (``flush``) before pushing more.
    The refused reading was not queued and took no message id."""


class TransportError(Error, OSError):
    """The gateway could not be reached, or the connection broke before an answer came.
    Readings stay queued; the engine retries with backoff."""


class PinMismatch(TransportError):
    """The server's TLS certificate does not match the pin (``tls_cert_sha256`` of the pins
    file): either not our gateway, or a gateway whose certificate changed (then the device
    needs the new ``gateway.pub.toml``). Nothing was sent on that connection."""

    def __init__(self, message: str, expected: str = "", got: str = "") -> None:
        super().__init__(message)
        #: The pinned SHA-256 (hex).
        self.expected = expected
        #: SHA-256 (hex) of the certificate the server sent.
        self.got = got


class Refused(Error):
    """The gateway refused the device in a way retrying cannot fix: ``refusal`` is the alert's
    name, ``"AuthFailed"`` (unknown or revoked device, wrong identity key, or identity pins of
    another gateway) or ``"NoCommonSuite"``. Readings stay queued; the device sends nothing
    until ``resume()`` (after the registration, key or pins were fixed)."""

    def __init__(self, refusal: str, message: Optional[str] = None) -> None:
        super().__init__(message or f"the gateway refused the device: {refusal}")
        #: The refusal's name (docs/protocol.md §4.5): "AuthFailed", "NoCommonSuite", ...
        self.refusal = refusal


class Timeout(Error, TimeoutError):
    """``flush`` ran out of time with readings still unacknowledged: ``pending`` of them stay
    queued and go out at the next ``flush``. ``acknowledged`` readings were acknowledged in
    the call that timed out. The last transport error, if any, is the ``__cause__``."""

    def __init__(self, pending: int, acknowledged: int = 0, message: Optional[str] = None) -> None:
        super().__init__(
            message
            or f"{pending} reading(s) still queued after the timeout ({acknowledged} acknowledged)"
        )
        #: Readings still waiting for acknowledgement.
        self.pending = pending
        #: Readings acknowledged during the call.
        self.acknowledged = acknowledged
