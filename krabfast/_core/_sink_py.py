"""Pure-Python twin of `sink.pyx`: batches the frames produced while one read buffer is
processed into a single transport write."""

from __future__ import annotations


def frame_text(payload: bytes) -> bytes:
    """A complete unmasked (server-side) WebSocket text frame around `payload`."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126, n >> 8, n & 0xFF)) + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class WireSink:
    __slots__ = ("transport", "raw", "pending", "closed", "_raw_write",
                 "_raw_buffered", "__weakref__")

    def __init__(self, transport) -> None:
        self.transport = transport
        self.raw = transport.underlying_transport
        self.pending: list[bytes] | None = None
        self.closed = False
        self._raw_write = self.raw.write
        self._raw_buffered = self.raw.get_write_buffer_size

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.pending is not None:
            self.pending.append(data)
        else:
            self._raw_write(frame_text(data))

    def begin(self) -> None:
        if self.pending is None and not self.closed:
            self.pending = []

    def flush(self) -> None:
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        if not pending:
            return
        if len(pending) == 1:
            self._raw_write(frame_text(pending[0]))
            return
        self._raw_write(b"".join([frame_text(p) for p in pending]))

    def buffered(self) -> int:
        return self._raw_buffered()

    def mark_closed(self) -> None:
        self.flush()
        self.closed = True
