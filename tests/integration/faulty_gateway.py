"""`python -m tests.integration.faulty_gateway gateway ...`: a real gateway process (same
CLI) with bugs injected, to check that a bug while serving one client's frame gives a
clean answer and one rate-limited log line, never a traceback or a dead listener.

Injected faults (selected by the request id, so only the test's frames trip them):
- `boom-dispatch*`: the request dispatcher raises (the listener's fast path).
- `boom-rest*`: the connection's general request path (`Connection.run`) raises.
- `boom-connect`: `connect` raises while checking the request.
"""

from __future__ import annotations

from krabfast.cli import main
from krabfast.connection import Connection
from krabfast.gateway.hub import Hub


class _FaultyDispatcher:
    __slots__ = ("inner",)

    def __init__(self, inner) -> None:
        self.inner = inner

    def receive(self, conn, data):
        if b'"boom-dispatch' in data:
            raise RuntimeError("injected dispatcher fault")
        return self.inner.receive(conn, data)


def _install() -> None:
    add_methods = Hub.add_methods
    connect = Connection._connect
    run = Connection.run

    def faulty_add_methods(self, specs) -> None:
        add_methods(self, specs)
        self.dispatcher = _FaultyDispatcher(self.dispatcher)

    def faulty_connect(self, frame):
        if frame.id == "boom-connect":
            raise RuntimeError("injected connect fault")
        return connect(self, frame)

    def faulty_run(self, req_id, *args, **kw):
        if req_id.startswith("boom-rest"):
            raise LookupError("injected dispatch fault")
        return run(self, req_id, *args, **kw)

    Hub.add_methods = faulty_add_methods
    Connection._connect = faulty_connect
    Connection.run = faulty_run


if __name__ == "__main__":
    _install()
    raise SystemExit(main())
