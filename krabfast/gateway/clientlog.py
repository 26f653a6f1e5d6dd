"""One log line per client connect, disconnect and refused connect, rate limited.

Each kind of line has its own token bucket (`rate` lines per second, bursts of `burst`),
so one hostile client hammering the handshake cannot flood the log or slow the gateway
down: lines over the limit are counted, and the count is reported as one
"N ... lines suppressed" line when the next line of that kind gets through or when
`flush()` runs (the server calls it every few seconds).

The connection state machine calls it through the hub (`hub.client_log`); nothing here
runs unless the logger is enabled for `level`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

LOGGER_NAME = "krabfast.clients"
KINDS = ("connect", "disconnect", "refused")
_SUMMARY_NAMES = {"connect": "client connect", "disconnect": "client disconnect",
                  "refused": "refused connect"}


class _Bucket:
    __slots__ = ("rate", "burst", "tokens", "stamp", "suppressed")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now
        self.suppressed = 0

    def take(self, now: float) -> bool:
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


class _Client(msgspec.Struct):
    id: Any = None
    mode: Any = None


class _Who(msgspec.Struct):
    """Just enough of a connect request to say who was refused (read leniently)."""

    client: Any = None
    role: Any = None


_who_decoder = msgspec.json.Decoder(_Who)


class ClientLog:
    def __init__(self, logger: logging.Logger | None = None, *, rate: float = 5.0,
                 burst: int = 20, level: int = logging.INFO, clock=time.monotonic) -> None:
        self.log = logger or logging.getLogger(LOGGER_NAME)
        self.level = level
        self.clock = clock
        now = clock()
        self.buckets = {kind: _Bucket(rate, burst, now) for kind in KINDS}

    # -- rate limit ------------------------------------------------------------------------------
    def _allow(self, kind: str) -> bool:
        if not self.log.isEnabledFor(self.level):
            return False
        bucket = self.buckets[kind]
        if not bucket.take(self.clock()):
            bucket.suppressed += 1
            return False
        if bucket.suppressed:
            self._summary(kind, bucket)
        return True

    def _summary(self, kind: str, bucket: _Bucket) -> None:
        count, bucket.suppressed = bucket.suppressed, 0
        self.log.log(self.level, "%d %s lines suppressed (rate limit)", count, _SUMMARY_NAMES[kind])

    def flush(self) -> None:
        """Report the lines suppressed since the last line of each kind."""
        if not self.log.isEnabledFor(self.level):
            return
        for kind, bucket in self.buckets.items():
            if bucket.suppressed:
                self._summary(kind, bucket)

    # -- the three lines ---------------------------------------------------------------------------
    def connected(self, conn) -> None:
        if not self._allow("connect"):
            return
        client = conn.client
        extra = ""
        if conn.device is not None:
            extra += f" device={_clean(conn.device.id, 16)}"
        scopes = ",".join(sorted(conn.scopes)) or "-"
        self.log.log(self.level, "client connected: %s/%s %s role=%s scopes=%s addr=%s auth=%s "
                     "protocol=%d conn=%s%s", _clean(client.id), _clean(client.mode),
                     _clean(client.version), conn.role, scopes, _addr(conn), conn.auth_method or "-",
                     conn.protocol, conn.conn_id, extra)

    def disconnected(self, conn) -> None:
        if not self._allow("disconnect"):
            return
        client = conn.client
        seconds = max(0, conn.hub.clock_ms() - conn.connected_at) / 1000 if conn.connected_at else 0
        self.log.log(self.level, "client disconnected: %s/%s role=%s addr=%s conn=%s after %.1f s",
                     _clean(client.id) if client else "?", _clean(client.mode) if client else "?",
                     conn.role or "-", _addr(conn), conn.conn_id, seconds)

    def refused(self, conn, frame, err) -> None:
        """A `connect` that failed with `err` (a GatewayError); `frame` is its request."""
        if not self._allow("refused"):
            return
        client_id = mode = role = "?"
        params = getattr(frame, "params", msgspec.UNSET)
        if params is not msgspec.UNSET:
            try:
                who = _who_decoder.decode(params)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                who = None
            if who is not None:
                if isinstance(who.client, dict):
                    client_id = _clean(who.client.get("id"))
                    mode = _clean(who.client.get("mode"))
                role = _clean(who.role) if who.role is not None else "operator"
        details = err.details if isinstance(err.details, dict) else {}
        code = details.get("code") or getattr(err.code, "value", err.code)
        self.log.log(self.level, "client refused: %s/%s role=%s addr=%s code=%s: %s",
                     client_id, mode, role, _addr(conn), _clean(code, 40), _clean(err.message, 160))


def _addr(conn) -> str:
    return str(conn.peer_ip or "?")


def _clean(value, limit: int = 64) -> str:
    """Client-supplied text made safe for one log line: printable, bounded."""
    if value is None:
        return "?"
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text or "?"
