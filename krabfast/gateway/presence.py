"""Presence: the gateway's own "self" row plus keyed rows for connected clients and
system events. Rows expire 5 minutes after their last update (self never does); at most
`max_entries` are kept. Listing order is newest first, self always on top, as the
reference does. `version` bumps on every change; it is `stateVersion.presence`.
"""

from __future__ import annotations

import platform
import socket
import uuid

import msgspec

from krabfast.protocol.handshake import PresenceEntry

_encode = msgspec.json.Encoder().encode

PRESENCE_TTL_MS = 300_000
# What one row may hold, and all rows together: presence goes into every hello-ok and
# every `presence` event, so whatever clients put in it, those stay small. (The
# reference caps rows at 200 and bounds nothing else.)
ROW_TEXT_MAX = 1_024
ROW_FIELD_MAX = 256
ROW_LIST_MAX = 32
PRESENCE_BYTES_MAX = 256 * 1024
_STR_FIELDS = ("host", "ip", "version", "platform", "device_family", "model_identifier",
               "time_zone", "mode", "reason", "device_id", "instance_id")
_LIST_FIELDS = ("tags", "roles", "scopes")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def clamp(entry: PresenceEntry) -> PresenceEntry:
    """The row as stored: long strings cut (with an ellipsis), long lists shortened."""
    changes = {}
    text = entry.text
    if text is not msgspec.UNSET and len(text) > ROW_TEXT_MAX:
        changes["text"] = _clip(text, ROW_TEXT_MAX)
    for name in _STR_FIELDS:
        value = getattr(entry, name)
        if value is not msgspec.UNSET and len(value) > ROW_FIELD_MAX:
            changes[name] = _clip(value, ROW_FIELD_MAX)
    for name in _LIST_FIELDS:
        value = getattr(entry, name)
        if value is not msgspec.UNSET and (len(value) > ROW_LIST_MAX
                                           or any(len(v) > ROW_FIELD_MAX for v in value)):
            changes[name] = [_clip(v, ROW_FIELD_MAX) for v in value[:ROW_LIST_MAX]]
    return msgspec.structs.replace(entry, **changes) if changes else entry


def _primary_ip() -> str:
    """Best guess at this host's outward address, without sending any packet."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET: connect() on UDP only picks a route
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def self_entry(version: str, instance_id: str | None = None) -> PresenceEntry:
    host = socket.gethostname() or "localhost"
    ip = _primary_ip()
    system = platform.system()
    return PresenceEntry(
        ts=0, host=host, ip=ip, version=version,
        platform=f"{system.lower()} {platform.release()}".strip(), device_family=system or "unknown",
        mode="gateway", reason="self", instance_id=instance_id or str(uuid.uuid4()),
        text=f"Gateway: {host} ({ip}) · app {version} · mode gateway · reason self")


class PresenceStore:
    """Presence rows by key (a device, an instance, a socket, a system-event reporter), the
    state version that counts their changes, and how many open sockets hold each row (a
    device connected twice is one row). A shared implementation would keep these in Redis."""

    def __init__(self, own: PresenceEntry | None = None, max_entries: int = 200,
                 ttl_ms: int = PRESENCE_TTL_MS, max_bytes: int = PRESENCE_BYTES_MAX) -> None:
        self.own = own
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_ms = ttl_ms
        self._rows: dict[str, PresenceEntry] = {}
        self._refs: dict[str, int] = {}   # open sockets per row key
        self._sizes: dict[str, int] = {}  # encoded size per row
        self._bytes = 0
        self.version = 1  # the reference's counter starts at 1 too
        # Listing is a hot read (`system-presence`): the other rows are sorted and encoded
        # once per version; only the self row's ts is spliced in per call.
        self._cached_version = -1
        self._cached_rows: list[PresenceEntry] = []
        self._cached_json = b""
        self._own_tail = b""
        if own is not None:
            encoded = _encode(msgspec.structs.replace(own, ts=0))
            assert encoded.startswith(b'{"ts":0,'), "PresenceEntry.ts must stay the first field"
            self._own_tail = encoded[len(b'{"ts":0'):]

    def _refresh(self) -> None:
        if self._cached_version != self.version:
            rows = sorted(self._rows.values(), key=lambda e: e.ts, reverse=True)
            self._cached_rows = rows
            self._cached_json = _encode(rows)[1:-1]
            self._cached_version = self.version

    def entries(self, now_ms: int) -> list[PresenceEntry]:
        self._refresh()
        if self.own is None:
            return list(self._cached_rows)
        return [msgspec.structs.replace(self.own, ts=now_ms), *self._cached_rows]

    def entries_json(self, now_ms: int) -> bytes:
        """`entries(now_ms)` as a JSON array, without re-encoding unchanged rows."""
        self._refresh()
        parts = []
        if self.own is not None:
            parts.append(b'{"ts":%d%b' % (now_ms, self._own_tail))
        if self._cached_json:
            parts.append(self._cached_json)
        return b"[" + b",".join(parts) + b"]"

    def oldest_ts(self) -> int | None:
        self._refresh()
        rows = self._cached_rows
        return rows[-1].ts if rows else None

    def prune(self, now_ms: int) -> bool:
        """Drop expired rows; True if any went (the caller may broadcast)."""
        cutoff = now_ms - self.ttl_ms
        stale = [k for k, e in self._rows.items() if e.ts <= cutoff]
        for key in stale:
            self._drop(key)
        if stale:
            self.version += 1
        return bool(stale)

    def upsert(self, key: str, entry: PresenceEntry) -> None:
        rows = self._rows
        self._drop(key)
        self._store(key, clamp(entry))
        while len(rows) > self.max_entries or (self._bytes > self.max_bytes and len(rows) > 1):
            self._drop(min(rows, key=lambda k: rows[k].ts))
        self.version += 1

    def join(self, key: str, entry: PresenceEntry) -> None:
        """A socket opened with this presence row."""
        self._refs[key] = self._refs.get(key, 0) + 1
        self.upsert(key, entry)

    def leave(self, key: str, now_ms: int) -> bool:
        """A socket of this row closed; when it was the last, the row says "disconnect"
        (it stays until it expires, as on the reference). True if the rows changed."""
        left = self._refs.get(key, 1) - 1
        if left > 0:
            self._refs[key] = left
            return False
        self._refs.pop(key, None)
        return self.update(key, reason="disconnect", ts=now_ms)

    def update(self, key: str, **changes) -> bool:
        entry = self._rows.get(key)
        if entry is None:
            return False
        self._drop(key)
        self._store(key, clamp(msgspec.structs.replace(entry, **changes)))
        self.version += 1
        return True

    def _store(self, key: str, entry: PresenceEntry) -> None:
        self._rows[key] = entry
        size = self._sizes[key] = len(_encode(entry))
        self._bytes += size

    def _drop(self, key: str) -> None:
        if self._rows.pop(key, None) is not None:
            self._bytes -= self._sizes.pop(key)

    @property
    def encoded_bytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> PresenceEntry | None:
        return self._rows.get(key)
