"""Refuse an oversized pre-connect frame from its header, before picows buffers it (one
source: compiled with gate.pxd, or plain Python with KRABFAST_NO_EXTENSIONS=1).

picows takes one frame-size limit per protocol, fixed at construction, and krabfast needs
two: 64 KiB before `connect` (as the reference), `maxPayload` (25 MiB) after. With only the
large limit, a socket that never authenticates could make picows buffer 25 MiB before the
pre-connect cap is checked. This gate sits in front of picows' protocol while a socket is
unauthenticated: it follows the byte stream (the HTTP upgrade request, then WebSocket
frame headers) and closes with 1009 as soon as a data frame header announces more than the
pre-connect cap. Once the connection is open it only forwards (compiled: two C calls per
read; `transport.set_protocol(inner)` would remove even those, but measured ~140 µs per
socket on uvloop, half the cost of a whole handshake).

It is also where the port's two protocols part: when the first request's head is complete
and carries no `Upgrade` header, the socket is handed to the HTTP protocol (`http`, a
factory; krabfast/web/http.py) with every byte read so far, and picows lets it go. A
WebSocket upgrade pays one case-insensitive search of its head for that.
"""

import asyncio

_HEAD_END = b"\r\n\r\n"
_HEAD_MAX = 64 * 1024  # picows refuses larger upgrade requests itself
_HTTP_HEAD_MAX = 16 * 1024  # past this, a head with no Upgrade header is HTTP's to refuse (431)
_UPGRADE = b"\r\nupgrade:"
# A close frame with code 1009 (message too big) and no reason.
_CLOSE_TOO_BIG = b"\x88\x02\x03\xf1"
# The gate whose socket picows is parsing right now: picows calls the listener factory
# (with the upgrade request only) from inside the protocol's buffer_updated, so this is
# how the factory learns whose socket, hence which peer, it is for.
_parsing = None


def _is_upgrade(lowered, end):
    """The request head `lowered[:end]` (lower-cased: names are case-insensitive) has an
    Upgrade header."""
    return lowered.find(_UPGRADE, 0, end) >= 0


def _has_forwarding(lowered, end):
    """The request head `lowered[:end]` (lower-cased) has a header that marks it as proxied
    (Forwarded, X-Real-IP, X-Forwarded-*; krabfast/gateway/proxies.py decides what to make
    of it)."""
    return (lowered.find(b"\r\nx-forwarded-", 0, end) >= 0
            or lowered.find(b"\r\nforwarded:", 0, end) >= 0
            or lowered.find(b"\r\nx-real-ip:", 0, end) >= 0)


def parsing():
    """The gate whose bytes picows is parsing right now (inside its listener factory)."""
    return _parsing


class _GateBase:
    """Compiled, the extension-type base (an extension type cannot have a Python class as
    its first base); asyncio.BufferedProtocol comes second, as asyncio requires."""


class PreauthGate(_GateBase, asyncio.BufferedProtocol):
    __slots__ = ("inner", "limit", "http", "transport", "listener", "_view", "_head", "_hdr",
                 "_skip", "_refused", "_open", "_handoff", "forwarded")

    def __init__(self, inner, limit, http=None):
        self.inner = inner
        self.limit = limit
        self.http = http  # () -> an HTTP protocol with feed(bytes), or None: WebSocket only
        self.transport = None
        self.listener = None  # set once picows has asked for a listener
        self._view = None
        self._head = bytearray()  # None once the upgrade request is past
        self._hdr = bytearray()
        self._skip = 0
        self._refused = False
        self._open = False
        self._handoff = None  # the bytes read so far, once the socket is found to be HTTP
        self.forwarded = False  # the upgrade request carries a forwarding header

    # -- asyncio.BufferedProtocol, forwarded ---------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.inner.connection_made(transport)

    def connection_lost(self, exc):
        self.inner.connection_lost(exc)

    def pause_writing(self):
        self.inner.pause_writing()

    def resume_writing(self):
        self.inner.resume_writing()

    def eof_received(self):
        return self.inner.eof_received()

    def get_buffer(self, sizehint):
        if self._open:
            return self.inner.get_buffer(sizehint)
        view = self._view = self.inner.get_buffer(sizehint)
        return view

    def buffer_updated(self, nbytes):
        global _parsing
        if self._open:
            self.inner.buffer_updated(nbytes)
            return
        if self._refused:
            return
        if not self._scan(bytes(self._view[:nbytes])):
            self._refuse()
            return
        self._view = None
        if self._handoff is not None:
            self._to_http()
            return
        _parsing = self
        try:
            self.inner.buffer_updated(nbytes)
        finally:
            _parsing = None
        listener = self.listener
        conn = listener.conn if listener is not None else None
        if conn is not None and conn.state == 1:  # OPEN: the large limit applies from now on
            self._open = True
            self._head = self._hdr = None
            self.listener = None

    # -- the stream ----------------------------------------------------------------------------
    def _scan(self, data):
        """Follow the stream; False when a data frame is announced over the limit."""
        i = 0
        n = len(data)
        if self._head is not None:
            head = self._head
            start = max(0, len(head) - 3)
            head += data
            end = head.find(_HEAD_END, start)
            if end < 0:
                if (self.http is not None and len(head) > _HTTP_HEAD_MAX
                        and not _is_upgrade(head.lower(), len(head))):
                    self._handoff = bytes(head)
                    self._head = None
                    return True
                if len(head) > _HEAD_MAX:
                    self._head = None  # not ours to judge: picows answers it
                    self._skip = 1 << 62
                return True
            i = end + 4 - (len(head) - n)
            self._head = None
            lowered = head.lower()  # once, for both questions
            if self.http is not None and not _is_upgrade(lowered, end + 2):
                self._handoff = bytes(head)  # the request and whatever followed it
                return True
            # Read by the listener factory (trusted proxies) instead of walking the headers.
            self.forwarded = _has_forwarding(lowered, end + 2)
        hdr = self._hdr
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                continue
            need = 2
            if len(hdr) >= 2:
                l7 = hdr[1] & 0x7F
                need += (2 if l7 == 126 else 8 if l7 == 127 else 0) + (4 if hdr[1] & 0x80 else 0)
            if len(hdr) < need:
                take = min(need - len(hdr), n - i)
                hdr += data[i:i + take]
                i += take
                if len(hdr) < need or len(hdr) == 2:
                    continue  # incomplete, or the length field may follow
            l7 = hdr[1] & 0x7F
            if l7 == 126:
                length = int.from_bytes(hdr[2:4], "big")
            elif l7 == 127:
                length = int.from_bytes(hdr[2:10], "big")
            else:
                length = l7
            if (hdr[0] & 0x0F) < 8 and length > self.limit:  # data or continuation frame
                return False
            del hdr[:]
            self._skip = length
        return True

    def _to_http(self):
        """This socket speaks plain HTTP: picows lets go of it (it has sent nothing; its
        upgrade timer is cancelled), the HTTP protocol gets the transport and every byte
        read so far, and from now on every callback goes to it."""
        data = self._handoff
        self._handoff = None
        self.listener = None
        picows = self.inner
        self.inner = proto = self.http()
        self._open = True  # forward only
        self._head = self._hdr = None
        picows.connection_lost(None)
        proto.connection_made(self.transport)
        proto.feed(data)

    def _refuse(self):
        self._refused = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(_CLOSE_TOO_BIG)
        transport.close()  # stop reading at once; the close frame is flushed first
