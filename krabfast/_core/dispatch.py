"""Request dispatch for an open connection: one path for every request frame (see
dispatch.pxd for the contract; one source: compiled with dispatch.pxd, or plain Python
with KRABFAST_NO_EXTENSIONS=1)."""

import msgspec

from krabfast._core.sink import WireSink
from krabfast._core.wire import decode_frame, encode_json, response_error, response_ok
from krabfast.protocol.errors import GatewayError
from krabfast.protocol.frames import RequestFrame
from krabfast.protocol.methods import Reply
from krabfast.protocol.scopes import (ADMIN, DYNAMIC_SCOPE, NODE_ROLE_SCOPE, ROLE_NODE,
                                      ROLE_OPERATOR, SCOPE_BIT)

# MethodEntry.kind: who may call at all.
KIND_OPEN = 0        # any authenticated connection
KIND_NODE = 1        # the node role
KIND_OPERATOR = 2    # the operator role, holding `scope_bit` (or `scope_name` exactly)

# Verdicts of `access`.
ALLOWED = 0
WRONG_ROLE = 1
MISSING_SCOPE = 2

_UNSET = msgspec.UNSET
_Raw = msgspec.Raw
_ValidationError = msgspec.ValidationError
_RequestFrame = RequestFrame
_GatewayError = GatewayError
_Reply = Reply
_SCOPE_BIT = SCOPE_BIT
_ADMIN = ADMIN
_ROLE_NODE = ROLE_NODE
_ROLE_OPERATOR = ROLE_OPERATOR
_NULL = b"null"
_EMPTY = b"{}"


class Call:
    """What a handler gets about its caller: identity, role, scopes, and the gateway
    services it may use (`services`); one per open connection, made when it opens.

    Also the typed state the dispatcher reads on every request (role kind, scope bits,
    the socket's sink) and the connection that owns the outcomes it does not answer
    itself (`_owner`); compiled, those are C fields handlers cannot see."""

    __slots__ = ("conn_id", "role", "scopes", "client", "device", "auth_method", "is_local",
                 "peer_ip", "principal", "services", "scope_mask", "_role_kind", "_owner",
                 "_sink", "_wire_sink")

    def __init__(self, owner, role, scopes, scope_mask, principal, services):
        self._owner = owner
        self.conn_id = owner.conn_id
        self.role = role
        self._role_kind = (KIND_NODE if role == ROLE_NODE else
                          KIND_OPERATOR if role == ROLE_OPERATOR else KIND_OPEN)
        self.scopes = scopes
        self.scope_mask = scope_mask
        self.client = owner.client
        self.device = owner.device
        self.auth_method = owner.auth_method
        self.is_local = owner.is_local
        self.peer_ip = owner.peer_ip
        self.principal = principal  # names the caller in keys no other caller may share
        self.services = services
        sink = owner.sink
        self._sink = sink
        # Compiled, a WireSink is written through its C methods.
        self._wire_sink = sink if isinstance(sink, WireSink) else None


class MethodEntry:
    """A MethodSpec compiled for dispatch: its access rule as role kind + scope bit."""

    __slots__ = ("spec", "handler", "decoder", "kind", "scope_bit", "scope_name", "scope_for",
                 "is_async", "idempotent", "durable")

    def __init__(self, spec, decoder, is_async):
        self.spec = spec
        self.handler = spec.handler
        self.decoder = decoder
        self.scope_for = spec.scope_for
        self.is_async = is_async
        self.idempotent = spec.idempotent
        self.durable = spec.durable
        self.scope_bit = 0
        self.scope_name = None
        if spec.open_to_all:
            self.kind = KIND_OPEN
        elif spec.scope == NODE_ROLE_SCOPE:
            self.kind = KIND_NODE
        else:
            self.kind = KIND_OPERATOR
            # A params-dependent scope: the least any call needs, now; the rest once the
            # params are decoded (see Dispatcher.receive).
            scope = spec.scope if spec.scope_for is None else spec.scope_for(None)
            if scope != DYNAMIC_SCOPE:
                self.scope_bit = _SCOPE_BIT.get(scope, 0)
                if not self.scope_bit:
                    self.scope_name = scope

    def needed_scope(self):
        """The scope a caller without access lacks (for the error message)."""
        spec = self.spec
        return spec.scope if spec.scope_for is None else spec.scope_for(None)


def holds(mask, scopes, scope):
    """The caller's grant satisfies `scope`: by bit (implications applied) for known
    operator scopes; others need an exact grant or operator.admin."""
    bit = _SCOPE_BIT.get(scope, 0)
    if bit:
        return (mask & bit) != 0
    return scope in scopes or _ADMIN in scopes


def access(e, call):
    """The one authorization rule for a request to method entry `e` by `call`: ALLOWED,
    WRONG_ROLE or MISSING_SCOPE (before params; a params-dependent scope is checked
    again on the decoded params)."""
    # Literals, not the names above: compiled, these are C ints (no global lookups).
    kind = e.kind
    if kind == 0:  # KIND_OPEN
        return 0  # ALLOWED
    if kind != call._role_kind:  # KIND_NODE or KIND_OPERATOR
        return 1  # WRONG_ROLE
    if kind == 1:  # the node role: nothing more
        return 0
    if e.scope_bit:
        return 0 if (call.scope_mask & e.scope_bit) else 2  # ALLOWED / MISSING_SCOPE
    if e.scope_name is not None and not holds(call.scope_mask, call.scopes, e.scope_name):
        return 2  # MISSING_SCOPE
    return 0


class Dispatcher:
    __slots__ = ("entries",)

    def __init__(self, entries):
        self.entries = entries

    def receive(self, call, data):
        """Serve one text frame of the open connection `call` is for. The plain case (a
        sync handler, no idempotency key, not durable) is answered here; every other
        outcome is handed to one method of the connection (`call._owner`) that owns it.
        Decode errors of the frame itself propagate."""
        frame = decode_frame(data)
        if type(frame) is not _RequestFrame:
            call._owner.not_a_request(frame)
            return
        e = self.entries.get(frame.method)
        if e is None:
            call._owner.unknown_method(frame.id, frame.method)
            return
        verdict = access(e, call)
        conn = call._owner
        if verdict != 0:  # not ALLOWED
            conn.denied(frame.id, e, verdict, e.needed_scope())
            return
        if conn.unauthorized_calls:
            conn.unauthorized_calls = 0
        params = None
        if e.decoder is not None:
            raw = frame.params
            if raw is _UNSET:
                raw = _EMPTY
            try:
                params = e.decoder.decode(raw)
            except (_ValidationError, RecursionError) as exc:
                if bytes(raw) != _NULL:
                    conn.bad_params(frame.id, e, exc)
                    return
                try:  # `"params": null` means no params, as on the reference
                    params = e.decoder.decode(_EMPTY)
                except (_ValidationError, RecursionError) as exc2:
                    conn.bad_params(frame.id, e, exc2)
                    return
            if e.scope_for is not None:
                needed = e.scope_for(params)
                if not holds(call.scope_mask, call.scopes, needed):
                    conn.denied(frame.id, e, 2, needed)  # MISSING_SCOPE
                    return
            if e.idempotent and getattr(params, "idempotency_key", _UNSET) is not _UNSET:
                conn.run_idempotent(frame.id, e, params)
                return
        if e.is_async or e.durable:
            conn.run(frame.id, e, params, None)
            return
        ok = True
        try:
            result = e.handler(call, params)
            rtype = type(result)
            if rtype is _Raw:
                body = result  # already JSON (a cached snapshot): copied once, into the frame
            elif rtype is _Reply:
                conn.send_reply(frame.id, result, None)
                return
            else:
                body = encode_json(result)
        except _GatewayError as err:
            ok = False
            body = encode_json(err.to_shape())
        except Exception as exc:  # a handler bug: a clean answer, not a dead socket
            ok = False
            body = conn.internal_error(exc)
        wire_sink = call._wire_sink
        if wire_sink is not None:
            wire_sink.send_response(frame.id, ok, body)
        elif ok:
            call._sink.send(response_ok(frame.id, bytes(body)))
        else:
            call._sink.send(response_error(frame.id, body))
