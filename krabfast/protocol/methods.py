"""How a method and an event are declared (the declaration shape; the declarations
themselves live next to their handlers, in `krabfast.methods.<family>`).

A `MethodSpec` binds, once, everything about a method: name, params and result Structs,
the scope it needs, its idempotency policy and its handler. It is the single source for
dispatch (authorization, validation), for `hello-ok.features.methods` and for the
`methods` map of the exported JSON Schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from krabfast.protocol import agents, chat, sessions
from krabfast.protocol import scopes as S
from krabfast.protocol import devices as dev
from krabfast.protocol import nodes as nod
from krabfast.protocol import system as sysp
from krabfast.protocol.handshake import HealthSnapshot


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    params: type | None  # Struct decoded from params; None = params are ignored (as upstream)
    result: type | None
    scope: str  # an operator scope, scopes.NODE_ROLE_SCOPE, or scopes.DYNAMIC_SCOPE
    # handler(call, params) -> result | Reply | awaitable of either; raises GatewayError.
    handler: Callable[[Any, Any], Any] | None = None
    # Dedupe on params.idempotencyKey, keyed by caller and params. The reference dedupes
    # none of the methods krabfast serves today; krabfast keeps it for its own side effects.
    idempotent: bool = False
    # The answer reports a durable change (pairing, tokens, node approval): it is sent once
    # the durable store has the change on disk, never before (the loop does not block).
    durable: bool = False
    summary: str = ""
    # Answered for every authenticated connection whatever its role and scopes; the
    # reference exempts `health` this way (its published scope is still operator.read).
    open_to_all: bool = False
    # For scope == DYNAMIC_SCOPE: the scope a call needs given its decoded params (None:
    # the least scope any call needs, checked before the params are decoded). Checked
    # before the params are used, before idempotent replays too.
    scope_for: Callable[[Any], str] | None = None


class Reply:
    """What a handler returns when something must happen once its answer is out.

    `after()` (close the caller's socket, kick a device's sockets) runs once, right after the
    answer is queued (an idempotent replay of the call answers without running it again).
    `final`, an awaitable, makes `result` an interim answer: its value is a second answer on
    the same request id (the reference's `agent`: "accepted" at once, the outcome later)."""

    __slots__ = ("result", "after", "final")

    def __init__(self, result, after: Callable[[], None] | None = None, final=None) -> None:
        self.result = result
        self.after = after
        self.final = final


class MethodTable:
    """A family's declarations, in order: `@table.method(name, params, result, scope, ...)`
    above the handler declares it (the handler is the decorated function)."""

    def __init__(self) -> None:
        self.specs: list[MethodSpec] = []

    def method(self, name: str, params: type | None, result: type | None, scope: str, *,
               summary: str, idempotent: bool = False, durable: bool = False,
               open_to_all: bool = False, scope_for: Callable[[Any], str] | None = None):
        def declare(handler):
            self.add(MethodSpec(name, params, result, scope, handler, idempotent, durable,
                                summary, open_to_all, scope_for))
            return handler
        return declare

    def add(self, spec: MethodSpec) -> MethodSpec:
        if spec.handler is None:
            raise ValueError(f"{spec.name}: a served method needs a handler")
        if any(s.name == spec.name for s in self.specs):
            raise ValueError(f"{spec.name} declared twice")
        self.specs.append(spec)
        return spec


def index(specs) -> dict[str, MethodSpec]:
    """name -> spec, refusing duplicates (two families claiming one name)."""
    table: dict[str, MethodSpec] = {}
    for spec in specs:
        if spec.name in table:
            raise ValueError(f"{spec.name} declared twice")
        table[spec.name] = spec
    return table


# Server-pushed events, with the scope a socket needs to receive them (None = every
# authenticated socket) and whether a slow socket may miss them.
@dataclass(frozen=True, slots=True)
class EventSpec:
    name: str
    payload: type | None
    scope: str | None = None
    droppable: bool = False
    # Each event carries the whole state (presence): a socket that is behind needs only
    # the newest one, sent when it drains, instead of missing it.
    coalesce: bool = False


EVENT_SPECS: tuple[EventSpec, ...] = (
    EventSpec("connect.challenge", None),
    # As on the reference, only presence may be skipped for a slow socket; a socket too
    # far behind to take a tick is closed (1008 slow consumer).
    EventSpec("tick", sysp.TickEvent),
    EventSpec("presence", sysp.PresenceEvent, scope=S.READ, droppable=True, coalesce=True),
    EventSpec("health", HealthSnapshot),
    EventSpec("shutdown", sysp.ShutdownEvent),
    EventSpec("device.pair.requested", dev.PendingDevice, scope=S.PAIRING, droppable=True),
    EventSpec("device.pair.resolved", dev.DevicePairResolvedEvent, scope=S.PAIRING, droppable=True),
    EventSpec("device.pair.changed", dev.DevicePairChangedEvent, scope=S.PAIRING, droppable=True),
    EventSpec("node.pair.requested", nod.PendingNodeRequest, scope=S.PAIRING, droppable=True),
    EventSpec("node.pair.resolved", nod.NodePairResolvedEvent, scope=S.PAIRING, droppable=True),
    EventSpec("node.invoke.request", nod.NodeInvokeRequestEvent),
    EventSpec("node.invoke.cancel", nod.NodeInvokeCancelEvent),
    # Conversations: to every operator.read socket, as the reference (a slow socket skips
    # chat deltas, never a final: the run publishes its deltas as droppable).
    EventSpec("chat", chat.ChatEvent, scope=S.READ),
    EventSpec("agent", agents.AgentEvent, scope=S.READ),
    # Topic events: only to the sockets that subscribed (sessions.subscribe,
    # sessions.messages.subscribe).
    EventSpec("sessions.changed", sessions.SessionsChangedEvent, scope=S.READ),
    EventSpec("session.message", sessions.SessionMessageEvent, scope=S.READ),
)
EVENTS: dict[str, EventSpec] = {spec.name: spec for spec in EVENT_SPECS}
