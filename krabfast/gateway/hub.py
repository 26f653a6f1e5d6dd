"""Gateway state shared by all connections (Sans-I/O: no sockets, no event loop).

The transport adapter feeds it time (`tick`, `refresh_health`) and connections; it owns
presence, state versions, the health snapshot, broadcast fan-out and the policies
(idempotency, auth rate limit) that span connections.
"""

from __future__ import annotations

import inspect
import secrets
import time
import uuid
from collections import Counter, deque

import msgspec

from krabfast import __version__
from krabfast._core import dispatch as _dispatch
from krabfast._core import fanout as _fanout
from krabfast._core import wire
from krabfast.gateway.clientlog import ClientLog
from krabfast.gateway.config import GatewayConfig
from krabfast.gateway.hello import HelloEncoder
from krabfast.gateway.idempotency import IdempotencyCache
from krabfast.gateway.nodes import Nodes
from krabfast.gateway.pairing import Pairing
from krabfast.gateway.presence import PresenceTable, self_entry
from krabfast.gateway.ratelimit import AuthRateLimiter
from krabfast.methods import HANDLERS
from krabfast.protocol import methods as M
from krabfast.store import Database, DeviceStore
from krabfast.store.nodes import NodeStore
from krabfast.protocol.frames import StateVersion
from krabfast.protocol.handshake import (EventLoopHealth, Features, HealthSnapshot, PresenceEntry,
                                         Snapshot, empty_health)
from krabfast.protocol.scopes import NODE_ROLE_SCOPE, SCOPE_BIT
from krabfast.protocol.system import PresenceEvent, ShutdownEvent, TickEvent

_encode = wire.encode_json


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Gateway:
    def __init__(self, config: GatewayConfig, *, clock_ms=_wall_ms, monotonic=time.monotonic,
                 server_version: str = __version__) -> None:
        self.config = config
        self.clock_ms = clock_ms
        self.monotonic = monotonic
        self.server_version = server_version
        self.started = monotonic()
        self.boot_id = secrets.token_hex(8)
        self.presence = PresenceTable(self_entry(server_version, str(uuid.uuid4())),
                                      config.max_presence_entries)
        # Open sockets per presence row (a device connected twice is one row).
        self.presence_refs: dict[str, int] = {}
        # Texts of recent system events, oldest first (`status.queuedSystemEvents`).
        self.system_events: deque[str] = deque(maxlen=config.max_queued_system_events)
        self.health_version = 0
        self._health = empty_health(clock_ms(), None)
        self.connections: dict[str, object] = {}  # conn_id -> Connection (all live sockets)
        self.subscribers: dict[str, _fanout.Subscriber] = {}  # authenticated sockets
        self.preauth_by_ip: Counter[str] = Counter()
        # Sockets still in the handshake, oldest first (deadlines grow with insertion order).
        self.handshakes: dict[str, object] = {}
        # Sockets with coalesced events parked until they drain (see Connection.hold).
        self.holding: set = set()
        self.idempotency = IdempotencyCache(config.idempotency_ttl_ms,
                                            config.idempotency_max_entries, clock_ms)
        self.rate_limiter = AuthRateLimiter(config.rate_limit, clock_ms)
        # One rate-limited log line per client connect, disconnect and refused connect.
        self.client_log = ClientLog()
        self.methods = {name: (M.METHODS[name], handler) for name, handler in HANDLERS.items()}
        missing = set(M.METHODS) - set(self.methods)
        if missing:  # a spec without a handler would be advertised but not served
            raise RuntimeError(f"methods without handlers: {sorted(missing)}")
        self.dispatcher = _dispatch.Dispatcher({})
        self._rebuild_dispatcher()
        self.features = Features(methods=sorted(self.methods),
                                 events=[spec.name for spec in M.EVENT_SPECS])
        self.closing = False
        self._conn_counter = 0
        self.hello = HelloEncoder(self)
        self._pairing: Pairing | None = None
        self._nodes: Nodes | None = None
        self._database: Database | None = None

    @property
    def pairing(self) -> Pairing:
        """Device trust, backed by SQLite in the state directory (opened on first use, so
        gateways whose clients never present a device never touch the disk)."""
        if self._pairing is None:
            self._pairing = Pairing(self, DeviceStore(self.database))
        return self._pairing

    @property
    def nodes(self) -> Nodes:
        if self._nodes is None:
            self._nodes = Nodes(self, NodeStore(self.database))
        return self._nodes

    @property
    def database(self) -> Database:
        if self._database is None:
            state = self.config.state_dir
            self._database = Database(":memory:") if state == ":memory:" else Database.in_state_dir(state)
        return self._database

    def set_method(self, spec: M.MethodSpec, handler) -> None:
        """Serve `spec.name` with `handler` (plugins, tests)."""
        self.methods[spec.name] = (spec, handler)
        self._rebuild_dispatcher()

    def _rebuild_dispatcher(self) -> None:
        entries = {}
        for name, (spec, handler) in self.methods.items():
            decoder = msgspec.json.Decoder(spec.params) if spec.params is not None else None
            if spec.general_path:
                kind, bit = _dispatch.KIND_SLOW, 0
            elif spec.open_to_all:
                kind, bit = _dispatch.KIND_OPEN, 0
            elif spec.scope == NODE_ROLE_SCOPE:
                kind, bit = _dispatch.KIND_NODE, 0
            elif spec.scope in SCOPE_BIT:
                kind, bit = _dispatch.KIND_SCOPED, SCOPE_BIT[spec.scope]
            else:
                kind, bit = _dispatch.KIND_SLOW, 0
            entries[name] = _dispatch.MethodEntry(spec, handler, decoder, bit, kind,
                                                  inspect.iscoroutinefunction(handler))
        self.dispatcher = _dispatch.Dispatcher(entries)

    # -- identity ---------------------------------------------------------------------------
    def new_conn_id(self) -> str:
        self._conn_counter += 1
        return f"{self.boot_id}-{self._conn_counter}"

    def uptime_ms(self) -> int:
        return int((self.monotonic() - self.started) * 1000)

    # -- snapshots --------------------------------------------------------------------------
    def state_version(self) -> StateVersion:
        return StateVersion(presence=self.presence.version, health=self.health_version)

    def presence_entries(self) -> list[PresenceEntry]:
        return self.presence.entries(self.clock_ms())

    def presence_json(self) -> msgspec.Raw:
        """The presence list, encoded (cheap: see PresenceTable.entries_json)."""
        now = self.clock_ms()
        oldest = self.presence.oldest_ts()
        if oldest is not None and oldest <= now - self.presence.ttl_ms:
            self.maintain()  # expire (and announce) stale rows before listing them
        return msgspec.Raw(self.presence.entries_json(now))

    def health_snapshot(self) -> HealthSnapshot:
        return self._health

    def snapshot(self, can_read: bool) -> Snapshot:
        # Presence is operator.read data: others get an empty list, as on the reference.
        return Snapshot(presence=self.presence_json() if can_read else [], health=self._health,
                        state_version=self.state_version(), uptime_ms=self.uptime_ms(),
                        auth_mode=self.config.auth_mode)

    def refresh_health(self, event_loop: EventLoopHealth | None = None) -> bool:
        """Recompute the health snapshot; broadcast `health` (and bump its state version)
        only when its meaning changed, not for fresh timestamps or sampled numbers."""
        started = self.monotonic()
        fresh = empty_health(self.clock_ms(), event_loop)
        fresh = msgspec.structs.replace(fresh, duration_ms=int((self.monotonic() - started) * 1000))
        old, self._health = self._health, fresh
        if _health_signature(fresh) == _health_signature(old):
            return False
        self.health_version += 1
        self.broadcast("health", fresh, with_state_version=True)
        return True

    # -- presence -----------------------------------------------------------------------------
    def presence_changed(self) -> None:
        self.broadcast("presence", PresenceEvent(presence=self.presence_json()),
                       with_state_version=True)

    def add_system_event(self, key: str, entry: PresenceEntry) -> None:
        self.presence.upsert(key, entry)
        self.system_events.append(entry.text)
        self.presence_changed()

    def expire_handshakes(self) -> int:
        """Close sockets whose handshake deadline has passed; returns how many."""
        now = self.monotonic()
        expired = []
        for conn in self.handshakes.values():
            if conn.deadline > now:
                break
            expired.append(conn)
        for conn in expired:
            conn.handshake_timed_out()
        return len(expired)

    def maintain(self) -> None:
        """Periodic housekeeping: expire presence rows, prune the rate limiter."""
        if self.presence.prune(self.clock_ms()):
            self.presence_changed()
        self.rate_limiter.prune()

    # -- events --------------------------------------------------------------------------------
    def broadcast(self, event: str, payload, *, with_state_version: bool = False) -> int:
        """Serialize once, splice each socket's seq, deliver to sockets allowed to see it."""
        if self.closing:
            return 0  # nothing follows `shutdown`: sockets are being closed
        spec = M.EVENTS[event]
        prefix = wire.event_prefix(event, None if payload is None else _encode(payload))
        sv = (self.presence.version, self.health_version) if with_state_version else None
        suffix = wire.event_suffix(sv)
        need = SCOPE_BIT[spec.scope] if spec.scope else 0
        cfg = self.config
        return _fanout.fanout(prefix, suffix, list(self.subscribers.values()), need,
                              spec.droppable, cfg.drop_if_slow_bytes, cfg.max_buffered_bytes,
                              event if spec.coalesce else None)

    def flush_held(self) -> int:
        """Send the events parked for sockets that were behind, to those that drained."""
        if not self.holding:
            return 0
        limit = self.config.drop_if_slow_bytes
        sent = 0
        for conn in list(self.holding):
            sent += conn.release_held(limit)
        return sent

    def tick(self) -> int:
        return self.broadcast("tick", TickEvent(ts=self.clock_ms()))

    def shutdown(self, reason: str = "gateway stopping", restart_expected_ms: int | None = None) -> int:
        payload = ShutdownEvent(reason=reason)
        if restart_expected_ms is not None:
            payload = ShutdownEvent(reason=reason, restart_expected_ms=restart_expected_ms)
        delivered = self.broadcast("shutdown", payload)
        self.closing = True
        return delivered


def _health_signature(h: HealthSnapshot) -> tuple:
    loop = h.event_loop
    degraded = (loop.degraded, tuple(loop.reasons)) if loop else None
    return (h.ok, degraded, tuple(h.channels), tuple(h.agents and [a.get("agentId") for a in h.agents]))
