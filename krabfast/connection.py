"""Sans-I/O connection state machine: handshake, auth, dispatch.

Bytes in (`receive`), frames out (through a `Sink`). No sockets, no event loop: the
transport adapter (gateway/server.py) or a test feeds frames and reads what the sink got.

States: HANDSHAKE (challenge sent, waiting for `connect`) -> OPEN -> CLOSED.
"""

from __future__ import annotations

import inspect
import secrets
from typing import Any, Callable, Protocol

import msgspec

from krabfast._core import fanout as _fanout
from krabfast._core import wire
from krabfast.gateway.auth import CLOSE_POLICY, check_shared_secret
from krabfast.protocol.errors import (DetailCode, ErrorCode, GatewayError, invalid_request,
                                      missing_scope, validation_message)
from krabfast.protocol.frames import RequestFrame
from krabfast.protocol.handshake import (ConnectChallenge, ConnectParams, HelloAuth, HelloOk,
                                         Policy, PresenceEntry, ServerInfo)
from krabfast.protocol.scopes import (NODE_ROLE_SCOPE, OPERATOR_SCOPES, ROLE_NODE, ROLE_OPERATOR,
                                      ROLES, satisfies, scope_mask)
from krabfast.protocol.version import accepted_range

HANDSHAKE, OPEN, CLOSED = 0, 1, 2

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INVALID_TEXT = 1007
CLOSE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012

_encode = wire.encode_json
_connect_decoder = msgspec.json.Decoder(ConnectParams)
_params_decoders: dict[type, msgspec.json.Decoder] = {}


def _params_decoder(struct_type: type) -> msgspec.json.Decoder:
    dec = _params_decoders.get(struct_type)
    if dec is None:
        dec = _params_decoders[struct_type] = msgspec.json.Decoder(struct_type)
    return dec


class Sink(Protocol):
    """What the state machine needs from a transport."""

    def send(self, data: bytes) -> None: ...
    def close(self, code: int, reason: str) -> None: ...
    def buffered(self) -> int: ...
    def defer(self, awaitable, done: Callable[[Any, BaseException | None], None]) -> None: ...


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class Connection:
    def __init__(self, hub, sink: Sink, *, peer_ip: str, is_local: bool) -> None:
        self.hub = hub
        self.sink = sink
        self.peer_ip = peer_ip
        self.is_local = is_local
        self.conn_id: str = hub.new_conn_id()
        self.state = HANDSHAKE
        self.nonce = ""
        self.challenge_ts = 0
        self.role = ""
        self.scopes: frozenset[str] = frozenset()
        self.scope_mask = 0
        self.client = None
        self.params: ConnectParams | None = None
        self.protocol = 0
        self.sub: _fanout.Subscriber | None = None
        self.presence_key: str | None = None
        self.connected_at = 0
        hub.connections[self.conn_id] = self
        hub.preauth_by_ip[peer_ip] += 1

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Send the pre-connect challenge."""
        self.nonce = secrets.token_urlsafe(24)
        self.challenge_ts = self.hub.clock_ms()
        challenge = ConnectChallenge(nonce=self.nonce, ts=self.challenge_ts)
        self.sink.send(wire.event_unsequenced("connect.challenge", _encode(challenge)))

    def close(self, code: int, reason: str) -> None:
        if self.state == CLOSED:
            return
        self.sink.close(code, reason)
        self.transport_closed()

    def transport_closed(self) -> None:
        """The socket is gone (or we closed it): forget this connection everywhere."""
        if self.state == CLOSED:
            return
        was_open = self.state == OPEN
        self.state = CLOSED
        hub = self.hub
        hub.connections.pop(self.conn_id, None)
        if not was_open:
            self._leave_preauth()
            return
        hub.subscribers.pop(self.conn_id, None)
        if self.presence_key is not None and hub.presence.remove_client(self.presence_key):
            hub.presence_changed()

    def handshake_timed_out(self) -> None:
        if self.state == HANDSHAKE:
            self.close(CLOSE_POLICY, "handshake timeout")

    def _leave_preauth(self) -> None:
        counts = self.hub.preauth_by_ip
        counts[self.peer_ip] -= 1
        if counts[self.peer_ip] <= 0:
            del counts[self.peer_ip]

    # -- inbound ------------------------------------------------------------------------------
    def receive(self, data: bytes, *, binary: bool = False) -> None:
        """One complete (reassembled) WebSocket data message."""
        if self.state == HANDSHAKE:
            self._receive_handshake(data, binary)
        elif self.state == OPEN:
            self._receive_open(data, binary)

    def _receive_handshake(self, data: bytes, binary: bool) -> None:
        if len(data) > self.hub.config.preauth_max_payload:
            self.close(CLOSE_TOO_BIG, "pre-connect frame too large")
            return
        if binary:
            self.close(CLOSE_POLICY, "binary frames are not supported")
            return
        try:
            frame = wire.decode_frame(data)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            if not _is_utf8(data):
                self.close(CLOSE_INVALID_TEXT, "invalid UTF-8")
                return
            req_id = _salvage_request_id(data)
            if req_id is not None:
                err = invalid_request(validation_message("request frame", exc, "$"))
                self.sink.send(wire.response_error(req_id, _encode(err.to_shape())))
            self.close(CLOSE_POLICY, "invalid handshake: first frame must be a connect request")
            return
        if type(frame) is not RequestFrame:
            self.close(CLOSE_POLICY, "invalid handshake: first frame must be a connect request")
            return
        if frame.method != "connect":
            err = invalid_request("invalid handshake: first request must be connect")
            self.sink.send(wire.response_error(frame.id, _encode(err.to_shape())))
            self.close(CLOSE_POLICY, "invalid handshake: first request must be connect")
            return
        try:
            hello = self._connect(frame)
        except GatewayError as err:
            self.sink.send(wire.response_error(frame.id, _encode(err.to_shape())))
            self.close(err.close_code or CLOSE_POLICY, _close_reason(err.message))
            return
        self.sink.send(wire.response_ok(frame.id, _encode(hello)))
        self._after_open()

    def _receive_open(self, data: bytes, binary: bool) -> None:
        if binary:
            # No binary sub-protocol: say so without dropping the connection.
            return self._reply_error_frame(data, "binary frames are not supported")
        try:
            frame = wire.decode_frame(data)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            if not _is_utf8(data):
                self.close(CLOSE_INVALID_TEXT, "invalid UTF-8")
                return
            return self._reply_error_frame(data, validation_message("frame", exc, "$"))
        if type(frame) is not RequestFrame:
            return  # clients never need to send res/event frames to us; ignore them
        self._dispatch(frame)

    def _reply_error_frame(self, data: bytes, message: str) -> None:
        req_id = _salvage_request_id(data)
        if req_id is not None:
            self.sink.send(wire.response_error(req_id, _encode(invalid_request(message).to_shape())))

    # -- handshake ----------------------------------------------------------------------------
    def _connect(self, frame: RequestFrame) -> HelloOk:
        hub = self.hub
        raw = frame.params if frame.params is not msgspec.UNSET else b"null"
        try:
            params = _connect_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise invalid_request(validation_message("connect params", exc, "$.params"),
                                  close_code=CLOSE_POLICY) from None
        role = params.role if params.role is not msgspec.UNSET else ROLE_OPERATOR
        if role not in ROLES:
            raise invalid_request(f"invalid connect params: unknown role {role!r}",
                                  close_code=CLOSE_POLICY)
        low, high = accepted_range(role)
        if params.max_protocol < low or params.min_protocol > high:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST,
                f"protocol mismatch: client supports {params.min_protocol}..{params.max_protocol}, "
                f"gateway accepts {low}..{high}",
                details={"code": DetailCode.PROTOCOL_MISMATCH.value, "minProtocol": low,
                         "maxProtocol": high},
                close_code=CLOSE_POLICY)
        if role == ROLE_NODE and params.device is msgspec.UNSET:
            raise GatewayError(ErrorCode.INVALID_REQUEST, "node connections need a device identity",
                               details={"code": DetailCode.DEVICE_IDENTITY_REQUIRED.value},
                               close_code=CLOSE_POLICY)
        auth = params.auth if params.auth is not msgspec.UNSET else None
        check_shared_secret(hub.config, hub.rate_limiter, auth, self.peer_ip, self.is_local)

        requested = params.scopes if params.scopes is not msgspec.UNSET else []
        # Operators keep what they asked for on a shared-secret connect; a node holds no
        # operator scopes.
        granted = [s for s in dict.fromkeys(requested)] if role == ROLE_OPERATOR else []
        unknown = [s for s in granted if s.startswith("operator.") and s not in OPERATOR_SCOPES]
        if role == ROLE_OPERATOR and unknown:
            granted = [s for s in granted if s not in unknown]
        self.role = role
        self.scopes = frozenset(granted)
        self.scope_mask = scope_mask(granted)
        self.client = params.client
        self.params = params
        self.protocol = min(params.max_protocol, high)
        self.connected_at = hub.clock_ms()
        self._enter_open()
        cfg = hub.config
        return HelloOk(
            type="hello-ok",
            protocol=self.protocol,
            server=ServerInfo(version=hub.server_version, conn_id=self.conn_id),
            features=hub.features,
            snapshot=hub.snapshot(),
            auth=HelloAuth(role=role, scopes=granted),
            policy=Policy(max_payload=cfg.max_payload, max_buffered_bytes=cfg.max_buffered_bytes,
                          tick_interval_ms=cfg.tick_interval_ms),
        )

    def _enter_open(self) -> None:
        hub = self.hub
        self.state = OPEN
        self._leave_preauth()
        self.sub = _fanout.Subscriber(self.sink.send, self.sink.buffered, self._slow_consumer,
                                      self.scope_mask)
        hub.subscribers[self.conn_id] = self.sub
        entry = self._presence_entry()
        if entry is not None:
            self.presence_key = self._presence_identity()
            hub.presence.upsert_client(self.presence_key, entry)

    def _after_open(self) -> None:
        # Broadcast after hello-ok so the new client's first event follows its hello.
        if self.presence_key is not None:
            self.hub.presence_changed()

    def _presence_identity(self) -> str:
        client = self.client
        if client.instance_id is not msgspec.UNSET:
            return f"instance:{client.instance_id}"
        return f"conn:{self.conn_id}"

    def _presence_entry(self) -> PresenceEntry | None:
        client = self.client
        if client.mode in ("cli", "probe"):
            return None  # one-shot tools are not presence-worthy
        now = self.connected_at
        return PresenceEntry(
            ts=now, host=client.display_name, ip=self.peer_ip or msgspec.UNSET,
            version=client.version, platform=client.platform, device_family=client.device_family,
            model_identifier=client.model_identifier, mode=client.mode, reason="connect",
            online_since=now, instance_id=client.instance_id, roles=[self.role],
            scopes=sorted(self.scopes))

    def _slow_consumer(self) -> None:
        self.close(CLOSE_POLICY, "slow consumer")

    # -- dispatch -----------------------------------------------------------------------------
    def _dispatch(self, frame: RequestFrame) -> None:
        req_id = frame.id
        method = frame.method
        entry = self.hub.methods.get(method)
        if entry is None:
            if method == "connect":
                return self._send_error(req_id, invalid_request("connect already completed"))
            return self._send_error(req_id, invalid_request(f"unknown method: {method}"))
        spec, handler = entry
        err = self._authorize(spec)
        if err is not None:
            return self._send_error(req_id, err)
        params = None
        if spec.params is not None:
            raw = frame.params
            if raw is msgspec.UNSET or bytes(raw) == b"null":
                raw = b"{}"
            try:
                params = _params_decoder(spec.params).decode(raw)
            except msgspec.ValidationError as exc:
                return self._send_error(
                    req_id, invalid_request(validation_message(f"{method} params", exc, "$.params")))
        key = None
        if spec.side_effect:
            idem = getattr(params, "idempotency_key", msgspec.UNSET)
            if idem is not msgspec.UNSET:
                key = (method, idem)
                if self._replay(req_id, key):
                    return
        self._run(req_id, handler, params, key)

    def _authorize(self, spec) -> GatewayError | None:
        if spec.scope == NODE_ROLE_SCOPE:
            if self.role != ROLE_NODE:
                return GatewayError(ErrorCode.FORBIDDEN, f"unauthorized role: {self.role}")
            return None
        if self.role != ROLE_OPERATOR:
            return GatewayError(ErrorCode.FORBIDDEN, f"unauthorized role: {self.role}")
        if not satisfies(self.scopes, self.scope_mask, spec.scope):
            return missing_scope(spec.name, spec.scope, [spec.scope])
        return None

    def _replay(self, req_id: str, key) -> bool:
        """Answer an idempotent retry from the cache; True if handled."""
        cache = self.hub.idempotency
        found = cache.lookup(key)
        if found is None:
            return False
        if isinstance(found, tuple):
            self._send_outcome(req_id, found)
        else:
            found.waiters.append((self, req_id))
        return True

    def _run(self, req_id: str, handler, params, key) -> None:
        if key is not None:
            self.hub.idempotency.begin(key)
        try:
            result = handler(self, params)
        except GatewayError as err:
            return self._complete(req_id, key, (False, _encode(err.to_shape())))
        if inspect.isawaitable(result):
            def done(value, exc, req_id=req_id, key=key):
                if exc is None:
                    outcome = (True, _encode(value))
                elif isinstance(exc, GatewayError):
                    outcome = (False, _encode(exc.to_shape()))
                else:
                    outcome = (False, _encode(GatewayError(ErrorCode.UNAVAILABLE,
                                                           f"internal error: {exc}").to_shape()))
                self._complete(req_id, key, outcome)
            self.sink.defer(result, done)
            return
        self._complete(req_id, key, (True, _encode(result)))

    def _complete(self, req_id: str, key, outcome: tuple[bool, bytes]) -> None:
        if key is not None:
            for conn, waiting_id in self.hub.idempotency.finish(key, outcome):
                conn._send_outcome(waiting_id, outcome)
        self._send_outcome(req_id, outcome)

    def _send_outcome(self, req_id: str, outcome: tuple[bool, bytes]) -> None:
        if self.state != OPEN:
            return
        ok, body = outcome
        self.sink.send(wire.response_ok(req_id, body) if ok else wire.response_error(req_id, body))

    def _send_error(self, req_id: str, err: GatewayError) -> None:
        self.sink.send(wire.response_error(req_id, _encode(err.to_shape())))

    # -- outbound events ----------------------------------------------------------------------
    def send_event(self, event: str, payload) -> None:
        """Unicast an event to this socket, in its seq stream."""
        if self.sub is None or self.state != OPEN:
            return
        prefix = wire.event_prefix(event, None if payload is None else _encode(payload))
        self.sink.send(self.sub.next_frame(prefix, b"}"))


_id_decoder = msgspec.json.Decoder(dict)


def _salvage_request_id(data: bytes) -> str | None:
    """The `id` of a malformed request, if one can be read, so the error can be correlated."""
    try:
        obj = _id_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None
    req_id = obj.get("id")
    if obj.get("type") == "req" and isinstance(req_id, str) and req_id:
        return req_id
    return None


def _close_reason(message: str) -> str:
    # A close reason must fit in a control frame (125 bytes incl. the 2-byte code).
    encoded = message.encode()
    if len(encoded) <= 123:
        return message
    return encoded[:120].decode("utf-8", "ignore") + "..."
