"""Deduplication of side-effecting requests by `params.idempotencyKey`.

A key names one call: (method, digest of the caller and the params, idempotencyKey
included), so a key reused by another caller, or with other params, is a new call. Callers are authorized
before they get here; this store never decides who may see an outcome.

- A retry that arrives while the first call runs waits for its outcome. In-flight
  entries are never evicted (a waiting retry would never be answered otherwise).
- Only successful outcomes are remembered, for a TTL, at most `max_entries` of them
  (oldest dropped first). An error, retryable or not, is answered once and the next
  retry runs the call again.
"""

from __future__ import annotations

from collections import OrderedDict

Key = tuple[str, bytes]


class Pending:
    """A first call still running; retries park their reply callbacks here."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list = []


class IdempotencyStore:
    def __init__(self, ttl_ms: int, max_entries: int, clock_ms) -> None:
        self.ttl_ms = ttl_ms
        self.max_entries = max_entries
        self.clock_ms = clock_ms
        self._done: OrderedDict[Key, tuple[int, tuple[bool, bytes]]] = OrderedDict()
        self._inflight: dict[Key, Pending] = {}

    def lookup(self, key: Key):
        """Returns None (new key), a Pending, or the stored (ok, json_bytes) outcome."""
        pending = self._inflight.get(key)
        if pending is not None:
            return pending
        entry = self._done.get(key)
        if entry is None:
            return None
        expires, outcome = entry
        if expires <= self.clock_ms():
            del self._done[key]
            return None
        return outcome

    def begin(self, key: Key) -> Pending:
        pending = self._inflight[key] = Pending()
        return pending

    def finish(self, key: Key, outcome: tuple[bool, bytes]) -> list:
        """Remember a successful outcome; return the parked waiters (they get it either way)."""
        pending = self._inflight.pop(key, None)
        if outcome[0]:
            self._done[key] = (self.clock_ms() + self.ttl_ms, outcome)
            self._done.move_to_end(key)
            while len(self._done) > self.max_entries:
                self._done.popitem(last=False)
        return pending.waiters if pending is not None else []

    def prune(self) -> None:
        """Drop expired outcomes (they are also dropped lazily on lookup)."""
        now = self.clock_ms()
        done = self._done
        while done:
            key, (expires, _) = next(iter(done.items()))
            if expires > now:
                break
            del done[key]

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def __len__(self) -> int:
        return len(self._done) + len(self._inflight)
