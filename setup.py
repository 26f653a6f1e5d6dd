"""Declares the Cython extensions of krabfast._core; everything else is in pyproject.toml.

Each hot module is one source, krabfast/_core/<name>.py, compiled by Cython in pure-Python
mode with the declarations of the <name>.pxd beside it. Set KRABFAST_NO_EXTENSIONS=1 at
build time to skip compiling (the same sources then run as plain Python).
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("KRABFAST_NO_EXTENSIONS", "") in ("", "0"):
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension("krabfast._core.wire", ["krabfast/_core/wire.py"]),
            Extension("krabfast._core.fanout", ["krabfast/_core/fanout.py"]),
            Extension("krabfast._core.dispatch", ["krabfast/_core/dispatch.py"]),
            Extension("krabfast._core.sink", ["krabfast/_core/sink.py"]),
            Extension("krabfast._core.listener", ["krabfast/_core/listener.py"]),
            Extension("krabfast._core.gate", ["krabfast/_core/gate.py"]),
        ],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    )

setup(ext_modules=ext_modules)
