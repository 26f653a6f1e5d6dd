"""The gateway protocol: the schema Structs are the single source of truth.

Validation (decode into these Structs), `hello-ok.features`, the exported JSON Schema
(`krabfast protocol gen`) and generated client models all derive from this package.
"""

from krabfast.protocol.errors import DetailCode, ErrorCode, GatewayError
from krabfast.protocol.version import MIN_CLIENT_PROTOCOL, MIN_NODE_PROTOCOL, PROTOCOL_VERSION

__all__ = [
    "DetailCode", "ErrorCode", "GatewayError",
    "PROTOCOL_VERSION", "MIN_CLIENT_PROTOCOL", "MIN_NODE_PROTOCOL",
]
