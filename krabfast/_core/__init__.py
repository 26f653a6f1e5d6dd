"""Hot-path primitives: frame decode/encode and event fan-out.

Each compiled module (`wire`, `fanout`) has a pure-Python twin (`_wire_py`, `_fanout_py`)
with the same API and byte-identical output. `KRABFAST_NO_EXTENSIONS=1` selects the twins;
otherwise the compiled modules are used when built, and the twins when they are not.
"""

from __future__ import annotations

import os

NO_EXTENSIONS = os.environ.get("KRABFAST_NO_EXTENSIONS", "") not in ("", "0")

if NO_EXTENSIONS:
    from krabfast._core import _fanout_py as fanout
    from krabfast._core import _wire_py as wire

    COMPILED = False
else:
    try:
        from krabfast._core import fanout, wire  # type: ignore[no-redef]

        COMPILED = True
    except ImportError:  # not built (editable checkout without a compiler)
        from krabfast._core import _fanout_py as fanout  # type: ignore[no-redef]
        from krabfast._core import _wire_py as wire  # type: ignore[no-redef]

        COMPILED = False

__all__ = ["wire", "fanout", "COMPILED", "NO_EXTENSIONS"]
