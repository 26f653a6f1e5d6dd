"""Method handlers, grouped by family. Each family module exports `HANDLERS`:
method name -> `handler(call, params)`; the specs live in `krabfast.protocol.methods`.

A handler returns the result (a Struct, dict, list...) or an awaitable of it, or raises
`GatewayError`. `call` is the calling `Connection` (role, scopes, client, hub).
"""

from krabfast.methods import devices, nodes, system

HANDLERS = {**system.HANDLERS, **devices.HANDLERS, **nodes.HANDLERS}
