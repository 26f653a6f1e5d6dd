# Contract of fanout.pyx. Invariants:
# - A subscriber's seq advances by exactly one per frame actually handed to send();
#   a skipped (filtered, dropped) event leaves it unchanged, so clients never see a
#   false gap.
# - The payload is serialized by the caller once; fanout only splices the seq digits.
# - fanout never blocks: send() queues; slow sockets are dropped-for or overflowed.

cdef class Subscriber:
    cdef public long long seq
    cdef public long long scope_mask
    cdef public object send
    cdef public object buffered
    cdef public object overflow
    cdef object __weakref__

cpdef long fanout(bytes prefix, bytes suffix, object subscribers, long long need_mask,
                  bint droppable, long long drop_above, long long close_above) except -1
