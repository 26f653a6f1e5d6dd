# Contract of sink.py: the write side of a connection; also the declarations Cython
# compiles sink.py with (this file augments it; plain Python ignores it). Invariants:
# - Between begin() and flush() every frame is appended to one bytearray; flush() hands it
#   to the transport in one write (and never touches it again). Outside a batch each frame
#   is written at once.
# - After mark_closed() nothing more is written (it flushes what was queued first).
# - send_response(id, ok, body) puts on the wire exactly the bytes of
#   send(wire.response_ok(id, body)) (or response_error), without building them first.

cimport cython

from krabfast._core.wire cimport encode_json

cdef bytes _RES_OK, _OK_MID, _ERR_MID, _CLOSE_BRACE

cdef class WireSink:
    cdef public object transport      # picows WSTransport
    cdef public object raw            # its asyncio/uvloop transport
    cdef bytearray pending            # the batch being assembled, else None
    cdef public bint closed
    cdef object _raw_write
    cdef object _raw_buffered

    cpdef send(self, bytes data)
    @cython.locals(n=Py_ssize_t, id_json=bytes, mid=bytes, buf=bytearray, pending=bytearray)
    cpdef send_response(self, str req_id, bint ok, bytes body)
    cpdef begin(self)
    @cython.locals(pending=bytearray)
    cpdef flush(self)
    cpdef long long buffered(self) except -1
    cpdef mark_closed(self)

@cython.locals(n=Py_ssize_t)
cpdef bytes frame_text(bytes payload)

cdef int _put_header(bytearray buf, Py_ssize_t n) except -1
