# Contract of wire.py (frame decode + encode), and the declarations Cython compiles it with
# (pure-Python mode: this file augments wire.py; plain Python ignores it). Invariants:
# - decode_frame parses the whole frame exactly once; request params stay msgspec.Raw
#   (a view into the same buffer) and are decoded once later, into the method's Struct.
# - Compiled or not, every encoder returns the same bytes for the same input.
# - Keys come out in a fixed order: type, id|event, ok, payload|error, seq, stateVersion.
# - event_prefix(...) + b"%d" % seq + event_suffix(...) is a complete event frame.

cimport cython

cdef object _decode
cdef object _encode

cpdef object decode_frame(object data)
cpdef bytes encode_json(object value)
cpdef bytes response_ok(str req_id, bytes payload_json)
cpdef bytes response_error(str req_id, bytes error_json)
cpdef bytes event_prefix(str event, object payload_json)
@cython.locals(presence=cython.longlong, health=cython.longlong)
cpdef bytes event_suffix(object state_version)
cpdef bytes event_unsequenced(str event, object payload_json)
cpdef bytes splice_seq(bytes prefix, long long seq, bytes suffix)
