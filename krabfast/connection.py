"""Sans-I/O connection state machine: handshake, auth, dispatch.

Bytes in (`receive`), frames out (through a `Sink`). No sockets, no event loop: the
transport adapter (gateway/server.py) or a test feeds frames and reads what the sink got.
The gateway's state and policies come in through `hub` (duck-typed: see gateway/hub.py):
this module imports only the protocol, the hot-path core and a log helper.

States: HANDSHAKE (challenge sent, waiting for `connect`) -> OPEN -> CLOSED.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import os
import re
from typing import Any, Callable, Protocol

import msgspec

from krabfast._core import dispatch as _dispatch
from krabfast._core import fanout as _fanout
from krabfast._core.dispatch import Call
from krabfast._core import wire
from krabfast.logutil import ThrottledLog
from krabfast.protocol.errors import (CLOSE_POLICY, DetailCode, ErrorCode, GatewayError,
                                      invalid_request, missing_scope, validation_message)
from krabfast.protocol.frames import RequestFrame
from krabfast.protocol.handshake import ConnectChallenge, ConnectParams, PresenceEntry
from krabfast.protocol.methods import Reply
from krabfast.protocol.scopes import (OPERATOR_SCOPES, ROLE_NODE, ROLE_OPERATOR, ROLES, SCOPE_BIT,
                                      satisfies, scope_mask)
from krabfast.protocol.version import MIN_NODE_PROTOCOL, accepted_range

HANDSHAKE, OPEN, CLOSED = 0, 1, 2
# Refused, the refusal waiting for the durable store (a pairing request it names must
# survive a crash); frames meanwhile are ignored.
REFUSING = 3

# Sentinel: _role_error already answered (and closed); the caller sends nothing more.
_ALREADY_ANSWERED = GatewayError(ErrorCode.INVALID_REQUEST, "already answered")

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_GOING_AWAY = 1001
CLOSE_INVALID_TEXT = 1007
CLOSE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012

_encode = wire.encode_json
_connect_decoder = msgspec.json.Decoder(ConnectParams)
# Requests of one socket whose answers are still being computed (async handlers, e.g. a
# node invoke): more are refused until some finish, so one client cannot pile up tasks.
MAX_INFLIGHT_PER_SOCKET = 64


class Sink(Protocol):
    """What the state machine needs from a transport."""

    def send(self, data: bytes) -> None: ...
    def close(self, code: int, reason: str) -> None: ...
    def buffered(self) -> int: ...
    def defer(self, awaitable, done: Callable[[Any, BaseException | None], None]) -> None:
        """Run `awaitable` (tracked by the transport), then call `done(result, exc)`."""
    def cancel_deferred(self) -> None:
        """Cancel what `defer` still runs for this socket (it is closing)."""


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class Connection:
    # Slots: tens of thousands of these live at once, so no per-instance dict.
    __slots__ = ("hub", "browser", "sink", "peer_ip", "is_local", "conn_id", "state", "nonce",
                 "challenge_ts", "role", "scopes", "scope_mask", "client", "device", "protocol",
                 "sub", "presence_key", "connected_at", "unauthorized_calls", "_current_id",
                 "deadline", "auth_method", "held", "call", "inflight", "__weakref__")

    def __init__(self, hub, sink: Sink, *, peer_ip: str, is_local: bool,
                 browser: tuple[str, str] | None = None) -> None:
        self.hub = hub
        self.browser = browser  # (Origin, Host) of the upgrade request, when it had an Origin
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
        self.device = None  # DeviceAuth, when the client sent a device identity
        self.protocol = 0
        self.sub: _fanout.Subscriber | None = None
        self.presence_key: str | None = None
        self.connected_at = 0
        self.unauthorized_calls = 0
        self._current_id = ""
        self.auth_method = ""
        self.held: dict[str, tuple[bytes, bytes]] | None = None  # event -> newest frame parts
        self.call: Call | None = None
        self.inflight = 0
        # Handshake deadlines are swept by the directory (one timer for all sockets).
        self.deadline = hub.monotonic() + hub.config.handshake_timeout_ms / 1000
        hub.directory.add(self)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Send the pre-connect challenge."""
        self.nonce = os.urandom(16).hex()
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
        hub.directory.remove(self, was_open)
        if self.inflight:
            self.sink.cancel_deferred()  # nobody is left to answer
        if not was_open:
            return
        hub.client_log.disconnected(self)
        hub.bus.detach(self.conn_id)
        if self.held is not None:
            self.held = None
            hub.bus.holding.discard(self)
        if self.role == ROLE_NODE and self.device is not None:
            hub.nodes.node_disconnected(self)
        # The row stays (reason "disconnect") until it expires, as on the reference; a device
        # with another socket still open stays connected.
        if self.presence_key is not None and hub.presence.leave(self.presence_key, hub.clock_ms()):
            hub.presence_changed()

    def handshake_timed_out(self) -> None:
        if self.state == HANDSHAKE:
            self.close(CLOSE_NORMAL, "")  # as the reference: a plain close, no reason

    # -- inbound ------------------------------------------------------------------------------
    def receive(self, data: bytes, *, binary: bool = False) -> None:
        """One complete (reassembled) WebSocket data message. Text that is not UTF-8
        closes 1007 before it is parsed (binary frames carry UTF-8 JSON too)."""
        if not _is_utf8(data):
            self.close(CLOSE_INVALID_TEXT, "invalid UTF-8")
            return
        self.receive_text(data, binary)

    def receive_text(self, data: bytes, binary: bool = False) -> None:
        """`receive` for a message the transport already checked is UTF-8."""
        if self.state == HANDSHAKE:
            self._receive_handshake(data, binary)
        elif self.state == OPEN:
            self._receive_open(data, binary)

    def _receive_handshake(self, data: bytes, binary: bool) -> None:
        if len(data) > self.hub.config.preauth_max_payload:
            self.close(CLOSE_TOO_BIG, "pre-connect frame too large")
            return
        try:
            frame = wire.decode_frame(data)
        except FRAME_ERRORS as exc:
            answer = _unparsed_answer(data, exc, any_type=False)
            if answer is None:
                # Not JSON at all: the reference does a plain close with no reason.
                self.close(CLOSE_NORMAL, "")
                return
            req_id, err = answer
            if req_id is not None:
                self.sink.send(wire.response_error(req_id, _error_body(err)))
            self.close(CLOSE_POLICY, "invalid request frame")
            return
        if type(frame) is not RequestFrame:
            self.close(CLOSE_POLICY, "invalid request frame")
            return
        if frame.method != "connect":
            err = invalid_request("invalid handshake: first request must be connect")
            self.sink.send(wire.response_error(frame.id, _error_body(err)))
            self.close(CLOSE_POLICY, "invalid handshake: first request must be connect")
            return
        try:
            hello = self._connect(frame)
        except GatewayError as err:
            self.hub.client_log.refused(self, frame, err)
            barrier = self.hub.write_barrier()
            if barrier is None:
                return self._refuse(frame.id, err)
            self.state = REFUSING
            self.sink.defer(barrier, lambda _v, _exc, req_id=frame.id, err=err:
                            self._refuse(req_id, err))
            return
        except Exception as exc:  # a bug, not the client's input: one rate-limited line, 1011
            self.sink.send(wire.response_error(frame.id, _internal_error(self, exc)))
            self.close(1011, "internal error")
            return
        self.sink.send(wire.response_ok(frame.id, hello))
        self._after_open()
        self.hub.client_log.connected(self)

    def _refuse(self, req_id: str, err: GatewayError) -> None:
        if self.state == CLOSED:
            return
        self.sink.send(wire.response_error(req_id, _error_body(err)))
        self.close(err.close_code or CLOSE_POLICY, _close_reason(err.close_reason or err.message))

    def _receive_open(self, data: bytes, binary: bool) -> None:
        # Binary frames are read as UTF-8 JSON text, as the reference does. (The compiled
        # socket listener calls the dispatcher the same way, without this frame.)
        try:
            self.hub.dispatcher.receive(self.call, data)
        except Exception as exc:
            self.frame_failed(data, exc)

    def frame_failed(self, data: bytes, exc: Exception) -> None:
        """Serving a frame raised `exc`. A decode error (FRAME_ERRORS) is the client's: an
        authenticated socket gets an answer (under "invalid" when there is no usable id) and
        stays open, text that is not JSON has nothing to answer and is dropped, as on the
        reference; before `connect` the socket closes 1008. Anything else is a bug: one
        rate-limited log line (no traceback), UNAVAILABLE when open, else a 1011 close."""
        if self.state == CLOSED:
            return
        if isinstance(exc, UnicodeDecodeError) or not _is_utf8(data):
            self.close(CLOSE_INVALID_TEXT, "invalid UTF-8")
            return
        if not isinstance(exc, FRAME_ERRORS):
            if isinstance(exc, GatewayError):
                body = _error_body(exc)
            else:
                body = _internal_error(self, exc)
            if self.state == OPEN:
                req_id = _salvage_request_id(data, any_type=True)
                self.sink.send(wire.response_error(req_id or "invalid", body))
            else:
                self.close(1011, "internal error")
            return
        if self.state != OPEN:
            self.close(CLOSE_POLICY, "invalid request frame")
            return
        answer = _unparsed_answer(data, exc, any_type=True)
        if answer is not None:
            req_id, err = answer
            self.sink.send(wire.response_error(req_id or "invalid", _error_body(err)))


    # -- handshake ----------------------------------------------------------------------------
    def _connect(self, frame: RequestFrame) -> bytes:
        """Check a connect request; returns the encoded hello-ok, or raises GatewayError."""
        hub = self.hub
        raw = frame.params if frame.params is not msgspec.UNSET else b"null"
        try:
            params = _connect_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise invalid_request(validation_message("connect params", exc, "$.params"),
                                  close_code=CLOSE_POLICY) from None
        role = params.role if params.role is not msgspec.UNSET else ROLE_OPERATOR
        low, high = accepted_range(role, params.client.mode)
        if params.max_protocol < low or params.min_protocol > high or params.min_protocol > params.max_protocol:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST, "protocol mismatch",
                details={"code": DetailCode.PROTOCOL_MISMATCH.value,
                         "clientMinProtocol": params.min_protocol,
                         "clientMaxProtocol": params.max_protocol,
                         "expectedProtocol": high, "minimumProbeProtocol": MIN_NODE_PROTOCOL},
                close_code=CLOSE_PROTOCOL_ERROR)
        if role not in ROLES:
            raise invalid_request("invalid role", close_code=CLOSE_POLICY)
        # Any socket a browser opened (it sent an Origin) is checked, whatever client id it
        # claims, as the reference does: else any page could open the loopback gateway as
        # `cli` and get its operator scopes. Control UI and WebChat clients always are.
        refusal = hub.admission.origin_refusal(self.browser, self.is_local) \
            if self.browser is not None or is_control_ui(params.client) else None
        if refusal is not None:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST,
                "origin not allowed (open the Control UI from the gateway host or allow it in "
                "gateway.controlUi.allowedOrigins)",
                details={"code": DetailCode.CONTROL_UI_ORIGIN_NOT_ALLOWED.value,
                         "reason": refusal},
                close_code=CLOSE_POLICY)
        if role == ROLE_NODE and params.device is msgspec.UNSET:
            raise GatewayError(ErrorCode.INVALID_REQUEST, "node connections need a device identity",
                               details={"code": DetailCode.DEVICE_IDENTITY_REQUIRED.value},
                               close_code=CLOSE_POLICY)
        auth = params.auth if params.auth is not msgspec.UNSET else None
        requested = params.scopes if params.scopes is not msgspec.UNSET else []
        if params.device is msgspec.UNSET:
            self.auth_method = self._shared_secret(params, auth)
            # Without a device identity only the local control tools (the CLI, backends) keep
            # the operator scopes they ask for; any other client is admitted with none, as on
            # the reference (it must pair a device to be granted scopes).
            keeps_scopes = (role == ROLE_OPERATOR and self.is_local
                            and (params.client.id, params.client.mode) in SCOPE_KEEPING_CLIENTS)
            granted = _known_scopes(requested) if keeps_scopes else []
            token = issued_at = None
        else:
            admission = self._admit_device(params, auth, role, _known_scopes(requested)
                                           if role == ROLE_OPERATOR else [])
            self.auth_method = admission.method
            granted, token, issued_at = admission.scopes, admission.device_token, admission.issued_at_ms
        self.role = role
        self.scopes = _intern_scopes(granted)
        self.scope_mask = _mask_of(self.scopes)
        self.client = params.client
        self.device = params.device if params.device is not msgspec.UNSET else None
        self.nonce = ""  # single use
        self.protocol = min(params.max_protocol, high)
        self.connected_at = hub.clock_ms()
        self._enter_open()
        if role == ROLE_NODE:
            hub.nodes.node_connected(self, params)
        can_read = role == ROLE_OPERATOR and bool(self.scope_mask & READ_BIT)
        return hub.hello.encode(self.conn_id, self.protocol, role, granted, can_read, token, issued_at)

    def _shared_secret(self, params, auth) -> str:
        hub = self.hub
        if auth is not None and auth.device_token and not auth.token and not auth.password:
            # A device token means nothing without the device proving who it is.
            raise GatewayError(ErrorCode.NOT_PAIRED, "device identity required",
                               details={"code": DetailCode.DEVICE_IDENTITY_REQUIRED.value},
                               close_code=CLOSE_POLICY)
        if hub.config.auth_mode != "none" and (
                auth is None or not (auth.token or auth.password or auth.device_token)):
            # No credential and no device: the reference asks for a device identity here
            # (its clients show their pairing screen on NOT_PAIRED), not for the secret.
            raise GatewayError(ErrorCode.NOT_PAIRED, "device identity required",
                               details={"code": DetailCode.DEVICE_IDENTITY_REQUIRED.value},
                               close_code=CLOSE_POLICY)
        return hub.admission.shared_secret(auth, self.peer_ip, self.is_local, params.client.id)

    def _admit_device(self, params, auth, role: str, requested: list[str]):
        """Prove the device key, then admit it by shared secret or by its device token."""
        hub = self.hub
        device_token = (auth.device_token or None) if auth is not None else None
        shared = (auth.token or auth.password or None) if auth is not None else None
        signed_token = (auth.token or auth.device_token or auth.bootstrap_token or "") \
            if auth is not None else ""
        # The signature covers the scopes exactly as sent (duplicates, unknown ones and
        # all), as the reference verifies them; what is granted is filtered afterwards.
        sent_scopes = list(params.scopes) if params.scopes is not msgspec.UNSET else []
        hub.admission.verify_device(params, params.device, role=role, scopes=sent_scopes,
                                    token=signed_token, nonce=self.nonce, now_ms=hub.clock_ms())
        pairing = hub.pairing
        # GatewayClient sends a device token as both `token` and `deviceToken`: that is a
        # device-token connect, not a wrong shared secret (which would count as a failure).
        if device_token and shared in (None, device_token):
            return pairing.admit_device_token(self, params, role, requested, device_token)
        try:
            method = hub.admission.shared_secret(auth, self.peer_ip, self.is_local,
                                                 params.client.id)
        except GatewayError:
            if device_token:
                return pairing.admit_device_token(self, params, role, requested, device_token)
            raise
        return pairing.admit_shared(self, params, role, requested, method)

    def _enter_open(self) -> None:
        hub = self.hub
        self.state = OPEN
        hub.directory.opened(self)
        self.call = Call(self, self.role, self.scopes, self.scope_mask, self.principal(),
                         hub.services)
        self.sub = _fanout.Subscriber(self.sink, self, self.scope_mask)
        hub.bus.attach(self.conn_id, self.sub)
        entry = self._presence_entry()
        if entry is not None:
            self.presence_key = key = self._presence_identity()
            hub.presence.join(key, entry)

    def _after_open(self) -> None:
        # Broadcast after hello-ok so the new client's first event follows its hello.
        if self.presence_key is not None:
            self.hub.presence_changed()

    def _presence_identity(self) -> str:
        # One row per device (a device connected twice, or as operator and node, is one
        # row); clients without a device identity get a row per connection.
        if self.device is not None:
            return f"device:{self.device.id}"
        if self.role == ROLE_NODE and self.client.instance_id is not msgspec.UNSET:
            return f"instance:{self.client.instance_id}"
        return f"conn:{self.conn_id}"

    def _presence_entry(self) -> PresenceEntry | None:
        client = self.client
        if client.mode in EPHEMERAL_MODES:
            return None  # one-shot tools and backends are not presence-worthy
        now = self.connected_at
        return PresenceEntry(
            ts=now, host=client.display_name or client.id,
            ip=msgspec.UNSET if self.is_local or not self.peer_ip else self.peer_ip,
            version=client.version, platform=client.platform, device_family=client.device_family,
            model_identifier=client.model_identifier, time_zone=client.time_zone, mode=client.mode,
            reason="connect", online_since=now, instance_id=client.instance_id, roles=[self.role],
            device_id=self.device.id if self.device is not None else msgspec.UNSET,
            scopes=sorted(self.scopes) or msgspec.UNSET)

    def hold(self, event: str, prefix: bytes, suffix: bytes) -> None:
        """Fan-out found this socket behind: keep only the newest such event for it (its
        seq is assigned when it is sent, so no gap), while responses go out at once."""
        if self.state != OPEN:
            return
        if self.held is None:
            self.held = {}
            self.hub.bus.holding.add(self)
        self.held[event] = (prefix, suffix)

    def release_held(self, limit: int) -> int:
        """Send the parked events if the socket has drained below `limit`."""
        held = self.held
        if held is None or self.sub is None or self.sink.buffered() > limit:
            return 0
        self.held = None
        self.hub.bus.holding.discard(self)
        for prefix, suffix in held.values():
            self.sink.send(self.sub.next_frame(prefix, suffix))
        return len(held)

    def slow_consumer(self) -> None:
        self.close(CLOSE_POLICY, "slow consumer")

    # -- requests: the outcomes the dispatcher hands over (see _core/dispatch.pxd) ------------
    def not_a_request(self, frame) -> None:
        err = invalid_request("invalid request frame: only req frames are accepted")
        self._send_error(getattr(frame, "id", None) or "invalid", err)

    def unknown_method(self, req_id: str, method: str) -> None:
        self._current_id = req_id
        self._send_error(req_id, self._unclassified(method))

    def denied(self, req_id: str, entry, verdict: int, needed: str) -> None:
        self._current_id = req_id
        if verdict == _dispatch.WRONG_ROLE:
            err = self._role_error()
        else:
            err = missing_scope(entry.spec.name, needed, [needed])
        self._send_error(req_id, err)

    def bad_params(self, req_id: str, entry, exc: Exception) -> None:
        name = entry.spec.name
        self._send_error(req_id, invalid_request(validation_message(f"{name} params", exc,
                                                                    "$.params")))

    def run_idempotent(self, req_id: str, entry, params) -> None:
        """A call with an idempotency key: answered from the cache when it was seen (in
        flight: once it finishes), else run and remembered."""
        key = (entry.spec.name, _digest(self.call.principal, params))
        if not self._replay(req_id, key):
            self.run(req_id, entry, params, key)

    def _unclassified(self, method: str) -> GatewayError:
        """A method this gateway does not serve (`connect` included, once open). As on the
        reference, unclassified methods need operator.admin: without it the caller learns
        only that, not whether the method exists."""
        if self.role != ROLE_OPERATOR:
            err = self._role_error()
            return err
        if not satisfies(self.scopes, self.scope_mask, ADMIN_SCOPE):
            return missing_scope(method, ADMIN_SCOPE, [ADMIN_SCOPE])
        if method == "connect":
            return invalid_request("connect is only valid as the first request")
        return invalid_request(f"unknown method: {method}")

    def principal(self) -> str:
        """Who is calling, for keys that must not be shared between callers: the device,
        else the client instance, else this socket."""
        if self.device is not None:
            return f"device:{self.device.id}:{self.role}"
        client = self.client
        instance = client.instance_id if client.instance_id is not msgspec.UNSET else None
        if instance:
            return f"instance:{client.id}:{instance}:{self.role}:{self.auth_method}"
        return f"conn:{self.conn_id}"

    def _role_error(self) -> GatewayError:
        self.unauthorized_calls += 1
        err = invalid_request(f"unauthorized role: {self.role}")
        if self.unauthorized_calls > MAX_UNAUTHORIZED_CALLS:
            # Answer this one, then hang up on a client stuck in a wrong-role loop.
            self.sink.send(wire.response_error(self._current_id, _error_body(err)))
            self.close(CLOSE_POLICY, "repeated unauthorized calls")
            return _ALREADY_ANSWERED
        return err

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

    def run(self, req_id: str, entry, params, key) -> None:
        """Run a handler and answer (now, or when its awaitable finishes)."""
        if entry.is_async and self.inflight >= MAX_INFLIGHT_PER_SOCKET:
            return self._send_error(req_id, GatewayError(
                ErrorCode.UNAVAILABLE, "too many requests in flight on this connection",
                retryable=True))
        if key is not None:
            self.hub.idempotency.begin(key)
        try:
            result = entry.handler(self.call, params)
        except GatewayError as err:
            return self._complete(req_id, key, (False, _error_body(err)))
        except Exception as exc:  # a handler bug must not take the socket down
            return self._complete(req_id, key, (False, _internal_error(self, exc)))
        if not inspect.isawaitable(result):
            if entry.durable:
                return self._after_writes(req_id, key, result)
            return self._finish(req_id, key, result)
        then = self._after_writes if entry.durable else self._finish
        self._await(req_id, key, result, lambda value: then(req_id, key, value))

    def _await(self, req_id: str, key, awaitable, then, failed=None) -> None:
        """Run `awaitable` through the sink (a tracked task, counted in flight), then
        `then(value)`; a failure answers the request: GatewayError as itself, cancellation
        (the socket closed, or shutdown) as _CANCELLED, anything else by `failed(exc)`
        (default: a logged internal error)."""
        self.inflight += 1

        def done(value, exc):
            self.inflight -= 1
            if exc is None:
                return then(value)
            if isinstance(exc, GatewayError):
                body = _error_body(exc)
            elif isinstance(exc, asyncio.CancelledError):
                body = _CANCELLED
            else:
                body = failed(exc) if failed is not None else _internal_error(self, exc)
            self._complete(req_id, key, (False, body))
        self.sink.defer(awaitable, done)

    def _after_writes(self, req_id: str, key, result) -> None:
        """Answer a durable method once its writes are on disk (at once when nothing is
        pending); a write the store could not save answers UNAVAILABLE."""
        try:
            barrier = self.hub.write_barrier()
        except Exception as exc:
            return self._complete(req_id, key, (False, _write_failed(exc)))
        if barrier is None:
            return self._finish(req_id, key, result)
        self._await(req_id, key, barrier, lambda _value: self._finish(req_id, key, result),
                    failed=_write_failed)

    def send_reply(self, req_id: str, reply: Reply, key) -> None:
        """Answer with `reply.result`, then run `reply.after` (once, after the answer); with
        `reply.final`, that answer is interim and the final one follows on the same id."""
        try:
            body = _encode(reply.result)
        except Exception as exc:
            return self._complete(req_id, key, (False, _internal_error(self, exc)))
        if reply.final is None:
            self._complete(req_id, key, (True, body))
        else:
            self._send_outcome(req_id, (True, body))
            self._await(req_id, key, reply.final,
                        lambda value: self._finish(req_id, key, value))
        if reply.after is not None:
            reply.after()

    def _finish(self, req_id: str, key, result) -> None:
        if type(result) is Reply:
            return self.send_reply(req_id, result, key)
        try:
            outcome = (True, _encode(result))
        except Exception as exc:
            outcome = (False, _internal_error(self, exc))
        self._complete(req_id, key, outcome)

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

    def internal_error(self, exc: BaseException) -> bytes:
        return _internal_error(self, exc)

    def _send_error(self, req_id: str, err: GatewayError) -> None:
        if err is _ALREADY_ANSWERED:
            return
        self.sink.send(wire.response_error(req_id, _error_body(err)))

    # -- outbound events ----------------------------------------------------------------------
    def send_event(self, event: str, payload) -> None:
        """Unicast an event to this socket, in its seq stream."""
        if self.sub is None or self.state != OPEN:
            return
        prefix = wire.event_prefix(event, None if payload is None else _encode(payload))
        self.sink.send(self.sub.next_frame(prefix, b"}"))


READ_BIT = SCOPE_BIT["operator.read"]
ADMIN_SCOPE = "operator.admin"
_CANCELLED = _encode(GatewayError(ErrorCode.UNAVAILABLE, "request cancelled: the gateway is closing "
                                  "this connection", retryable=True).to_shape())


def _error_body(err: GatewayError) -> bytes:
    """What follows `"error":` in a failed answer (wire.response_error): the error shape,
    then the payload member when the error carries one."""
    body = _encode(err.to_shape())
    if err.payload is None:
        return body
    return b"".join((body, b',"payload":', _encode(err.payload)))


def _digest(principal: str, params) -> bytes:
    """Names one call by its caller and params, idempotencyKey included (msgspec encodes a
    Struct's fields in a fixed order); fixed-size, whatever the caller sent."""
    h = hashlib.blake2b(principal.encode("utf-8", "surrogatepass"), digest_size=16)
    h.update(b"\0")
    h.update(_encode(params))
    return h.digest()


log = logging.getLogger("krabfast.connection")
# Failures caused while serving clients: one line per 10 s, the traceback only at debug.
error_log = ThrottledLog(log, 10.0)


def log_client_error(conn, exc: BaseException) -> None:
    error_log.log("request failed", logging.ERROR, "request from %s (%s) failed",
                  conn.peer_ip or "?", conn.conn_id, exc=exc)


def _write_failed(exc: BaseException) -> bytes:
    """The durable store could not save a change (logged by the store): the change holds
    in memory only, and the caller is told so."""
    log.error("a durable write failed: %s", exc)
    return _encode(GatewayError(ErrorCode.UNAVAILABLE, "the change could not be saved to the "
                                "gateway's state directory", retryable=True).to_shape())


def _internal_error(conn, exc: BaseException) -> bytes:
    """An unexpected failure while serving a request: a clean UNAVAILABLE answer and one
    (rate-limited) log line, never a traceback per client frame."""
    log_client_error(conn, exc)
    return _encode(GatewayError(ErrorCode.UNAVAILABLE, "internal error").to_shape())
EPHEMERAL_MODES = frozenset(("cli", "backend", "probe"))
SCOPE_KEEPING_CLIENTS = frozenset((("cli", "cli"), ("gateway-client", "backend")))
# Consecutive role-mismatch calls tolerated before the socket is closed.
MAX_UNAUTHORIZED_CALLS = 10

_id_decoder = msgspec.json.Decoder(dict)
# What decoding a client frame can raise: all of it is the client's fault, none is logged.
FRAME_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)
# An escaped UTF-16 surrogate, the one thing JSON.parse (the reference) accepts and msgspec
# does not (it needs them paired).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# A top-level string "id" ahead of any nested value, for frames too deep to decode.
_LEADING_ID = re.compile(rb'^\s*\{(?:[^{}\[\]"]|"(?:[^"\\]|\\.)*")*?"id"\s*:\s*"((?:[^"\\]|\\.){1,256})"')


def _unparsed_answer(data: bytes, exc: Exception, *, any_type: bool):
    """(request id or None, error) for a frame that failed to decode, or None when it is
    not JSON at all (nothing to answer)."""
    if isinstance(exc, RecursionError):
        match = _LEADING_ID.match(data[:4096])
        req_id = _json_string(match.group(1)) if match else None
        return req_id, invalid_request("invalid request frame: nested too deeply")
    if isinstance(exc, msgspec.ValidationError):
        return (_salvage_request_id(data, any_type=any_type),
                invalid_request(validation_message("request frame", exc, "$")))
    if _SURROGATE_ESCAPE.search(data):
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return None
        req_id = obj.get("id") if isinstance(obj, dict) else None
        if not (isinstance(req_id, str) and req_id and _encodable(req_id)):
            req_id = None
        return req_id, invalid_request(
            "invalid request frame: unpaired UTF-16 surrogate escape in a string")
    return None


def _json_string(body: bytes) -> str | None:
    try:
        value = json.loads(b'"' + body + b'"')
    except ValueError:
        return None
    return value if _encodable(value) else None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _salvage_request_id(data: bytes, any_type: bool = False) -> str | None:
    """The `id` of a malformed request, if one can be read, so the error can be correlated."""
    try:
        obj = _id_decoder.decode(data)
    except FRAME_ERRORS:
        return None
    req_id = obj.get("id")
    if (any_type or obj.get("type") == "req") and isinstance(req_id, str) and req_id:
        return req_id
    return None


CONTROL_UI_CLIENT_IDS = frozenset(("openclaw-control-ui", "webchat-ui", "webchat"))


def is_control_ui(client) -> bool:
    return client.id in CONTROL_UI_CLIENT_IDS or client.mode == "webchat"


_SCOPE_SETS: dict[frozenset[str], frozenset[str]] = {}


_SCOPE_MASKS: dict[frozenset[str], int] = {}


def _intern_scopes(scopes) -> frozenset[str]:
    """One shared frozenset per distinct grant: thousands of sockets hold the same few."""
    key = frozenset(scopes)
    if len(_SCOPE_SETS) > 1024:
        return key
    return _SCOPE_SETS.setdefault(key, key)


def _mask_of(scopes: frozenset[str]) -> int:
    mask = _SCOPE_MASKS.get(scopes)
    if mask is None:
        mask = scope_mask(scopes)
        if len(_SCOPE_MASKS) <= 1024:
            _SCOPE_MASKS[scopes] = mask
    return mask


def _known_scopes(requested) -> list[str]:
    """De-duplicated; unknown `operator.*` scopes dropped (they grant nothing)."""
    return [s for s in dict.fromkeys(requested)
            if not s.startswith("operator.") or s in OPERATOR_SCOPES]


def _close_reason(message: str) -> str:
    # A close reason must fit in a control frame (125 bytes incl. the 2-byte code).
    encoded = message.encode()
    if len(encoded) <= 123:
        return message
    return encoded[:120].decode("utf-8", "ignore") + "..."
