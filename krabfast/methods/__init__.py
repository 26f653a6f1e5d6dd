"""Method handlers, grouped by family, each declared once next to its handler.

Each family module has a `table` (`protocol.methods.MethodTable`): `@table.method(name,
params, result, scope, ...)` above a handler binds name, Structs, scope, idempotency and
handler. `METHOD_SPECS` is every family's declarations; the gateway serves exactly these
(plus plugins'), advertises them in `hello-ok.features`, and the schema exports them.

A handler is `handler(call, params)`: `call` is the caller's `Call` (identity, role, scopes
and the gateway services it may use), `params` the decoded params Struct. It returns the
result (a Struct, dict, list...), a `Reply` (result + what to do once it is sent), or an
awaitable of either; or it raises `GatewayError`.
"""

from krabfast.methods import agents, chat, devices, models, nodes, sessions, system
from krabfast.protocol.methods import MethodSpec, index

METHOD_SPECS: tuple[MethodSpec, ...] = (*system.table.specs, *devices.table.specs,
                                        *nodes.table.specs, *chat.table.specs,
                                        *agents.table.specs, *sessions.table.specs,
                                        *models.table.specs)
METHODS: dict[str, MethodSpec] = index(METHOD_SPECS)
