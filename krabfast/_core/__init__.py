"""Hot-path primitives: frame decode/encode, request fast path, write batching, the
per-socket listener, and fan-out.

Each compiled module (`wire`, `dispatch`, `sink`, `listener`, `fanout`) has a pure-Python twin
(`_wire_py`, ...) with the same API and byte-identical output. `KRABFAST_NO_EXTENSIONS=1`
selects the twins; otherwise the compiled modules are used when built, and the twins when
they are not.
"""

from __future__ import annotations

import os

NO_EXTENSIONS = os.environ.get("KRABFAST_NO_EXTENSIONS", "") not in ("", "0")

if NO_EXTENSIONS:
    from krabfast._core import _dispatch_py as dispatch
    from krabfast._core import _fanout_py as fanout
    from krabfast._core import _listener_py as listener
    from krabfast._core import _sink_py as sink
    from krabfast._core import _wire_py as wire

    COMPILED = False
else:
    try:
        from krabfast._core import dispatch, fanout, listener, sink, wire  # type: ignore[no-redef]

        COMPILED = True
    except ImportError:  # not built (a checkout without a compiler)
        from krabfast._core import _dispatch_py as dispatch  # type: ignore[no-redef]
        from krabfast._core import _fanout_py as fanout  # type: ignore[no-redef]
        from krabfast._core import _listener_py as listener  # type: ignore[no-redef]
        from krabfast._core import _sink_py as sink  # type: ignore[no-redef]
        from krabfast._core import _wire_py as wire  # type: ignore[no-redef]

        COMPILED = False

__all__ = ["wire", "dispatch", "sink", "listener", "fanout", "COMPILED", "NO_EXTENSIONS"]
