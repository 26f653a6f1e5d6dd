# Contract of sink.py: the write side of one WebSocket connection; also the declarations
# Cython compiles sink.py with (this file augments it; plain Python ignores it).
# Invariants:
# - Frames handed to send() reach the peer in call order, batched or not.
# - Between begin() and flush(), frames are only queued; flush() writes them all with one
#   transport write (one syscall), so N responses to N pipelined requests cost one write.
# - Nothing is written after mark_closed(); frames queued before it are flushed first.
# - buffered() is the number of bytes queued in the transport (the backpressure signal).

cimport cython

cdef class WireSink:
    cdef public object transport      # picows WSTransport
    cdef public object raw            # its asyncio/uvloop transport
    cdef list pending                 # frames queued while batching, else None
    cdef public bint closed
    cdef object _raw_write
    cdef object _raw_buffered

    cpdef send(self, bytes data)
    cpdef begin(self)
    @cython.locals(pending=list, n=Py_ssize_t)
    cpdef flush(self)
    cpdef long long buffered(self) except -1
    cpdef mark_closed(self)

@cython.locals(n=Py_ssize_t)
cpdef bytes frame_text(bytes payload)
