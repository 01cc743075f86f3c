"""What the engine reports (``Engine.poll_event()``, ``Device(on_event=...)``): one class per
event, all subclasses of ``Event``; refusals, causes and reasons are names (``"Busy"``).

- ``HandshakeComplete(session_id, suite, clock_adjusted_ms)``: a session is open.
- ``HelloRetried(reason)``: the gateway asked for a retried hello (``"Clock"``, ``"KeyShare"``,
  ``"Address"``: under load, proof that answers reach the device).
- ``HandshakeFailed(error)``: the gateway's answer to a handshake message did not verify.
- ``Acknowledged(msg_ids)``: these readings are stored by the gateway and forgotten here.
- ``Refused(refusal)``: a refusal retrying cannot fix; the engine stopped until ``resume()``.
- ``SessionLost(reason, refusal)``: the session ended; the next request handshakes again.
- ``KeyUpdated(epoch)``: records are now sealed under a new key.
- ``BackingOff(until_ms, cause, refusal)``: a request failed; nothing is sent before
  ``until_ms``.
- ``QueueFull()``: a push was refused because the queue is full.
"""

from ._native import (
    Acknowledged,
    BackingOff,
    Event,
    HandshakeComplete,
    HandshakeFailed,
    HelloRetried,
    KeyUpdated,
    QueueFull,
    Refused,
    SessionLost,
)

__all__ = [
    "Acknowledged",
    "BackingOff",
    "Event",
    "HandshakeComplete",
    "HandshakeFailed",
    "HelloRetried",
    "KeyUpdated",
    "QueueFull",
    "Refused",
    "SessionLost",
]
