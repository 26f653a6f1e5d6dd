"""The write side of a connection: batches the frames produced while one read buffer is
processed into a single transport write (one source: compiled with sink.pxd, or plain
Python with KRABFAST_NO_EXTENSIONS=1).

While batching, frames are assembled straight into one bytearray (WebSocket header, then
the JSON), so a response is copied once on its way to the socket: no intermediate frame
bytes, no join at flush.
"""

from krabfast._core.wire import encode_json

_RES_OK = b'{"type":"res","id":'
_OK_MID = b',"ok":true,"payload":'
_ERR_MID = b',"ok":false,"error":'
_CLOSE_BRACE = b"}"


def frame_text(payload):
    """A complete unmasked (server-side) WebSocket text frame around `payload`."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126, n >> 8, n & 0xFF)) + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def _put_header(buf, n):
    """Append the header of a text frame of `n` payload bytes to `buf`."""
    buf.append(0x81)
    if n < 126:
        buf.append(n)
    elif n < 65536:
        buf.append(126)
        buf.append(n >> 8)
        buf.append(n & 0xFF)
    else:
        buf.append(127)
        buf += n.to_bytes(8, "big")


class WireSink:
    __slots__ = ("transport", "raw", "pending", "closed", "_raw_write", "_raw_buffered")

    def __init__(self, transport):
        self.transport = transport
        self.raw = transport.underlying_transport
        self.pending = None  # the batch being assembled (a bytearray), else None
        self.closed = False
        self._raw_write = self.raw.write
        self._raw_buffered = self.raw.get_write_buffer_size

    def send(self, data):
        if self.closed:
            return
        pending = self.pending
        if pending is not None:
            _put_header(pending, len(data))
            pending += data
        else:
            self._raw_write(frame_text(data))

    def send_response(self, req_id, ok, body):
        """`send(wire.response_ok(req_id, body))` (or response_error when not ok),
        assembled in place."""
        if self.closed:
            return
        id_json = encode_json(req_id)
        mid = _OK_MID if ok else _ERR_MID
        n = len(_RES_OK) + len(id_json) + len(mid) + len(body) + 1
        pending = self.pending
        if pending is None:
            buf = bytearray()
            _put_header(buf, n)
        else:
            buf = pending
            _put_header(buf, n)
        buf += _RES_OK
        buf += id_json
        buf += mid
        buf += body
        buf += _CLOSE_BRACE
        if pending is None:
            self._raw_write(buf)

    def begin(self):
        if self.pending is None and not self.closed:
            self.pending = bytearray()

    def flush(self):
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        if len(pending):
            # The transport keeps (a view of) the bytearray if it cannot write it all at
            # once; it is never touched again here.
            self._raw_write(pending)

    def buffered(self):
        return self._raw_buffered()

    def mark_closed(self):
        self.flush()
        self.closed = True
