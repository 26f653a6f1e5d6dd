# Contract of dispatch.py: the fast path of an authenticated connection's requests; also
# the declarations Cython compiles dispatch.py with (this file augments it; plain Python
# ignores it). Invariants:
# - A frame is parsed once; its params are decoded once, straight into the method's Struct.
# - receive() either answers the request completely (returns None) or answers nothing and
#   returns (frame, params) for the connection's general path, params being the decoded
#   Struct or UNSET when not decoded yet. It never does both, so no request is answered twice.
# - Only the plain case is fast: known method, caller allowed by role and scope bits,
#   params valid, no idempotency key, synchronous handler. Everything else (errors,
#   retries, async handlers) takes the general path, which owns those rules.

cimport cython

from krabfast._core.wire cimport decode_frame, encode_json, response_error, response_ok

cdef object _UNSET
cdef object _ValidationError
cdef object _RequestFrame
cdef object _GatewayError

cdef class MethodEntry:
    cdef readonly object spec
    cdef readonly object handler
    cdef readonly object decoder      # msgspec Decoder of the params Struct, or None
    cdef readonly long long scope_bit # operator scope bit needed (kind == KIND_SCOPED)
    cdef readonly int kind
    cdef readonly bint is_async
    cdef readonly bint side_effect

cdef class Dispatcher:
    cdef dict entries
    @cython.locals(e=MethodEntry, mask=cython.longlong)
    cpdef object receive(self, object conn, object data)
