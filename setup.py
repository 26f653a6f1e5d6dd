"""Declares the Cython extensions of krabfast._core; everything else is in pyproject.toml.

Set KRABFAST_NO_EXTENSIONS=1 at build time to skip compiling (the pure-Python twins are
used at run time then).
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("KRABFAST_NO_EXTENSIONS", "") in ("", "0"):
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension("krabfast._core.wire", ["krabfast/_core/wire.pyx"]),
            Extension("krabfast._core.fanout", ["krabfast/_core/fanout.pyx"]),
            Extension("krabfast._core.dispatch", ["krabfast/_core/dispatch.pyx"]),
            Extension("krabfast._core.sink", ["krabfast/_core/sink.pyx"]),
            Extension("krabfast._core.listener", ["krabfast/_core/listener.pyx"]),
        ],
        compiler_directives={"language_level": "3"},
    )

setup(ext_modules=ext_modules)
