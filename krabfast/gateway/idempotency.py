"""Deduplication of side-effecting requests by `params.idempotencyKey`.

The first request's response bytes (payload or error) are remembered for a TTL; a retry
with the same (method, key) gets the same response without running the handler again.
A retry that arrives while the first call is still running waits for its result.
"""

from __future__ import annotations

from collections import OrderedDict


class Pending:
    """A first call still running; retries park their reply callbacks here."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list = []


class IdempotencyCache:
    def __init__(self, ttl_ms: int, max_entries: int, clock_ms) -> None:
        self.ttl_ms = ttl_ms
        self.max_entries = max_entries
        self.clock_ms = clock_ms
        # key -> (expires_at_ms, (ok, json_bytes)) or Pending
        self._entries: OrderedDict[tuple[str, str], object] = OrderedDict()

    def lookup(self, key: tuple[str, str]):
        """Returns None (new key), a Pending, or the stored (ok, json_bytes) outcome."""
        entry = self._entries.get(key)
        if entry is None or isinstance(entry, Pending):
            return entry
        expires, outcome = entry
        if expires <= self.clock_ms():
            del self._entries[key]
            return None
        return outcome

    def begin(self, key: tuple[str, str]) -> Pending:
        pending = Pending()
        self._entries[key] = pending
        self._entries.move_to_end(key)
        self._evict()
        return pending

    def finish(self, key: tuple[str, str], outcome: tuple[bool, bytes], cache: bool = True) -> list:
        """Store the outcome (unless `cache` is false) and return the parked waiters."""
        entry = self._entries.pop(key, None)
        if cache:
            self._entries[key] = (self.clock_ms() + self.ttl_ms, outcome)
            self._evict()
        return entry.waiters if isinstance(entry, Pending) else []

    def _evict(self) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
