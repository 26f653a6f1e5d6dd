"""The hub: the gateway state shared by all connections, as named seams (Sans-I/O: no
sockets, no event loop).

Each seam has a narrow interface a second implementation (Redis, PostgreSQL) can replace:
the event bus (`bus`), the presence store (`presence`), the idempotency store
(`idempotency`), the connection directory (`directory`), the node router (`nodes`) and the
durable store (`database`, behind `pairing` and `nodes`). The hub wires them together,
owns the method table and the health snapshot, and is fed time (`tick`, `refresh_health`,
`maintain`) by the transport adapter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import secrets
import time
import uuid
from collections import deque

import msgspec

from krabfast import __version__
from krabfast._core import dispatch as _dispatch
from krabfast.gateway.admission import Admission
from krabfast.gateway.bus import EventBus
from krabfast.gateway.clientlog import ClientLog
from krabfast.gateway.config import GatewayConfig
from krabfast.gateway.directory import ConnectionDirectory
from krabfast.gateway.hello import HelloEncoder
from krabfast.gateway.idempotency import IdempotencyStore
from krabfast.gateway.node_router import NodeRouter
from krabfast.gateway.pairing import Pairing
from krabfast.gateway.presence import PresenceStore, self_entry
from krabfast.gateway.ratelimit import AuthRateLimiter
from krabfast.gateway.services import Services
from krabfast.methods import METHOD_SPECS
from krabfast.protocol import methods as M
from krabfast.store import Database, DeviceStore
from krabfast.store.nodes import NodeStore
from krabfast.protocol.frames import StateVersion
from krabfast.protocol.handshake import (EventLoopHealth, Features, HealthSnapshot, PresenceEntry,
                                         SessionDefaults, Snapshot, empty_health)
from krabfast.protocol.system import PresenceEvent, ShutdownEvent, TickEvent

log = logging.getLogger("krabfast.gateway")
PLUGIN_ENTRY_POINTS = "krabfast.methods"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Hub:
    def __init__(self, config: GatewayConfig, *, clock_ms=_wall_ms, monotonic=time.monotonic,
                 server_version: str = __version__, plugins: bool = False) -> None:
        self.config = config
        self.clock_ms = clock_ms
        self.monotonic = monotonic
        self.server_version = server_version
        self.started = monotonic()
        self.boot_id = secrets.token_hex(8)
        self.presence = PresenceStore(self_entry(server_version, str(uuid.uuid4())),
                                      config.max_presence_entries)
        self._presence_cache: tuple = (None, None, None)  # (ms, version, Raw)
        self._health_cache: tuple = (None, None)  # (snapshot, Raw)
        # Texts of recent system events, oldest first (`status.queuedSystemEvents`).
        self.system_events: deque[str] = deque(maxlen=config.max_queued_system_events)
        self.health_version = 0
        self._health = empty_health(clock_ms(), None)
        self.bus = EventBus(config.drop_if_slow_bytes, config.max_buffered_bytes)
        self.directory = ConnectionDirectory()
        self.idempotency = IdempotencyStore(config.idempotency_ttl_ms,
                                            config.idempotency_max_entries, clock_ms)
        self.rate_limiter = AuthRateLimiter(config.rate_limit, clock_ms)
        self.admission = Admission(config, self.rate_limiter)
        # One rate-limited log line per client connect, disconnect and refused connect.
        self.client_log = ClientLog()
        self.closing = False
        self._conn_counter = 0
        self._pairing: Pairing | None = None
        self._nodes: NodeRouter | None = None
        self._database: Database | None = None
        self._conversations = None
        # hello-ok.snapshot.sessionDefaults: the main session of the default agent.
        self.session_defaults = SessionDefaults(
            default_agent_id="main", main_key="main", main_session_key="agent:main:main",
            model_configured=_model_configured(config), scope="per-sender")
        self.services = Services(self)
        self.methods: dict[str, M.MethodSpec] = {}
        self.features = Features(methods=[], events=[spec.name for spec in M.EVENT_SPECS])
        self.dispatcher = _dispatch.Dispatcher({})
        self.add_methods(METHOD_SPECS)
        if plugins:
            self.load_plugins()
        self.hello = HelloEncoder(self)

    @property
    def pairing(self) -> Pairing:
        """Device trust, backed by SQLite in the state directory (opened on first use, so
        gateways whose clients never present a device never touch the disk)."""
        if self._pairing is None:
            self._pairing = Pairing(self, DeviceStore(self.database))
        return self._pairing

    @property
    def nodes(self) -> NodeRouter:
        if self._nodes is None:
            self._nodes = NodeRouter(self, NodeStore(self.database))
        return self._nodes

    @property
    def conversations(self):
        """Sessions, models and runs (opened on first use: see gateway/conversations.py)."""
        if self._conversations is None:
            from krabfast.gateway.conversations import Conversations

            self._conversations = Conversations(self)
        return self._conversations

    @property
    def database(self) -> Database:
        if self._database is None:
            state = self.config.state_dir
            self._database = Database(":memory:") if state == ":memory:" else Database.in_state_dir(state)
        return self._database

    def write_barrier(self):
        """An awaitable that completes once every durable write made so far is on disk, or
        None when there is nothing to wait for (no database yet, an in-memory one, nothing
        pending). Raises WriteError when a write failed since the last report."""
        db = self._database
        if db is None or str(db.path) == ":memory:":
            return None
        future = db.flush()
        if future.done():
            future.result()
            return None
        return _until_done(future)

    async def close_conversations(self) -> None:
        """At shutdown: every run aborted cleanly (its watchers told), model clients closed."""
        if self._conversations is not None:
            await self._conversations.close()

    async def close_database(self) -> None:
        """At shutdown: everything queued reaches the disk, the writer thread stops."""
        if self._database is not None:
            await self._database.aclose()

    # -- the method table ------------------------------------------------------------------------
    def add_methods(self, specs) -> None:
        """Serve these declarations (built-in families, plugins, tests): each is dispatched,
        authorized and advertised in `hello-ok.features.methods` like the built-in ones. A
        later declaration of a name replaces the earlier one."""
        for spec in specs:
            if spec.handler is None:
                raise ValueError(f"{spec.name}: a served method needs a handler")
            self.methods[spec.name] = spec
        entries = {}
        for name, spec in self.methods.items():
            decoder = msgspec.json.Decoder(spec.params) if spec.params is not None else None
            entries[name] = _dispatch.MethodEntry(spec, decoder,
                                                  inspect.iscoroutinefunction(spec.handler))
        self.dispatcher = _dispatch.Dispatcher(entries)
        # A new Features object: the hello-ok encoder re-encodes it when it changes.
        self.features = Features(methods=sorted(self.methods), events=self.features.events)

    def set_method(self, spec: M.MethodSpec, handler=None) -> None:
        """Serve one method (`handler` replaces the spec's own, e.g. in tests)."""
        if handler is not None:
            spec = dataclasses.replace(spec, handler=handler)
        self.add_methods([spec])

    def load_plugins(self) -> int:
        """Methods from installed packages: each entry point in the `krabfast.methods`
        group names a `MethodTable` (or an iterable of `MethodSpec`). A plugin that fails
        to load is logged and skipped; it never stops the gateway."""
        from importlib.metadata import entry_points

        added = 0
        for ep in entry_points(group=PLUGIN_ENTRY_POINTS):
            try:
                obj = ep.load()
                specs = list(obj.specs if isinstance(obj, M.MethodTable) else obj)
                if not all(isinstance(s, M.MethodSpec) for s in specs):
                    raise TypeError("not a MethodTable or MethodSpecs")
                self.add_methods(specs)
            except Exception as exc:
                log.error("method plugin %s failed to load: %s", ep.name, exc)
                continue
            added += len(specs)
            log.info("method plugin %s: %s", ep.name, ", ".join(s.name for s in specs))
        return added

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
        """The presence list, encoded. A hot read (clients poll `system-presence`): the
        same list is handed out again within one millisecond of one presence version (only
        the gateway's own row changes with time, its `ts`)."""
        now = self.clock_ms()
        presence = self.presence
        cached = self._presence_cache
        if cached[0] == now and cached[1] == presence.version:
            return cached[2]
        oldest = presence.oldest_ts()
        if oldest is not None and oldest <= now - presence.ttl_ms:
            self.maintain()  # expire (and announce) stale rows before listing them
        raw = msgspec.Raw(presence.entries_json(now))
        self._presence_cache = (now, presence.version, raw)
        return raw

    def health_snapshot(self) -> HealthSnapshot:
        return self._health

    def health_json(self) -> msgspec.Raw:
        """The health snapshot, encoded once per snapshot (`health` is polled)."""
        cached = self._health_cache
        if cached[0] is not self._health:
            cached = self._health_cache = (self._health, msgspec.Raw(msgspec.json.encode(self._health)))
        return cached[1]

    def snapshot(self, can_read: bool) -> Snapshot:
        # Presence is operator.read data: others get an empty list, as on the reference.
        return Snapshot(presence=self.presence_json() if can_read else [], health=self._health,
                        state_version=self.state_version(), uptime_ms=self.uptime_ms(),
                        auth_mode=self.config.auth_mode, session_defaults=self.session_defaults)

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
        return self.directory.expire_handshakes(self.monotonic())

    def maintain(self) -> None:
        """Periodic housekeeping: expire presence rows, prune the rate limiter."""
        if self.presence.prune(self.clock_ms()):
            self.presence_changed()
        self.rate_limiter.prune()

    # -- events --------------------------------------------------------------------------------
    def broadcast(self, event: str, payload, *, with_state_version: bool = False) -> int:
        """Publish to every authenticated socket allowed to see the event (the bus's ALL
        topic), with the state versions when asked."""
        sv = (self.presence.version, self.health_version) if with_state_version else None
        return self.bus.publish(event, payload, state_version=sv)

    def flush_held(self) -> int:
        return self.bus.flush_held()

    def tick(self) -> int:
        return self.broadcast("tick", TickEvent(ts=self.clock_ms()))

    def shutdown(self, reason: str = "gateway stopping", restart_expected_ms: int | None = None) -> int:
        payload = ShutdownEvent(reason=reason)
        if restart_expected_ms is not None:
            payload = ShutdownEvent(reason=reason, restart_expected_ms=restart_expected_ms)
        delivered = self.broadcast("shutdown", payload)
        self.closing = True
        self.bus.closed = True  # nothing follows `shutdown`: sockets are being closed
        return delivered


def _model_configured(config) -> bool:
    """A model provider is configured (else the built-in offline model answers)."""
    models = getattr(config, "models_config", None) or {}
    providers = models.get("providers") if isinstance(models, dict) else None
    return any(isinstance(p, dict) and p.get("models") for p in (providers or {}).values())


async def _until_done(future) -> None:
    await asyncio.wrap_future(future)


def _health_signature(h: HealthSnapshot) -> tuple:
    loop = h.event_loop
    degraded = (loop.degraded, tuple(loop.reasons)) if loop else None
    return (h.ok, degraded, tuple(h.channels), tuple(h.agents and [a.get("agentId") for a in h.agents]))
