"""WebSocket helpers shared by the server adapter and the client."""

from __future__ import annotations

from picows import WSMsgType


def echo_close(transport, frame) -> None:
    """Answer a peer's CLOSE. An empty one (no status code) is answered empty: echoing
    code 0 would be a protocol error the peer rejects (RFC 6455 §5.5.1)."""
    if frame.payload_size < 2:
        transport.send(WSMsgType.CLOSE, b"")
    else:
        transport.send_close(frame.get_close_code())
