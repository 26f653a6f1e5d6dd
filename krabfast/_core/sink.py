"""The write side of a connection: batches the frames produced while one read buffer is
processed into a single transport write (one source: compiled with sink.pxd, or plain
Python with KRABFAST_NO_EXTENSIONS=1).

While batching, frames are assembled straight into one bytearray (WebSocket header, then
the JSON), so a response is copied once on its way to the socket: no intermediate frame
bytes, no join at flush.
"""

try:
    import cython
except ImportError:  # plain Python without Cython installed: only `compiled` is read
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

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


def _grow(buf, n):
    """Compiled only: append the header of a text frame of `n` payload bytes to `buf` and
    grow it by `n` more; returns where the payload goes (one resize per frame)."""
    h = 2 if n < 126 else 4 if n < 65536 else 10
    start = len(buf)
    PyByteArray_Resize(buf, start + h + n)  # noqa: F821 (cimported)
    p = cython.cast(ucharp, PyByteArray_AS_STRING(buf)) + start  # noqa: F821 (cimported)
    p[0] = 0x81
    if h == 2:
        p[1] = n
    elif h == 4:
        p[1] = 126
        p[2] = n >> 8
        p[3] = n & 0xFF
    else:
        p[1] = 127
        for i in range(8):
            p[2 + i] = (n >> (56 - 8 * i)) & 0xFF
    return p + h


def _plain_id(req_id):
    """The id's JSON is just the id in quotes: printable ASCII, no quote or backslash (the
    ids clients send). Compiled, a scan of the string's bytes; the other ids are encoded."""
    if cython.compiled:
        if not PyUnicode_IS_COMPACT_ASCII(req_id):  # noqa: F821 (cimported)
            return False
        p = PyUnicode_DATA(req_id)  # noqa: F821 (cimported)
        for i in range(PyUnicode_GET_LENGTH(req_id)):  # noqa: F821 (cimported)
            c = p[i]
            if c < 0x20 or c > 0x7E or c == 0x22 or c == 0x5C:
                return False
        return True
    return False  # plain Python: encode_json is the fastest way there


def _put_response(buf, req_id, mid, body):
    """Append a whole response frame to `buf`: header, `{"type":"res","id":`, the id's JSON,
    `mid`, `body` (bytes or msgspec.Raw), `}`. Compiled: the buffer grows once and the
    pieces are copied in with memcpy (no id bytes object when the id is plain)."""
    if cython.compiled:
        plain = _plain_id(req_id)
        id_json = None if plain else encode_json(req_id)
        id_len = PyUnicode_GET_LENGTH(req_id) + 2 if plain else len(id_json)  # noqa: F821
        PyObject_GetBuffer(body, cython.address(view), PyBUF_SIMPLE)  # noqa: F821
        try:
            p = _grow(buf, 19 + id_len + len(mid) + view.len + 1)  # 19 == len(_RES_OK)
            memcpy(p, cython.cast(cython.p_char, _RES_OK), 19)  # noqa: F821
            p += 19
            if plain:
                p[0] = 0x22
                memcpy(p + 1, PyUnicode_DATA(req_id), id_len - 2)  # noqa: F821
                p[id_len - 1] = 0x22
            else:
                memcpy(p, cython.cast(cython.p_char, id_json), id_len)  # noqa: F821
            p += id_len
            memcpy(p, cython.cast(cython.p_char, mid), len(mid))  # noqa: F821
            p += len(mid)
            memcpy(p, view.buf, view.len)  # noqa: F821
            p[view.len] = 0x7D  # "}"
        finally:
            PyBuffer_Release(cython.address(view))  # noqa: F821
        return 0
    id_json = encode_json(req_id)
    _put_header(buf, len(_RES_OK) + len(id_json) + len(mid) + len(body) + 1)
    buf += _RES_OK
    buf += id_json
    buf += mid
    buf += body
    buf += _CLOSE_BRACE
    return 0


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
            if cython.compiled:
                memcpy(_grow(pending, len(data)), cython.cast(cython.p_char, data),  # noqa: F821
                       len(data))
            else:
                _put_header(pending, len(data))
                pending += data
        else:
            self._raw_write(frame_text(data))

    def send_response(self, req_id, ok, body):
        """`send(wire.response_ok(req_id, body))` (or response_error when not ok),
        assembled in place; `body` is bytes or msgspec.Raw."""
        if self.closed:
            return
        mid = _OK_MID if ok else _ERR_MID
        pending = self.pending
        if pending is not None:
            _put_response(pending, req_id, mid, body)
            return
        buf = bytearray()
        _put_response(buf, req_id, mid, body)
        self._raw_write(buf)

    def begin(self):
        """Start a batch; True if this call started it (False: one is already open, or
        the sink is closed), so only the caller that started it flushes it."""
        if self.pending is None and not self.closed:
            self.pending = bytearray()
            return True
        return False

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
        """Bytes not yet on the wire: the transport's queue and the open batch (a batch
        can span a loop turn, see EventBus.publish, and must count against the limits)."""
        pending = self.pending
        if pending is not None:
            return self._raw_buffered() + len(pending)
        return self._raw_buffered()

    def mark_closed(self):
        self.flush()
        self.closed = True
