"""Event fan-out: one event, many sockets, one serialization (one source: compiled with
fanout.pxd, or plain Python with KRABFAST_NO_EXTENSIONS=1).

A `Subscriber` is the per-socket state fan-out needs: its own `seq`, its scope bits, the
socket's sink (`send(bytes)`, `buffered()`), and the owner told about a slow consumer.
"""

from krabfast._core.sink import WireSink


class Subscriber:
    __slots__ = ("seq", "scope_mask", "sink", "owner", "__weakref__")

    def __init__(self, sink, owner, scope_mask=0):
        self.seq = 0  # last seq sent; the next event carries seq + 1
        self.scope_mask = scope_mask
        self.sink = sink
        self.owner = owner

    def next_frame(self, prefix, suffix):
        """Advance this socket's seq and return the spliced frame (for unicast events)."""
        self.seq += 1
        return b"%b%d%b" % (prefix, self.seq, suffix)


def fanout(prefix, suffix, subscribers, need_mask, droppable, drop_above, close_above,
           hold_key=None, first=None, corked=None, serve_first=True):
    """Deliver one pre-serialized event to every subscriber whose scopes match.

    need_mask == 0 means every subscriber; otherwise a subscriber needs any of its bits.
    A droppable event skips a socket whose queue exceeds `drop_above` without advancing
    its seq (so the client never sees a false gap); with a `hold_key` (events that carry
    the full state, like presence) it is handed to the owner's `hold(key, prefix, suffix)`
    instead, to be sent once the socket drains, newest only. A non-droppable event for a
    socket over `close_above` calls its owner's `slow_consumer()` instead. Returns the
    number delivered.

    `first` (one of `subscribers`, or None) is served before the others: the socket that
    asked for what the event reports (a chat run's sender) gets it without waiting for the
    writes to every watcher. With a list `corked`, a WireSink that is not batching starts a
    batch (`begin`) and is appended to the list instead of being written at once: the
    caller `flush`es them in that order after its last event, one write per socket for
    several events (a chat delta and its agent twin).

    With `serve_first` False, `first` is skipped instead: the caller served it already (an
    asker written before the watchers are even queued).
    """
    delivered = 0
    if first is not None and serve_first:
        delivered += _deliver(first, prefix, suffix, need_mask, droppable, drop_above,
                              close_above, hold_key, corked)
    for sub in subscribers:
        if sub is first:
            continue
        delivered += _deliver(sub, prefix, suffix, need_mask, droppable, drop_above,
                              close_above, hold_key, corked)
    return delivered


def _deliver(sub, prefix, suffix, need_mask, droppable, drop_above, close_above, hold_key,
             corked):
    """fanout's work for one subscriber: 1 if the frame was handed to its sink, else 0."""
    if need_mask and not (sub.scope_mask & need_mask):
        return 0
    sink = sub.sink
    # Compiled, a WireSink (or subclass) is called through its C methods.
    is_wire = type(sink) is WireSink or isinstance(sink, WireSink)
    if is_wire:
        wire_sink = sink
        queued = wire_sink.buffered()
    else:
        queued = sink.buffered()
    if droppable:
        if queued > drop_above:
            if hold_key is not None:
                sub.owner.hold(hold_key, prefix, suffix)
            return 0
    elif queued > close_above:
        sub.owner.slow_consumer()
        return 0
    sub.seq += 1
    frame = b"%b%d%b" % (prefix, sub.seq, suffix)
    if is_wire:
        if corked is not None and wire_sink.begin():
            corked.append(wire_sink)
        wire_sink.send(frame)
    else:
        sink.send(frame)
    return 1
