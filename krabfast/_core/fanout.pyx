# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled event fan-out. Same API and output as `_fanout_py`."""

from krabfast._core.sink cimport WireSink


cdef class Subscriber:
    def __init__(self, sink, owner, long long scope_mask=0):
        self.seq = 0
        self.scope_mask = scope_mask
        self.sink = sink
        self.owner = owner

    def next_frame(self, bytes prefix, bytes suffix):
        self.seq += 1
        return b'%b%d%b' % (prefix, self.seq, suffix)


cpdef long fanout(bytes prefix, bytes suffix, object subscribers, long long need_mask,
                  bint droppable, long long drop_above, long long close_above,
                  object hold_key=None) except -1:
    cdef Subscriber sub
    cdef long delivered = 0
    cdef long long queued
    cdef WireSink wire_sink
    for obj in subscribers:
        sub = <Subscriber?>obj
        if need_mask and not (sub.scope_mask & need_mask):
            continue
        sink = sub.sink
        is_wire = type(sink) is WireSink or isinstance(sink, WireSink)
        if is_wire:
            wire_sink = <WireSink>sink
            queued = wire_sink.buffered()
        else:
            queued = sink.buffered()
        if droppable:
            if queued > drop_above:
                if hold_key is not None:
                    sub.owner.hold(hold_key, prefix, suffix)
                continue
        elif queued > close_above:
            sub.owner.slow_consumer()
            continue
        sub.seq += 1
        frame = b'%b%d%b' % (prefix, sub.seq, suffix)
        if is_wire:
            wire_sink.send(frame)
        else:
            sink.send(frame)
        delivered += 1
    return delivered
