"""The event bus: publish an event to a topic; each process fans it out to its own
subscribers (one serialization, the per-socket `seq` spliced in by the core's fan-out).

The topic `ALL` is every authenticated socket (what the reference broadcasts to, filtered
by each event's scope). Other topics (a session's key, say) have their own index of
subscribers, so publishing to one reaches only them without scanning every socket. A
second implementation (Redis pub/sub) would forward `publish` to the other processes and
keep this local fan-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from krabfast._core import fanout as _fanout
from krabfast._core import wire
from krabfast._core.sink import WireSink
from krabfast.protocol.methods import EVENTS
from krabfast.protocol.scopes import SCOPE_BIT

log = logging.getLogger("krabfast.gateway")

ALL = ""  # the topic of every authenticated socket

_encode = wire.encode_json


class EventBus:
    def __init__(self, drop_if_slow_bytes: int, max_buffered_bytes: int) -> None:
        self.drop_if_slow_bytes = drop_if_slow_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self._all: dict[str, _fanout.Subscriber] = {}        # conn id -> subscriber
        self._topics: dict[str, dict[str, _fanout.Subscriber]] = {}
        self._topics_of: dict[str, set[str]] = {}           # conn id -> its named topics
        # Owners with coalesced events parked until they drain (see Connection.hold).
        self.holding: set = set()
        self.closed = False  # after `shutdown` nothing more is published
        self._corked: list | None = None  # sinks batching inside `corked()`, in order
        self._cork_firsts: list = []      # inside `corked()`: the askers' sinks
        self._rest: list = []  # inside `corked()`: (fan-out job, asker) not yet queued
        self._deferred: list | None = None  # watchers' sinks batching until the next turn

    # -- subscriptions ------------------------------------------------------------------------
    def attach(self, conn_id: str, sub: _fanout.Subscriber) -> None:
        """An authenticated socket joins ALL."""
        self._all[conn_id] = sub

    def detach(self, conn_id: str) -> None:
        """The socket is gone: out of ALL and every topic it joined."""
        self._all.pop(conn_id, None)
        for topic in self._topics_of.pop(conn_id, ()):
            subs = self._topics.get(topic)
            if subs is not None:
                subs.pop(conn_id, None)
                if not subs:
                    del self._topics[topic]

    def subscribe(self, topic: str, conn_id: str) -> bool:
        """Add an attached socket to `topic`; False if it is not attached."""
        sub = self._all.get(conn_id)
        if sub is None or topic == ALL:
            return False
        self._topics.setdefault(topic, {})[conn_id] = sub
        self._topics_of.setdefault(conn_id, set()).add(topic)
        return True

    def unsubscribe(self, topic: str, conn_id: str) -> bool:
        subs = self._topics.get(topic)
        if subs is None or subs.pop(conn_id, None) is None:
            return False
        if not subs:
            del self._topics[topic]
        topics = self._topics_of.get(conn_id)
        if topics is not None:
            topics.discard(topic)
            if not topics:
                del self._topics_of[conn_id]
        return True

    def attached(self, conn_id: str) -> bool:
        return conn_id in self._all

    def count(self, topic: str = ALL) -> int:
        return len(self._all) if topic == ALL else len(self._topics.get(topic, ()))

    def topics_of(self, conn_id: str) -> frozenset[str]:
        return frozenset(self._topics_of.get(conn_id, ()))

    # -- publishing ---------------------------------------------------------------------------
    def publish(self, event: str, payload, *, topic: str = ALL,
                state_version: tuple[int, int] | None = None,
                droppable: bool | None = None, first: str | None = None) -> int:
        """Serialize once, deliver to the topic's subscribers allowed to see the event
        (its declared scope); returns how many got it. `droppable` overrides the event's
        declaration for this one (a chat delta may be skipped by a socket that is behind,
        its final never).

        `first` names the connection whose request the event answers (a run's asker), or
        None. With it, the asker's socket is written at once and the other sockets' copies
        wait in their batch until the loop's next turn (`_flush_deferred`): an asker never
        waits for the watchers' writes of another run's event, and the events of one loop
        turn reach each watcher in one write. Each socket's frames stay in order: while a
        socket's batch is open, everything sent to it joins that batch. The asker's write
        comes before the others' copies are queued; inside `corked()` they are queued at
        the block's end, so there the count is the asker's alone."""
        if self.closed:
            return 0
        subs = self._all if topic == ALL else self._topics.get(topic)
        if not subs:
            return 0
        spec = EVENTS[event]
        prefix = wire.event_prefix(event, None if payload is None else _encode(payload))
        suffix = wire.event_suffix(state_version)
        need = SCOPE_BIT[spec.scope] if spec.scope else 0
        job = (prefix, suffix, list(subs.values()), need,
               spec.droppable if droppable is None else droppable, self.drop_if_slow_bytes,
               self.max_buffered_bytes, event if spec.coalesce else None)
        asker = subs.get(first) if first is not None else None
        corked = self._corked
        if corked is not None:
            if asker is None:
                self._serve_rest(corked)  # each socket's frames stay in publish order
                return _fanout.fanout(*job, None, corked)
            # The asker's copy joins its batch now; the others' wait for the block's end,
            # after the asker's write (see corked()).
            self._cork_firsts.append(asker.sink)
            self._rest.append((job, asker))
            return _fanout.fanout(*job[:2], (), *job[3:], asker, corked)
        deferred = self._deferral() if first is not None else None
        if deferred is None:
            return _fanout.fanout(*job, asker)
        # The asker is written before the others are even queued; their copies join their
        # batches, written on the loop's next turn.
        delivered = _fanout.fanout(*job[:2], (), *job[3:], asker)
        if asker is not None:
            _flush_batch(asker.sink)  # its open batch (an earlier event's), this event too
        return delivered + _fanout.fanout(*job, asker, deferred, False)

    def _serve_rest(self, corked: list) -> None:
        """Inside `corked()`: queue the watchers' copies of the asker-first events so far."""
        rest, self._rest = self._rest, []
        for job, asker in rest:
            _fanout.fanout(*job, asker, corked, False)

    def _deferral(self) -> list | None:
        """The list of sinks batching until the loop's next turn (None outside a loop:
        then every socket is written at once)."""
        deferred = self._deferred
        if deferred is None:
            loop = asyncio._get_running_loop()
            if loop is None:
                return None
            deferred = self._deferred = []
            loop.call_soon(self._flush_deferred)
        return deferred

    def _flush_deferred(self) -> None:
        deferred, self._deferred = self._deferred, None
        for sink in deferred or ():
            try:
                sink.flush()
            except Exception:  # noqa: BLE001 - its socket closed during the turn (uvloop
                # raises on a closed handle): nobody is left to read it; the rest still go
                log.debug("a deferred batch met a closed socket", exc_info=True)

    @contextlib.contextmanager
    def corked(self):
        """`with bus.corked():` the events published inside reach each socket in one write
        (in the order the sockets were first served), not one write each: a chat delta and
        its agent twin cost one syscall and one wake-up per watcher. At the end of the
        block the askers' sockets (see `publish`) are written; when the block published a
        run's events the others wait for the loop's next turn, else they are written too.
        Nested, the outermost block writes."""
        if self._corked is not None:
            yield
            return
        self._corked = sinks = []
        self._cork_firsts = firsts = []
        try:
            yield
        finally:
            for sink in firsts:
                _flush_batch(sink)  # the askers' frames go before the watchers' are queued
            self._serve_rest(sinks)
            self._corked = None
            self._cork_firsts = []
            deferred = self._deferral() if firsts else None
            for sink in sinks:
                if deferred is None or sink in firsts:
                    sink.flush()
                else:
                    deferred.append(sink)  # still batching: flushed with the deferred ones

    def flush_held(self) -> int:
        """Send the events parked for sockets that were behind, to those that drained."""
        if not self.holding:
            return 0
        sent = 0
        for owner in list(self.holding):
            sent += owner.release_held(self.drop_if_slow_bytes)
        return sent


def _flush_batch(sink) -> None:
    """Write a sink's open batch, if it batches (a WireSink; other sinks write at once)."""
    if isinstance(sink, WireSink):
        sink.flush()
