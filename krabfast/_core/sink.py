"""The write side of a connection: batches the frames produced while one read buffer is
processed into a single transport write (one source: compiled with sink.pxd, or plain
Python with KRABFAST_NO_EXTENSIONS=1)."""


def frame_text(payload):
    """A complete unmasked (server-side) WebSocket text frame around `payload`."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126, n >> 8, n & 0xFF)) + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class WireSink:
    __slots__ = ("transport", "raw", "pending", "closed", "_raw_write", "_raw_buffered")

    def __init__(self, transport):
        self.transport = transport
        self.raw = transport.underlying_transport
        self.pending = None  # frames queued while batching (a list), else None
        self.closed = False
        self._raw_write = self.raw.write
        self._raw_buffered = self.raw.get_write_buffer_size

    def send(self, data):
        if self.closed:
            return
        if self.pending is not None:
            self.pending.append(data)
        else:
            self._raw_write(frame_text(data))

    def begin(self):
        if self.pending is None and not self.closed:
            self.pending = []

    def flush(self):
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        n = len(pending)
        if n == 0:
            return
        if n == 1:
            self._raw_write(frame_text(pending[0]))
            return
        self._raw_write(b"".join([frame_text(p) for p in pending]))

    def buffered(self):
        return self._raw_buffered()

    def mark_closed(self):
        self.flush()
        self.closed = True
