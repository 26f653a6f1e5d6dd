"""krabfast's one door into picows beyond its public API (see docs/picows.md).

Everything else uses picows' public API only: `WSListener`/`WSTransport`/`WSFrame` (Python
and their .pxd, for the compiled listener), `WSUpgradeRequest`/`WSUpgradeResponse`,
`WSCloseCode`, `WSMsgType` and `ws_create_server`. What goes beyond it is here, each probed
when used; when a probe fails krabfast falls back to public-only behaviour, which costs
memory, never correctness, and logs one warning line (`picows_fallbacks` says which).

1. Server protocols (`create_server`). The pre-connect gate (preauth_gate.py) must sit in
   front of picows' protocol from the socket's first byte, and the listener factory must
   know the peer's address. picows has no public protocol factory, so instead of calling
   its internal `WSProtocol(...)` constructor (positional, private), we let the public
   `ws_create_server` build its own factory and capture it: it is called once, in a helper
   thread, on a throwaway event loop whose `create_server` keeps the factory instead of
   listening. The factory is picows' own closure, so its arguments are exactly what picows
   passes; uvloop then runs it in the real loop, where the gate wraps each protocol.
   Probe: the capture worked and the factory builds a BufferedProtocol.
   Fallback: plain `ws_create_server`, no gate: an unauthenticated socket can make picows
   buffer one frame of up to maxPayload (25 MiB) before the connection's own 64 KiB
   pre-connect check closes it 1009; the per-address pre-connect limit is checked after
   the upgrade (close 1013) instead of answering HTTP 503.
2. Upgrade request/response (`release_upgrade`). picows keeps `transport.request` and
   `transport.response` (read-only attributes) for the socket's lifetime; we have read what
   we need before the 101, so their public attributes are emptied: 2.3 KiB per idle socket
   (mostly the headers' CIMultiDicts; 8.25 -> 5.91 KiB, compiled, 2,000 sockets). Done by
   the server's `attach`, the same in both builds.
   Probe: each attribute exists (else: left as is, for that and later sockets).
3. Send staging buffer (`check_write_buffer`, compiled core only). Each WSTransport
   mallocs a 1 KiB `_write_buffer` (a private cdef field) that only ever carries our pings,
   pongs and closes (our frames go out through the sink). The compiled listener replaces
   it with a 64-byte one: 0.9 KiB per idle socket (6.85 -> 5.91 KiB, 2,000 sockets). A
   C-level write, at an offset fixed when the core was compiled, so it is done only when
   the running picows is a release line verified to keep that field as it is
   (`WRITE_BUFFER_VERIFIED`) and its WSTransport has the size the core was compiled
   against (else the core was built against another picows: rebuild it). The plain-Python
   core never does it (Python cannot set the field).
   Widen the range once `.ci/run`'s newest-dependency step passes on a new picows release
   (it builds the compiled core against it and runs the socket tests).

Verified on picows 2.3.0 and 2.3.1 (the newest release as of this writing).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import threading

import picows

log = logging.getLogger("krabfast.gateway")


def _version(text: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string; a pre-release counts as its release."""
    parts = []
    for piece in text.split(".")[:3]:
        m = re.match(r"\d+", piece)
        if m is None:
            break
        parts.append(int(m.group(0)))
    return tuple(parts)


PICOWS_VERSION = _version(getattr(picows, "__version__", "0"))
# [first, past-the-end) picows releases whose WSTransport._write_buffer is verified to be the
# 1 KiB send staging buffer, replaceable after the upgrade (2.3.0 and 2.3.1).
WRITE_BUFFER_VERIFIED = ((2, 3), (2, 4))


def write_buffer_shrink_ok(version: tuple[int, ...] = PICOWS_VERSION) -> bool:
    lo, hi = WRITE_BUFFER_VERIFIED
    return lo <= version < hi


SHRINK_WRITE_BUFFER = write_buffer_shrink_ok()

# What fell back to public-only behaviour (names as in the docstring); one warning each.
picows_fallbacks: set[str] = set()


def _fell_back(what: str, why: str) -> None:
    if what not in picows_fallbacks:
        picows_fallbacks.add(what)
        log.warning("picows %s: %s, falling back to public API only (%s)",
                    ".".join(map(str, PICOWS_VERSION)) or "?", why, what)


def check_write_buffer(compiled: bool, built_size: int) -> bool:
    """Whether the compiled listener may shrink the staging buffer (3.); logs a fallback.
    `built_size`: the WSTransport size the compiled core was built against."""
    if not compiled:
        return False
    if not SHRINK_WRITE_BUFFER:
        _fell_back("write buffer", "send staging buffer not verified on this release "
                   "(about 1 KiB more per socket)")
        return False
    running = getattr(picows.WSTransport, "__basicsize__", None)
    if built_size != running:
        _fell_back("write buffer", f"compiled core built against another picows (WSTransport "
                   f"{built_size} bytes, running {running}): rebuild it")
        return False
    return True


# -- 2. the upgrade request/response ---------------------------------------------------------

_REQUEST_FIELDS = ("headers", "path", "method", "version")
_RESPONSE_FIELDS = ("headers", "body", "version")
_release_ok = True


def release_upgrade(transport) -> bool:
    """Empty what picows keeps of the upgrade; False (and nothing changed) when a field is
    missing, for this socket and every later one."""
    global _release_ok
    if not _release_ok:
        return False
    try:
        request, response = transport.request, transport.response
        if (request is not None and not all(hasattr(request, f) for f in _REQUEST_FIELDS)) or \
                (response is not None and not all(hasattr(response, f) for f in _RESPONSE_FIELDS)):
            raise AttributeError("upgrade request/response fields")
    except AttributeError as exc:
        _release_ok = False
        _fell_back("upgrade release", f"no {exc.args[0] if exc.args else 'field'} "
                   "(about 2.3 KiB more per socket)")
        return False
    if request is not None:
        request.headers = request.path = request.method = request.version = None
    if response is not None:
        response.headers = response.body = response.version = None
    return True


# -- 1. server protocols ---------------------------------------------------------------------

class _Captured(Exception):
    pass


class _CaptureLoop(asyncio.SelectorEventLoop):
    """Runs ws_create_server to its `loop.create_server(factory, ...)` call, and keeps the
    factory instead of listening."""

    factory = None

    async def create_server(self, protocol_factory, *args, **kwargs):
        self.factory = protocol_factory
        raise _Captured


def public_options(options: dict) -> dict:
    """The options this picows' ws_create_server takes (never pass one it dropped)."""
    params = inspect.signature(picows.ws_create_server).parameters
    return {k: v for k, v in options.items() if k in params}


def capture_protocol_factory(listener_factory, options: dict):
    """picows' own per-socket protocol factory, as `ws_create_server(listener_factory,
    **options)` builds it, or None. Call it only in the loop that will run its sockets."""
    out: list = []

    def run() -> None:
        loop = _CaptureLoop()
        try:
            loop.run_until_complete(picows.ws_create_server(listener_factory, "127.0.0.1", 0,
                                                            **options))
        except _Captured:
            out.append(loop.factory)
        except Exception as exc:  # noqa: BLE001 (any failure: fall back)
            out.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="picows-capture", daemon=True)
    thread.start()
    thread.join(10.0)
    return out[0] if out and callable(out[0]) else None


async def create_server(listener_factory, host, port, *, gate_factory, options: dict,
                        **create_kwargs):
    """`(server, gated)`: an asyncio server whose sockets speak picows, each protocol
    wrapped by `gate_factory(inner)` when gated.

    `listener_factory(request)` is picows' listener factory; `options` are
    ws_create_server's (by name); `create_kwargs` go to loop.create_server."""
    options = public_options(dict(options, use_aiofastnet=False))
    inner_factory = capture_protocol_factory(listener_factory, options)
    probe = None
    if inner_factory is not None:
        try:
            probe = inner_factory()
        except Exception:  # noqa: BLE001
            probe = None
    if not isinstance(probe, asyncio.BufferedProtocol):
        _fell_back("server protocols", "ws_create_server's protocol factory could not be "
                   "captured (no pre-connect gate: up to maxPayload buffered per "
                   "unauthenticated socket)")
        server = await picows.ws_create_server(listener_factory, host, port, **options,
                                               **create_kwargs)
        return server, False
    del probe

    def gated():
        return gate_factory(inner_factory())

    loop = asyncio.get_running_loop()
    return await loop.create_server(gated, host, port, **create_kwargs), True
