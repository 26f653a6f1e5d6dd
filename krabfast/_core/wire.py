"""Frame decoding and byte-level frame encoding (one source: compiled by Cython with the
declarations in wire.pxd, or run as plain Python with KRABFAST_NO_EXTENSIONS=1).

Outbound frames are assembled from pre-encoded JSON pieces so a payload is serialized once
and no intermediate envelope dict is built. Keys are emitted in the order the reference
uses (`type`, `id`/`event`, ...).
"""

import msgspec

from krabfast.protocol.frames import GatewayFrame

_decode = msgspec.json.Decoder(GatewayFrame).decode
_encode = msgspec.json.Encoder().encode


def decode_frame(data):
    """Parse one inbound text frame into a typed frame (params stay raw). Raises
    msgspec.DecodeError / ValidationError / UnicodeDecodeError on bad input."""
    return _decode(data)


def encode_json(value):
    return _encode(value)


def response_ok(req_id, payload_json):
    return b"".join((b'{"type":"res","id":', _encode(req_id), b',"ok":true,"payload":',
                     payload_json, b"}"))


def response_error(req_id, error_json):
    # error_json may be followed by a `,"payload":...` member (an error that carries one).
    return b"".join((b'{"type":"res","id":', _encode(req_id), b',"ok":false,"error":',
                     error_json, b"}"))


def event_prefix(event, payload_json):
    """Bytes of an event frame up to (and including) `"seq":`; the caller appends the
    per-socket seq digits and the suffix."""
    if payload_json is None:
        return b"".join((b'{"type":"event","event":', _encode(event), b',"seq":'))
    return b"".join((b'{"type":"event","event":', _encode(event), b',"payload":',
                     payload_json, b',"seq":'))


def event_suffix(state_version):
    if state_version is None:
        return b"}"
    presence = state_version[0]
    health = state_version[1]
    return b',"stateVersion":{"presence":%d,"health":%d}}' % (presence, health)


def event_unsequenced(event, payload_json):
    """An event outside the seq stream (the pre-connect challenge)."""
    if payload_json is None:
        return b"".join((b'{"type":"event","event":', _encode(event), b"}"))
    return b"".join((b'{"type":"event","event":', _encode(event), b',"payload":',
                     payload_json, b"}"))


def splice_seq(prefix, seq, suffix):
    return b"%b%d%b" % (prefix, seq, suffix)
