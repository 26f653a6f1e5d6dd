"""Pure-Python twin of `wire.pyx`: frame decoding and byte-level frame encoding.

Outbound frames are assembled from pre-encoded JSON pieces so a payload is serialized once
and no intermediate envelope dict is built. Keys are emitted in the order the reference
uses (`type`, `id`/`event`, ...), which keeps output byte-identical across both twins.
"""

from __future__ import annotations

import msgspec

from krabfast.protocol.frames import GatewayFrame

_decoder = msgspec.json.Decoder(GatewayFrame)
_encoder = msgspec.json.Encoder()
_encode = _encoder.encode


def decode_frame(data):
    """Parse one inbound text frame into a typed frame (params stay raw). Raises
    msgspec.DecodeError / ValidationError / UnicodeDecodeError on bad input."""
    return _decoder.decode(data)


def encode_json(value) -> bytes:
    return _encode(value)


def response_ok(req_id: str, payload_json: bytes) -> bytes:
    return b'{"type":"res","id":' + _encode(req_id) + b',"ok":true,"payload":' + payload_json + b"}"


def response_error(req_id: str, error_json: bytes) -> bytes:
    return b'{"type":"res","id":' + _encode(req_id) + b',"ok":false,"error":' + error_json + b"}"


def event_prefix(event: str, payload_json: bytes | None) -> bytes:
    """Bytes of an event frame up to (and including) `"seq":`; the caller appends the
    per-socket seq digits and the suffix."""
    head = b'{"type":"event","event":' + _encode(event)
    if payload_json is not None:
        head += b',"payload":' + payload_json
    return head + b',"seq":'


def event_suffix(state_version: tuple[int, int] | None) -> bytes:
    if state_version is None:
        return b"}"
    return b',"stateVersion":{"presence":%d,"health":%d}}' % state_version


def event_unsequenced(event: str, payload_json: bytes | None) -> bytes:
    """An event outside the seq stream (the pre-connect challenge)."""
    head = b'{"type":"event","event":' + _encode(event)
    if payload_json is not None:
        head += b',"payload":' + payload_json
    return head + b"}"


def splice_seq(prefix: bytes, seq: int, suffix: bytes) -> bytes:
    return b"%b%d%b" % (prefix, seq, suffix)
