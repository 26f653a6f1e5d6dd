# Contract of fanout.py, and the declarations Cython compiles it with (this file augments
# fanout.py; plain Python ignores it). Invariants:
# - A subscriber's seq advances by exactly one per frame actually handed to its sink;
#   a skipped (filtered, dropped) event leaves it unchanged, so clients never see a
#   false gap.
# - The payload is serialized by the caller once; fanout only splices the seq digits.
# - fanout never blocks: sink.send() queues; a socket over the drop threshold misses a
#   droppable event (or, given a hold_key, has it parked with owner.hold() to be sent once
#   it drains, newest only), one over the hard limit has owner.slow_consumer() called.

cimport cython

from krabfast._core.sink cimport WireSink

cdef class Subscriber:
    cdef public long long seq
    cdef public long long scope_mask
    cdef public object sink           # .send(bytes), .buffered() -> int
    cdef public object owner          # .slow_consumer()
    cdef object __weakref__

@cython.locals(delivered=cython.long, sub=Subscriber)
cpdef long fanout(bytes prefix, bytes suffix, object subscribers, long long need_mask,
                  bint droppable, long long drop_above, long long close_above,
                  object hold_key=*, Subscriber first=*, list corked=*,
                  bint serve_first=*) except -1

@cython.locals(queued=cython.longlong, wire_sink=WireSink, is_wire=bint)
cdef long _deliver(Subscriber sub, bytes prefix, bytes suffix, long long need_mask,
                   bint droppable, long long drop_above, long long close_above,
                   object hold_key, list corked) except -1
