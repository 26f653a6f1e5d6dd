"""Hot-path primitives: frame decode/encode, request fast path, write batching, the
per-socket listener, and fan-out.

Each module (`wire`, `dispatch`, `sink`, `listener`, `fanout`) has one source, `<name>.py`,
that runs as plain Python and that Cython compiles (pure-Python mode) with the declarations
of the `<name>.pxd` beside it. When the extensions are built, the import system picks the
compiled `<name>.*.so` over `<name>.py`; `KRABFAST_NO_EXTENSIONS=1` loads the `.py` sources
instead, under the same module names. `COMPILED` says which ran: True only when all six
are compiled extensions (a partial or broken build falls back to the sources, all six).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types

NO_EXTENSIONS = os.environ.get("KRABFAST_NO_EXTENSIONS", "") not in ("", "0")

MODULES = ("wire", "sink", "dispatch", "fanout", "listener", "gate")  # dependency order
_NAMES = MODULES
_DIR = os.path.dirname(os.path.abspath(__file__))


def _is_extension(spec) -> bool:
    return spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)


def _exec_sources() -> dict:
    """Run every `<name>.py` as `krabfast._core.<name>` (registered in sys.modules, so the
    sources import each other), even where a compiled module of that name sits beside it."""
    for name in _NAMES:
        sys.modules.pop(f"{__name__}.{name}", None)
    mods = {}
    for name in _NAMES:
        fullname = f"{__name__}.{name}"
        spec = importlib.util.spec_from_file_location(fullname, os.path.join(_DIR, name + ".py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[fullname] = mod  # before running it: later modules import earlier ones
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            sys.modules.pop(fullname, None)
            raise
        mods[name] = mod
    return mods


def _load_compiled() -> dict | None:
    """The compiled modules, or None when any of them is not built or does not import."""
    if not all(_is_extension(importlib.util.find_spec(f"{__name__}.{n}")) for n in _NAMES):
        return None
    try:
        return {n: importlib.import_module(f"{__name__}.{n}") for n in _NAMES}
    except (ImportError, ValueError):
        # e.g. built against another picows: Cython refuses a changed binary layout of a
        # cimported type with ValueError ("size changed, may indicate binary incompatibility")
        return None


_mods = None if NO_EXTENSIONS else _load_compiled()
COMPILED = _mods is not None
if _mods is None:
    _mods = _exec_sources()

wire = _mods["wire"]
sink = _mods["sink"]
dispatch = _mods["dispatch"]
fanout = _mods["fanout"]
listener = _mods["listener"]
gate = _mods["gate"]
del _mods

__all__ = ["wire", "dispatch", "sink", "listener", "fanout", "gate", "MODULES", "COMPILED",
           "NO_EXTENSIONS", "load_sources"]


def load_sources() -> types.SimpleNamespace:
    """A fresh, uncompiled set of the six modules, run from the same `.py` sources, that
    import each other and not the loaded core (which stays in place): what tests compare
    the compiled modules with."""
    saved = {n: sys.modules.get(f"{__name__}.{n}") for n in _NAMES}
    try:
        return types.SimpleNamespace(**_exec_sources())
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(f"{__name__}.{name}", None)
            else:
                sys.modules[f"{__name__}.{name}"] = mod
