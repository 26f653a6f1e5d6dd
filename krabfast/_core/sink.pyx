# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled write side of a connection: batches the frames produced while one read buffer
is processed into a single transport write. Same API and output as `_sink_py`."""


cpdef bytes frame_text(bytes payload):
    """A complete unmasked (server-side) WebSocket text frame around `payload`."""
    cdef Py_ssize_t n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126, n >> 8, n & 0xFF)) + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


cdef class WireSink:
    def __init__(self, transport):
        self.transport = transport
        self.raw = transport.underlying_transport
        self.pending = None
        self.closed = False
        self._raw_write = self.raw.write
        self._raw_buffered = self.raw.get_write_buffer_size

    cpdef send(self, bytes data):
        if self.closed:
            return
        if self.pending is not None:
            self.pending.append(data)
        else:
            self._raw_write(frame_text(data))

    cpdef begin(self):
        if self.pending is None and not self.closed:
            self.pending = []

    cpdef flush(self):
        cdef list pending = self.pending
        cdef Py_ssize_t n
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

    cpdef long long buffered(self) except -1:
        return self._raw_buffered()

    cpdef mark_closed(self):
        self.flush()
        self.closed = True
