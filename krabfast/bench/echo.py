"""The echo server of `krabfast bench --vs-reference`: krabfast's transport with no gateway
behind it, so that "krabfast ÷ echo" is the cost of the protocol work alone.

The transport is krabfast's own code, reused rather than copied (`EchoServer` subclasses
`krabfast.gateway.server.GatewayServer` and runs its `start()`):

- uvloop; glibc's mmap threshold pinned and the open-files limit raised (`krabfast.sysutil`);
  picows logging at WARNING, as `krabfast gateway`;
- the gateway's server creation: the same picows protocol with the same options (auto-ping
  off, auto-pong off, frame limit `maxPayload`, 2 KiB initial read buffer, 10 s upgrade
  timeout, disconnect on exception), the same logger-like `_PicowsLog` (so picows makes no
  per-socket logger), the same `PreauthGate` in front of every socket, `backlog=4096`;
- the gateway's `_listener_for` and `attach`: krabfast's listener
  (`krabfast._core.listener.FrameListener`: UTF-8 check, reserved bits, fragments, ping
  answers), its batching sink (every frame produced while one read buffer is processed
  leaves in one write, flushed on `last_in_buffer`), the upgrade request released;
- krabfast's fan-out (`krabfast._core.fanout`: one serialization, per-socket seq spliced in)
  and frame pieces (`krabfast._core.wire`), the keepalive sweep and the gateway's own
  (empty) hub with its timers.

What it leaves out is the gateway: no auth (any `connect` is accepted), no schema
validation, no handlers, no presence table, no per-connection state or client log. Where
the gateway builds a `Connection` this builds an `EchoConn`, and the listener hands frames
to `EchoHub.receive` instead of krabfast's dispatcher. Its answers have krabfast's sizes,
taken once at start from the gateway's hub with the same settings:

- on open: `connect.challenge` (16-byte hex nonce, ts), as krabfast;
- `connect`: krabfast's own hello-ok bytes (a fresh connId each time);
- `system-presence`: the presence list (krabfast's "self" row, then the rows added by
  `system-event`, newest first, at most 200);
- `health`: krabfast's health snapshot bytes; `system.echo {text}`: `{"ok":true,"text":..}`;
- `system-event {text}`: a row `{"ts","text"}` is added and a `presence` event with the whole
  list and `stateVersion` goes to every connected socket (own seq each), then `{"ok":true}`;
- any other method: `{"ok":true}`;
- a `tick` event to every connected socket every --tick-interval-ms.

`KRABFAST_NO_EXTENSIONS=1` runs it on the pure-Python listener, sink and fan-out, as krabfast.

    python -m krabfast.bench.echo --port 18790 [--host 127.0.0.1] [--tick-interval-ms 30000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time

import msgspec

from krabfast._core import dispatch as _dispatch
from krabfast._core import fanout as _fanout
from krabfast._core import listener as _listener
from krabfast._core import wire
from krabfast.gateway import server as _server_module
from krabfast.gateway.config import GatewayConfig
from krabfast.gateway.server import GatewayServer
from krabfast.sysutil import pin_mmap_threshold, raise_fd_limit

CONNECTING, OPEN, CLOSED = 0, 1, 2  # OPEN == krabfast.connection.OPEN (the gate reads it)
SCOPES = ["operator.read", "operator.admin"]
MAX_ROWS = 200
_OK = b'{"ok":true}'
_encode = msgspec.json.Encoder().encode


class _Request(msgspec.Struct):
    id: msgspec.Raw
    method: str
    params: msgspec.Raw = msgspec.Raw(b"null")


class _Text(msgspec.Struct):
    text: str = ""


_decode_request = msgspec.json.Decoder(_Request).decode
_decode_text = msgspec.json.Decoder(_Text).decode


class Answers:
    """krabfast's answer bytes, taken once from a krabfast hub with the same settings."""

    def __init__(self, hub) -> None:
        from krabfast.gateway.loopmon import LoopMonitor

        hub.refresh_health(LoopMonitor(None).snapshot())  # as GatewayServer.start() does
        marker = "\x01echo-conn-id\x01"
        hello = hub.hello.encode(marker, 4, "operator", SCOPES, True)
        self.hello_head, self.hello_tail = hello.split(_encode(marker), 1)
        rows = bytes(hub.presence_json())
        self.self_row = rows[1:-1]  # "[{...}]" -> "{...}"
        self.health = bytes(_encode(hub.health_snapshot()))
        self.instance = os.urandom(8).hex()

    def hello(self, n: int) -> bytes:
        return b"%b\"%b-%d\"%b" % (self.hello_head, self.instance.encode(), n, self.hello_tail)


class EchoConn:
    """What krabfast's FrameListener needs of a connection (`state`, `receive_text`,
    `close`, `transport_closed`, `frame_failed`, `call` once open) and what fan-out needs of
    a subscriber's owner (`hold`, `slow_consumer`)."""

    __slots__ = ("hub", "sink", "state", "sub", "call", "conn_id", "client", "device",
                 "auth_method", "is_local", "peer_ip")

    def __init__(self, hub: "EchoHub", sink, peer_ip: str = "", is_local: bool = False) -> None:
        self.hub = hub
        self.sink = sink
        self.state = CONNECTING
        self.sub = None
        # What the listener hands the dispatcher once open (a krabfast Call: it is typed).
        self.call = None
        hub.serial += 1
        self.conn_id = str(hub.serial)
        self.client = self.device = None
        self.auth_method = ""
        self.is_local = is_local
        self.peer_ip = peer_ip

    def start(self) -> None:
        challenge = b'{"nonce":"%b","ts":%d}' % (os.urandom(16).hex().encode(), _now_ms())
        self.sink.send(wire.event_unsequenced("connect.challenge", challenge))

    def receive_text(self, data: bytes, binary: bool) -> None:
        """Before `connect`: the connect request (any), answered with a hello-ok."""
        try:
            req = _decode_request(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.close(1008, "invalid handshake")
            return
        if req.method != "connect":
            self.close(1008, "invalid handshake: first request must be connect")
            return
        self.state = OPEN
        hub = self.hub
        hub.connected += 1
        self.sub = sub = _fanout.Subscriber(self.sink, self)
        hub.subscribers[self] = sub
        self.call = _dispatch.Call(self, "operator", frozenset(SCOPES), 0, self.conn_id, None)
        hub.by_id[self.conn_id] = self
        self.sink.send(b'{"type":"res","id":%b,"ok":true,"payload":%b}'
                       % (req.id, hub.answers.hello(hub.connected)))

    def close(self, code: int, reason: str) -> None:
        if self.state == CLOSED:
            return
        self.sink.close(code, reason)
        self.transport_closed()

    def transport_closed(self) -> None:
        self.state = CLOSED
        self.hub.subscribers.pop(self, None)
        self.hub.by_id.pop(self.conn_id, None)

    def frame_failed(self, data: bytes, exc: BaseException) -> None:
        self.close(1008, "invalid frame")

    def hold(self, key, prefix: bytes, suffix: bytes) -> None:  # a droppable event skipped
        pass

    def slow_consumer(self) -> None:
        self.close(1008, "slow consumer")


class EchoHub:
    """The `hub` FrameListener talks to; it is also its `dispatcher` (`receive(conn, data)`)."""

    def __init__(self, config: GatewayConfig, answers: Answers) -> None:
        self.config = config
        self.answers = answers
        self.dispatcher = self
        self.closing = False
        self.subscribers: dict[EchoConn, object] = {}
        self.by_id: dict[str, EchoConn] = {}  # open connections by conn id
        self.serial = 0
        self.connected = 0
        self.rows: dict[str, bytes] = {}  # system-event rows by text, oldest first
        self.presence_version = 1
        self.health_version = 1
        self.fixed = {"health": answers.health}

    def receive(self, call, data: bytes):
        conn = self.by_id[call.conn_id]
        req = _decode_request(data)  # errors go to conn.frame_failed (FrameListener)
        method = req.method
        if method == "system-presence":
            payload = self.presence_list()
        elif method == "system-event":
            payload = self.system_event(_decode_text(req.params).text)
        elif method == "system.echo":
            payload = b'{"ok":true,"text":%b}' % _encode(_decode_text(req.params).text)
        else:
            payload = self.fixed.get(method, _OK)
        conn.sink.send(b'{"type":"res","id":%b,"ok":true,"payload":%b}' % (req.id, payload))
        return None

    def presence_list(self) -> bytes:
        rows = [self.answers.self_row, *reversed(self.rows.values())]
        return b"[" + b",".join(rows) + b"]"

    def system_event(self, text: str) -> bytes:
        rows = self.rows
        rows.pop(text, None)
        rows[text] = b'{"ts":%d,"text":%b}' % (_now_ms(), _encode(text))
        while len(rows) >= MAX_ROWS:  # the self row counts too
            del rows[next(iter(rows))]
        self.presence_version += 1
        payload = b'{"presence":%b}' % self.presence_list()
        self.broadcast("presence", payload, (self.presence_version, self.health_version), True)
        return _OK

    def broadcast(self, event: str, payload: bytes, state_version=None,
                  droppable: bool = False) -> int:
        cfg = self.config
        return _fanout.fanout(wire.event_prefix(event, payload), wire.event_suffix(state_version),
                              list(self.subscribers.values()), 0, droppable,
                              cfg.drop_if_slow_bytes, cfg.max_buffered_bytes,
                              event if droppable else None)

    def tick(self) -> int:
        return self.broadcast("tick", b'{"ts":%d}' % _now_ms(), None, True)


def _now_ms() -> int:
    return int(time.time() * 1000)


class EchoServer(GatewayServer):
    """krabfast's GatewayServer, unchanged but for what sits behind the listener: its own
    start() (server creation, pre-connect gate, picows options, timers, keepalive), its
    `_listener_for` and `attach` run as in the gateway; the listener is then pointed at the
    EchoHub (its `hub` is a public field) and `attach` builds an EchoConn where the gateway
    builds a Connection. The real hub stays in place, empty: it answers the upgrade-time
    checks (shutting down? pre-connect sockets of this address?) as in the gateway, its
    timers run over no sockets, and the echo's answers are taken from it."""

    def __init__(self, config: GatewayConfig) -> None:
        super().__init__(config)
        self.echo = EchoHub(config, Answers(self.hub))
        # GatewayServer.attach builds each connection with the module's `Connection`: in this
        # process (the echo server, nothing else) that name makes an EchoConn instead, so all
        # of attach (sink, upgrade release, peer checks, challenge) is the gateway's own code.
        _server_module.Connection = self._connection

    def _listener_for(self, *args, **kwargs):
        listener = super()._listener_for(*args, **kwargs)
        if isinstance(listener, _listener.FrameListener):
            listener.hub = self.echo  # frames go to EchoHub.receive / EchoConn
        return listener

    def _connection(self, hub, sink, peer_ip: str = "", is_local: bool = False,
                    **_kw) -> EchoConn:
        return EchoConn(self.echo, sink, peer_ip, is_local)

    async def start(self) -> None:
        await super().start()
        cfg = self.config
        self._timers.append(asyncio.ensure_future(self._every(cfg.tick_interval_ms / 1000,
                                                              self.echo.tick)))
        print(f"echo server listening on ws://{cfg.bind}:{self.port}", flush=True)


def config_for(host: str, port: int, tick_interval_ms: int) -> GatewayConfig:
    """The settings `krabfast bench` starts krabfast with (token auth, no state on disk)."""
    return GatewayConfig(bind=host, port=port, auth_mode="token", token="echo",
                         tick_interval_ms=tick_interval_ms, state_dir=":memory:")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18790)
    p.add_argument("--tick-interval-ms", type=int, default=30_000)
    args = p.parse_args(argv)
    import uvloop

    # As krabfast.gateway.server.run() and the `krabfast gateway` command.
    logging.basicConfig(level=logging.WARNING)
    pin_mmap_threshold()
    raise_fd_limit()
    logging.getLogger("picows").setLevel(logging.WARNING)
    config = config_for(args.host, args.port, args.tick_interval_ms)
    server = EchoServer(config)
    try:
        uvloop.run(server.serve_forever())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
