# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled frame decode/encode. Same API and output as `_wire_py`."""

import msgspec

from krabfast.protocol.frames import GatewayFrame

cdef object _decode = msgspec.json.Decoder(GatewayFrame).decode
cdef object _encode = msgspec.json.Encoder().encode


cpdef object decode_frame(object data):
    return _decode(data)


cpdef bytes encode_json(object value):
    return _encode(value)


cpdef bytes response_ok(str req_id, bytes payload_json):
    return b''.join((b'{"type":"res","id":', _encode(req_id), b',"ok":true,"payload":',
                     payload_json, b'}'))


cpdef bytes response_error(str req_id, bytes error_json):
    return b''.join((b'{"type":"res","id":', _encode(req_id), b',"ok":false,"error":',
                     error_json, b'}'))


cpdef bytes event_prefix(str event, object payload_json):
    if payload_json is None:
        return b''.join((b'{"type":"event","event":', _encode(event), b',"seq":'))
    return b''.join((b'{"type":"event","event":', _encode(event), b',"payload":',
                     <bytes>payload_json, b',"seq":'))


cpdef bytes event_suffix(object state_version):
    if state_version is None:
        return b'}'
    cdef long long presence = state_version[0]
    cdef long long health = state_version[1]
    return b',"stateVersion":{"presence":%d,"health":%d}}' % (presence, health)


cpdef bytes event_unsequenced(str event, object payload_json):
    if payload_json is None:
        return b''.join((b'{"type":"event","event":', _encode(event), b'}'))
    return b''.join((b'{"type":"event","event":', _encode(event), b',"payload":',
                     <bytes>payload_json, b'}'))


cpdef bytes splice_seq(bytes prefix, long long seq, bytes suffix):
    return b'%b%d%b' % (prefix, seq, suffix)
