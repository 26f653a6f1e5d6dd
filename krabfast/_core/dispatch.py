"""The request fast path of an authenticated connection (see dispatch.pxd for the contract;
one source: compiled with dispatch.pxd, or plain Python with KRABFAST_NO_EXTENSIONS=1)."""

import msgspec

from krabfast._core.wire import decode_frame, encode_json, response_error, response_ok
from krabfast.protocol.errors import GatewayError
from krabfast.protocol.frames import RequestFrame

# MethodEntry.kind
KIND_SCOPED = 0      # operator role + a scope bit
KIND_OPEN = 1        # any authenticated connection
KIND_NODE = 2        # node role
KIND_SLOW = 3        # rules the fast path does not know (unknown operator.* scope ...)

_UNSET = msgspec.UNSET
_ValidationError = msgspec.ValidationError
_RequestFrame = RequestFrame
_GatewayError = GatewayError


class MethodEntry:
    __slots__ = ("spec", "handler", "decoder", "scope_bit", "kind", "is_async", "side_effect")

    def __init__(self, spec, handler, decoder, scope_bit, kind, is_async):
        self.spec = spec
        self.handler = handler
        self.decoder = decoder
        self.scope_bit = scope_bit
        self.kind = kind
        self.is_async = is_async
        self.side_effect = spec.side_effect


class Dispatcher:
    __slots__ = ("entries",)

    def __init__(self, entries):
        self.entries = entries

    def receive(self, conn, data):
        frame = decode_frame(data)
        if type(frame) is not _RequestFrame:
            return (frame, _UNSET)
        e = self.entries.get(frame.method)
        if e is None:
            return (frame, _UNSET)
        if e.kind == KIND_SCOPED:
            if conn.role != "operator":
                return (frame, _UNSET)
            mask = conn.scope_mask
            if not (mask & e.scope_bit):
                return (frame, _UNSET)
        elif e.kind == KIND_NODE:
            if conn.role != "node":
                return (frame, _UNSET)
        elif e.kind != KIND_OPEN:
            return (frame, _UNSET)
        params = None
        if e.decoder is not None:
            raw = frame.params
            if raw is _UNSET:
                raw = b"{}"
            try:
                params = e.decoder.decode(raw)
            except _ValidationError:
                return (frame, _UNSET)
            if e.side_effect and getattr(params, "idempotency_key", _UNSET) is not _UNSET:
                return (frame, params)
        if e.is_async:
            return (frame, params)
        conn.unauthorized_calls = 0
        try:
            result = e.handler(conn, params)
            body = encode_json(result)
        except _GatewayError as err:
            conn.sink.send(response_error(frame.id, encode_json(err.to_shape())))
            return None
        except Exception as exc:  # a handler bug: a clean answer, not a dead socket
            conn.sink.send(response_error(frame.id, conn.internal_error(exc)))
            return None
        conn.sink.send(response_ok(frame.id, body))
        return None
