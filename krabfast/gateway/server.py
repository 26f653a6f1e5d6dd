"""Thin picows/uvloop adapter: sockets in, Sans-I/O `Connection`s and the `Gateway` hub.

Everything protocol-related lives in `krabfast.connection` and `krabfast.gateway.hub`;
this module only moves bytes, runs timers (handshake timeout, tick, health, keepalive)
and turns an over-limit upgrade into HTTP 503.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

from picows import (WSAutoPingStrategy, WSCloseCode, WSUpgradeRequest, WSUpgradeResponse,
                    WSUpgradeResponseWithListener)

from krabfast._core import gate as _gate
from krabfast._core import listener as _listener
from krabfast._core import sink as _sink_impl
from krabfast.connection import CLOSE_SERVICE_RESTART, OPEN, Connection
from krabfast.gateway.config import GatewayConfig, is_loopback
from krabfast.gateway.hub import Hub
from krabfast.gateway import picows_adapter
from krabfast.gateway import tls as _tls
from krabfast.gateway.loopmon import LoopMonitor
from krabfast.gateway.proxies import REFUSAL_BODY as _PROXY_REFUSAL
from krabfast.gateway.web_side import WebSide
from krabfast.logutil import ThrottledLog
from krabfast.sysutil import pin_mmap_threshold, raise_fd_limit

log = logging.getLogger("krabfast.gateway")


class _Sink(_sink_impl.WireSink):
    """The `Sink` a Connection writes to: the compiled batching writer plus the two
    operations that need the event loop."""

    __slots__ = ("tasks",)

    def __init__(self, transport) -> None:
        super().__init__(transport)
        self.tasks: set[asyncio.Task] | None = None  # this socket's running request tasks

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.mark_closed()  # flushes what was queued before the close
        self.transport.send_close(WSCloseCode(code), reason.encode())
        # Give the peer a moment to read the close frame, then drop the socket.
        loop = asyncio.get_running_loop()
        loop.call_later(_CLOSE_GRACE_S, _drop_socket, self.transport,
                        self.transport.underlying_transport.get_write_buffer_size(),
                        loop.time() + _CLOSE_DRAIN_MAX_S)

    def defer(self, awaitable, done) -> None:
        """Run a request's awaitable as a task tracked by this socket (cancelled when it
        closes: see cancel_deferred) and by the server (cancelled at shutdown)."""
        task = asyncio.ensure_future(awaitable)
        tasks = self.tasks
        if tasks is None:
            tasks = self.tasks = set()
        tasks.add(task)
        _ALL_TASKS.add(task)

        def finished(t: asyncio.Task) -> None:
            tasks.discard(t)
            _ALL_TASKS.discard(t)
            if t.cancelled():
                done(None, asyncio.CancelledError())
            elif t.exception() is not None:
                done(None, t.exception())
            else:
                done(t.result(), None)

        task.add_done_callback(finished)

    def cancel_deferred(self) -> None:
        tasks, self.tasks = self.tasks, None
        for task in tasks or ():
            task.cancel()


class _PicowsLog:
    """Logger-like wrapper handed to picows. picows gives every accepted socket a child
    `logging.Logger` of its own when passed a real Logger (a CPU and memory cost per
    socket); with a logger-like object it just logs through it.

    picows' warnings and errors are about what a peer sent (a protocol violation, a frame
    over the limit, an exception it caught): each kind of line is rate limited to one per
    `interval` seconds with a count of the ones suppressed, and `exception` lines carry the
    traceback only at debug level, so no client can flood the log."""

    __slots__ = ("_log", "info", "debug", "log", "isEnabledFor", "_throttle")

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock=time.monotonic) -> None:
        self._log = logger
        for name in ("info", "debug", "log", "isEnabledFor"):
            setattr(self, name, getattr(logger, name))
        self._throttle = ThrottledLog(logger, interval, clock)  # keyed by format string

    def warning(self, msg, *args, **_kw) -> None:
        self._throttle.log(str(msg), logging.WARNING, str(msg), *args)

    def error(self, msg, *args, **_kw) -> None:
        self._throttle.log(str(msg), logging.ERROR, str(msg), *args)

    def exception(self, msg, *args, **_kw) -> None:
        self._throttle.log(str(msg), logging.ERROR, str(msg), *args, exc=sys.exc_info()[1])


# Every request task of every socket (a module-level set: a task must be referenced while it
# runs, and shutdown cancels what is left).
_ALL_TASKS: set[asyncio.Task] = set()

_CLOSE_GRACE_S = 0.5      # a closed socket's peer gets this long to read, per look
_CLOSE_DRAIN_MAX_S = 5.0  # and this long in all while it keeps reading its backlog


def _drop_socket(transport, queued: int = 0, deadline: float = 0.0) -> None:
    """End a closed connection. A peer that never drained its backlog (a slow consumer)
    would keep a graceful close waiting, and the backlog in memory, forever: abort it.
    One still reading it (its write buffer shrank since the last look, `queued` bytes)
    gets more time, up to `deadline`: the close frame is queued behind that backlog."""
    if not transport.is_disconnected:
        left = transport.underlying_transport.get_write_buffer_size()
        loop = asyncio.get_running_loop()
        if 0 < left < queued and loop.time() < deadline:
            loop.call_later(_CLOSE_GRACE_S, _drop_socket, transport, left, deadline)
            return
        transport.disconnect(graceful=left == 0)


class GatewayServer:
    # Read by the compiled listener after each upgrade (see picows_adapter, 3.).
    shrink_write_buffer = False

    def __init__(self, config: GatewayConfig, hub: Gateway | None = None) -> None:
        self.config = config
        self.hub = hub or Hub(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.AbstractServer | None = None
        self.listeners: set = set()
        self.monitor: LoopMonitor | None = None
        self._timers: list[asyncio.Task] = []
        self._stopped: asyncio.Event | None = None
        self.port = config.port
        self._stopping = False
        self._started = False
        self.gated = False  # the pre-connect gate is in front of picows (picows_adapter, 1.)
        self.tls: _tls.ServerTls | None = None  # set by start when config.tls_enabled
        self.web = WebSide(self)  # plain HTTP on the same port, through the gate

    def readiness(self) -> str:
        """What /readyz reports: "starting", "ready" or "draining"."""
        if self._stopping or self.hub.closing:
            return "draining"
        return "ready" if self._started else "starting"

    # -- upgrade -------------------------------------------------------------------------------
    def _listener_for(self, request: WSUpgradeRequest):
        hub = self.hub
        if hub.closing:
            return _reject(503, b"gateway is shutting down")
        gate = _gate.parsing()  # None without the gate: the peer is learnt in `attach`
        peer_ip = None
        if gate is not None and gate.transport is not None:
            peer_ip = _peer_ip(gate.transport)
            if self._too_many_preauth(peer_ip):
                return _reject(503, _TOO_MANY_PREAUTH)
        is_local = peer_ip is not None and is_loopback(peer_ip)
        if peer_ip is not None and gate.forwarded:
            # Through a reverse proxy: the client is whom a trusted proxy names, and never
            # local (krabfast/gateway/proxies.py).
            web = self.web
            got = web.attribute(peer_ip, {k.lower(): v for k, v in request.headers.items()}, "")
            if not isinstance(got, tuple):
                return _reject(403, _PROXY_REFUSAL)
            peer_ip, is_local = got
        origin = request.headers.get("Origin")
        browser = (origin, request.headers.get("Host", "")) if origin else None
        cfg = hub.config
        # Tracked in `listeners` from `attach` on: picows asks for the listener before it
        # validates the upgrade, and never reports a socket whose upgrade then failed.
        listener = _listener.FrameListener(self, hub, peer_ip, is_local, browser,
                                           cfg.preauth_max_payload, cfg.max_payload)
        if gate is not None:
            gate.listener = listener
        return listener

    def _too_many_preauth(self, peer_ip: str) -> bool:
        hub = self.hub
        return hub.directory.preauth_count(peer_ip) >= hub.config.max_preauth_per_ip

    def attach(self, listener, transport) -> None:
        """The upgrade completed: give the socket its sink and connection, send the challenge."""
        self.listeners.add(listener)
        picows_adapter.release_upgrade(transport)
        listener.sink = sink = _Sink(transport)
        if listener.peer_ip is None:  # not gated (picows_adapter, 1.): checked after the 101
            listener.peer_ip = peer_ip = _peer_ip(transport.underlying_transport)
            listener.is_local = is_loopback(peer_ip)
            if self._too_many_preauth(peer_ip):
                sink.close(1013, _TOO_MANY_PREAUTH.decode())
                return
        listener.conn = conn = Connection(self.hub, sink, peer_ip=listener.peer_ip,
                                          is_local=listener.is_local, browser=listener.browser)
        conn.start()

    def forget(self, listener) -> None:
        self.listeners.discard(listener)

    def _picows_options(self) -> dict:
        """ws_create_server's options, by name (picows_adapter.create_server uses them)."""
        cfg = self.config
        return {
            "disconnect_on_exception": True,
            # Until the first request's head is in (WebSocket upgrade or plain HTTP: the
            # gate cannot tell before), a slow sender is bounded by picows' timer.
            "websocket_handshake_timeout": cfg.http_header_timeout_ms / 1000,
            "logger_name": _PicowsLog(logging.getLogger("picows.krabfast")),
            # picows' own auto-ping would run one task per socket; `_keepalive` sweeps
            # all sockets from one timer instead.
            "enable_auto_ping": False,
            "auto_ping_idle_timeout": cfg.ping_interval_s,
            "auto_ping_reply_timeout": cfg.ping_timeout_s,
            "auto_ping_strategy": WSAutoPingStrategy.PING_WHEN_IDLE,
            # Pings are answered by our listener (auto-pong off): see listener.pxd.
            "enable_auto_pong": False,
            "max_frame_size": cfg.max_payload,
            "read_buffer_init_size": 2048,  # picows' minimum; it grows with the frames
        }

    # -- run -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        built = _listener.built_transport_size()  # 0: the plain-Python listener
        self.shrink_write_buffer = picows_adapter.check_write_buffer(built != 0, built)
        preauth_limit = self.config.preauth_max_payload
        tls_kw = {}
        if self.config.tls_enabled:  # TlsError (one line) when it cannot be set up
            self.tls = _tls.load_server_tls(self.config)
            # The gate and picows sit above the TLS layer, unchanged. A peer gets as long
            # for the TLS handshake as picows gives it for the upgrade.
            tls_kw = {"ssl": self.tls.context, "ssl_handshake_timeout": 10.0}
        self.web.tls = self.tls is not None  # what HTTP requests report (Request.tls)
        http = self.web.protocol
        self.server, self.gated = await picows_adapter.create_server(
            self._listener_for, self.config.bind, self.config.port,
            gate_factory=lambda inner: _gate.PreauthGate(inner, preauth_limit, http),
            options=self._picows_options(), reuse_address=True, backlog=4096, **tls_kw)
        self.port = self.server.sockets[0].getsockname()[1]
        self.monitor = LoopMonitor(self.loop)
        self.monitor.start()
        self.hub.refresh_health(self.monitor.snapshot())
        self._timers = [
            asyncio.ensure_future(self._every(self.config.tick_interval_ms / 1000, self.hub.tick)),
            asyncio.ensure_future(self._every(self.config.health_interval_ms / 1000, self._health)),
            asyncio.ensure_future(self._every(30.0, self.hub.maintain)),
            asyncio.ensure_future(self._every(10.0, self.hub.client_log.flush)),
            # Coalesced events parked for sockets that were behind (no-op when none are).
            asyncio.ensure_future(self._every(0.1, self.hub.flush_held)),
            asyncio.ensure_future(self._every(self.config.ping_interval_s, self._keepalive)),
            asyncio.ensure_future(self._every(
                min(1.0, self.config.handshake_timeout_ms / 4000), self.hub.expire_handshakes)),
        ]
        self._started = True  # /readyz: ready
        if self.tls is not None:  # the pin clients need (the reference logs none)
            log.info("gateway tls: certificate %s, fingerprint %s", self.tls.cert_path,
                     self.tls.fingerprint)
        log.info("krabfast gateway listening on %s://%s:%d (auth %s)",
                 "wss" if self.tls is not None else "ws", self.config.bind, self.port,
                 self.config.auth_mode)

    async def _every(self, seconds: float, fn) -> None:
        next_at = time.monotonic() + seconds
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += seconds
            try:
                fn()
            except Exception:  # a timer must not die with one bad callback
                log.exception("timer callback failed")

    def _keepalive(self) -> None:
        """Ping every socket once per interval; drop one that sent nothing (not even the
        pong) since the previous round. Pre-connect sockets have the handshake deadline."""
        for listener in list(self.listeners):
            sink = listener.sink
            if sink is None or listener.conn is None or listener.conn.state != OPEN:
                continue
            if listener.pinged and not listener.alive:
                log.info("dropping unresponsive peer %s", listener.peer_ip)
                sink.transport.disconnect(graceful=False)
                continue
            listener.alive = False
            listener.pinged = True
            sink.transport.send_ping()

    def _health(self) -> None:
        self.hub.refresh_health(self.monitor.snapshot() if self.monitor else None)

    async def stop(self, reason: str = "gateway stopping") -> None:
        """Tell every client, close every socket cleanly, stop listening."""
        hub = self.hub
        if hub.closing or self._stopping:
            return
        self._stopping = True
        try:
            # Runs end first, so their watchers get `aborted` before `shutdown`.
            await hub.close_conversations()
        except Exception:
            log.exception("stopping the runs failed")
        hub.shutdown(reason)
        for task in self._timers:
            task.cancel()
        if self.monitor:
            self.monitor.stop()
        if self.server is not None:
            self.server.close()
        self.web.close_all()
        for conn in hub.directory.all():
            conn.close(CLOSE_SERVICE_RESTART, "service restart")
        for task in list(_ALL_TASKS):  # closing cancelled each socket's; anything left goes
            task.cancel()
        deadline = time.monotonic() + 2.0
        while self.listeners and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for listener in list(self.listeners):
            if listener.sink is not None:
                listener.sink.transport.disconnect(graceful=False)
        try:
            await hub.close_database()  # every queued durable write reaches the disk
        except Exception:
            log.exception("closing the state database failed")
        if self._stopped is not None:
            self._stopped.set()

    async def serve_forever(self) -> None:
        await self.start()
        loop = self.loop
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, lambda s=sig: asyncio.ensure_future(
                    self.stop(f"gateway stopping ({signal.Signals(s).name})")))
            except (NotImplementedError, RuntimeError):
                pass
        await self._stopped.wait()
        log.info("krabfast gateway stopped")


_TOO_MANY_PREAUTH = b"too many unauthenticated connections from this address"


def _peer_ip(transport) -> str:
    peer = transport.get_extra_info("peername") or ("", 0)
    return str(peer[0])


def _reject(status: int, body: bytes) -> WSUpgradeResponseWithListener:
    response = WSUpgradeResponse.create_error_response(status, body)
    return WSUpgradeResponseWithListener(response, None)


def run(config: GatewayConfig) -> None:
    import uvloop

    pin_mmap_threshold()
    raise_fd_limit()
    # picows logs every accepted socket at INFO; that is noise at thousands of clients.
    logging.getLogger("picows").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    uvloop.run(GatewayServer(config).serve_forever())
