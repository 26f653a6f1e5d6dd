# Contract of dispatch.py: every request frame of an open connection takes one path;
# also the declarations Cython compiles dispatch.py with (this file augments it; plain
# Python ignores it). Invariants:
# - A frame is parsed once; its params are decoded once, straight into the method's Struct.
# - Authorization is one rule (`access`, then the params-dependent scope via `holds`),
#   decided from the method's declaration, for every request: there is no second path.
# - receive() answers each request exactly once: itself for the plain case (sync handler,
#   no idempotency key, not durable), else through exactly one `conn` method (not_a_request,
#   unknown_method, denied, bad_params, run_idempotent, run, send_reply), which owns it.

cimport cython

from krabfast._core.sink cimport WireSink
from krabfast._core.wire cimport decode_frame, encode_json, response_error, response_ok

cdef object _UNSET
cdef object _Raw
cdef object _ValidationError
cdef object _RequestFrame
cdef object _GatewayError
cdef object _Reply
cdef dict _SCOPE_BIT
cdef str _ADMIN, _ROLE_NODE, _ROLE_OPERATOR
cdef bytes _NULL, _EMPTY

cdef class Call:
    cdef readonly str conn_id
    cdef readonly str role
    cdef readonly frozenset scopes
    cdef readonly object client
    cdef readonly object device
    cdef readonly str auth_method
    cdef readonly bint is_local
    cdef readonly str peer_ip
    cdef readonly str principal
    cdef readonly object services
    cdef readonly long long scope_mask
    cdef int _role_kind               # KIND_NODE / KIND_OPERATOR (KIND_OPEN: neither)
    cdef object _owner                # the Connection: owns the outcomes not answered here
    cdef object _sink
    cdef WireSink _wire_sink          # _sink when it is a WireSink, else None

cdef class MethodEntry:
    cdef readonly object spec
    cdef readonly object handler
    cdef readonly object decoder      # msgspec Decoder of the params Struct, or None
    cdef readonly int kind
    cdef readonly long long scope_bit # operator scope bit needed (0: none or scope_name)
    cdef readonly object scope_name   # a scope without a bit, needed exactly (or admin)
    cdef readonly object scope_for    # params -> scope, or None
    cdef readonly bint is_async
    cdef readonly bint idempotent
    cdef readonly bint durable

@cython.locals(bit=cython.longlong)
cpdef bint holds(long long mask, object scopes, str scope)

@cython.locals(kind=cython.int)
cpdef int access(MethodEntry e, Call call)

cdef class Dispatcher:
    cdef dict entries
    @cython.locals(e=MethodEntry, verdict=cython.int, ok=bint, wire_sink=WireSink)
    cpdef object receive(self, Call call, object data)
