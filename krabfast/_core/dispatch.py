"""Request dispatch for an open connection: one path for every request frame (see
dispatch.pxd for the contract; one source: compiled with dispatch.pxd, or plain Python
with KRABFAST_NO_EXTENSIONS=1)."""

import msgspec

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


def access(e, conn):
    """The one authorization rule for a request to method entry `e`: ALLOWED,
    WRONG_ROLE or MISSING_SCOPE (before params; a params-dependent scope is checked
    again on the decoded params)."""
    # Literals, not the names above: compiled, these are C ints (no global lookups).
    kind = e.kind
    if kind == 0:  # KIND_OPEN
        return 0  # ALLOWED
    role = conn.role
    if kind == 1:  # KIND_NODE
        return 0 if role == _ROLE_NODE else 1  # ALLOWED / WRONG_ROLE
    if role != _ROLE_OPERATOR:
        return 1  # WRONG_ROLE
    if e.scope_bit:
        return 0 if (conn.scope_mask & e.scope_bit) else 2  # ALLOWED / MISSING_SCOPE
    if e.scope_name is not None and not holds(conn.scope_mask, conn.scopes, e.scope_name):
        return 2  # MISSING_SCOPE
    return 0


class Dispatcher:
    __slots__ = ("entries",)

    def __init__(self, entries):
        self.entries = entries

    def receive(self, conn, data):
        """Serve one text frame of an open connection. The plain case (a sync handler,
        no idempotency key, not durable) is answered here; every other outcome is handed to one
        `conn` method that owns it. Decode errors of the frame itself propagate."""
        frame = decode_frame(data)
        if type(frame) is not _RequestFrame:
            conn.not_a_request(frame)
            return
        e = self.entries.get(frame.method)
        if e is None:
            conn.unknown_method(frame.id, frame.method)
            return
        verdict = access(e, conn)
        if verdict != 0:  # not ALLOWED
            conn.denied(frame.id, e, verdict, e.needed_scope())
            return
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
                if not holds(conn.scope_mask, conn.scopes, needed):
                    conn.denied(frame.id, e, 2, needed)  # MISSING_SCOPE
                    return
            if e.idempotent and getattr(params, "idempotency_key", _UNSET) is not _UNSET:
                conn.run_idempotent(frame.id, e, params)
                return
        if e.is_async or e.durable:
            conn.run(frame.id, e, params, None)
            return
        try:
            result = e.handler(conn.call, params)
            if type(result) is _Reply:
                conn.send_reply(frame.id, result, None)
                return
            body = encode_json(result)
        except _GatewayError as err:
            conn.sink.send(response_error(frame.id, encode_json(err.to_shape())))
            return
        except Exception as exc:  # a handler bug: a clean answer, not a dead socket
            conn.sink.send(response_error(frame.id, conn.internal_error(exc)))
            return
        conn.sink.send(response_ok(frame.id, body))
