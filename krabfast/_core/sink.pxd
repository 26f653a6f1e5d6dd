# Contract of sink.py: the write side of a connection; also the declarations Cython
# compiles sink.py with (this file augments it; plain Python ignores it). Invariants:
# - Between begin() and flush() every frame is appended to one bytearray; flush() hands it
#   to the transport in one write (and never touches it again). Outside a batch each frame
#   is written at once.
# - After mark_closed() nothing more is written (it flushes what was queued first).
# - buffered() is the transport's queue plus the open batch.
# - send_response(id, ok, body) puts on the wire exactly the bytes of
#   send(wire.response_ok(id, body)) (or response_error), without building them first.

cimport cython

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.string cimport memcpy

from krabfast._core.wire cimport encode_json

ctypedef unsigned char *ucharp

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object)
    const unsigned char *PyUnicode_DATA(object)

cdef bytes _RES_OK, _OK_MID, _ERR_MID, _CLOSE_BRACE

cdef class WireSink:
    cdef public object transport      # picows WSTransport
    cdef public object raw            # its asyncio/uvloop transport
    cdef bytearray pending            # the batch being assembled, else None
    cdef public bint closed
    cdef object _raw_write
    cdef object _raw_buffered

    @cython.locals(pending=bytearray)
    cpdef send(self, bytes data)
    @cython.locals(mid=bytes, buf=bytearray, pending=bytearray)
    cpdef send_response(self, str req_id, bint ok, object body)
    cpdef bint begin(self) except -1
    @cython.locals(pending=bytearray)
    cpdef flush(self)
    @cython.locals(pending=bytearray)
    cpdef long long buffered(self) except -1
    cpdef mark_closed(self)

@cython.locals(n=Py_ssize_t)
cpdef bytes frame_text(bytes payload)

cdef int _put_header(bytearray buf, Py_ssize_t n) except -1

@cython.locals(h=Py_ssize_t, start=Py_ssize_t, p="unsigned char *", i=cython.int)
cdef unsigned char *_grow(bytearray buf, Py_ssize_t n) except NULL

@cython.locals(p="const unsigned char *", i=Py_ssize_t, c=cython.uchar)
cdef bint _plain_id(str req_id)

@cython.locals(plain=bint, id_json=bytes, id_len=Py_ssize_t, view=Py_buffer, n=Py_ssize_t,
               p="unsigned char *")
cdef int _put_response(bytearray buf, str req_id, bytes mid, object body) except -1
