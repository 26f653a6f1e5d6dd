"""The event bus: publish an event to a topic; each process fans it out to its own
subscribers (one serialization, the per-socket `seq` spliced in by the core's fan-out).

The topic `ALL` is every authenticated socket (what the reference broadcasts to, filtered
by each event's scope). Other topics (a session's key, say) have their own index of
subscribers, so publishing to one reaches only them without scanning every socket. A
second implementation (Redis pub/sub) would forward `publish` to the other processes and
keep this local fan-out.
"""

from __future__ import annotations

import contextlib

from krabfast._core import fanout as _fanout
from krabfast._core import wire
from krabfast.protocol.methods import EVENTS
from krabfast.protocol.scopes import SCOPE_BIT

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
        its final never). `first` names a connection served before the others (the one
        whose request the event answers), if it is among them."""
        if self.closed:
            return 0
        subs = self._all if topic == ALL else self._topics.get(topic)
        if not subs:
            return 0
        spec = EVENTS[event]
        prefix = wire.event_prefix(event, None if payload is None else _encode(payload))
        suffix = wire.event_suffix(state_version)
        need = SCOPE_BIT[spec.scope] if spec.scope else 0
        return _fanout.fanout(prefix, suffix, list(subs.values()), need,
                              spec.droppable if droppable is None else droppable,
                              self.drop_if_slow_bytes, self.max_buffered_bytes,
                              event if spec.coalesce else None,
                              subs.get(first) if first is not None else None, self._corked)

    @contextlib.contextmanager
    def corked(self):
        """`with bus.corked():` the events published inside reach each socket in one write
        at the end (in the order the sockets were first served), not one write each: a
        chat delta and its agent twin cost one syscall and one wake-up per watcher. Nested,
        the outermost block writes."""
        if self._corked is not None:
            yield
            return
        self._corked = sinks = []
        try:
            yield
        finally:
            self._corked = None
            for sink in sinks:
                sink.flush()

    def flush_held(self) -> int:
        """Send the events parked for sockets that were behind, to those that drained."""
        if not self.holding:
            return 0
        sent = 0
        for owner in list(self.holding):
            sent += owner.release_held(self.drop_if_slow_bytes)
        return sent
