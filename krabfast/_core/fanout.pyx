# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled event fan-out. Same API and output as `_fanout_py`."""


cdef class Subscriber:
    def __init__(self, send, buffered, overflow, long long scope_mask=0):
        self.seq = 0
        self.scope_mask = scope_mask
        self.send = send
        self.buffered = buffered
        self.overflow = overflow

    def next_frame(self, bytes prefix, bytes suffix):
        self.seq += 1
        return b'%b%d%b' % (prefix, self.seq, suffix)


cpdef long fanout(bytes prefix, bytes suffix, object subscribers, long long need_mask,
                  bint droppable, long long drop_above, long long close_above) except -1:
    cdef Subscriber sub
    cdef long delivered = 0
    cdef long long queued
    for obj in subscribers:
        sub = <Subscriber?>obj
        if need_mask and not (sub.scope_mask & need_mask):
            continue
        queued = sub.buffered()
        if droppable:
            if queued > drop_above:
                continue
        elif queued > close_above:
            sub.overflow()
            continue
        sub.seq += 1
        sub.send(b'%b%d%b' % (prefix, sub.seq, suffix))
        delivered += 1
    return delivered
