"""Start a benchmark target and have it say what it runs, from inside the measured process.

    python -m krabfast.bench.launch --info FILE gateway ARGS...   # becomes `krabfast gateway ARGS`
    python -m krabfast.bench.launch --info FILE echo ARGS...      # becomes the echo server
    python -m krabfast.bench.launch --probe                       # prints the same JSON, exits

Before it becomes the server, the process imports `krabfast._core` (exactly as the server
would: same interpreter, environment and working directory) and writes FILE: which core
loaded (`krabfast._core.COMPILED`), the versions of Python, picows, uvloop, msgspec and
orjson it imports, and its pid. `krabfast bench` reads FILE once the target answers and
fails when the core is not the one asked for (`--core`).
"""

from __future__ import annotations

import json
import os
import platform
import sys

PACKAGES = ("picows", "uvloop", "msgspec", "orjson")


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """What this process runs: core, interpreter and library versions."""
    import krabfast
    import krabfast._core as core

    return {
        "core": "compiled" if core.COMPILED else "pure",
        "KRABFAST_NO_EXTENSIONS": os.environ.get("KRABFAST_NO_EXTENSIONS"),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "krabfast": getattr(krabfast, "__version__", None),
        "krabfast_path": os.path.dirname(os.path.abspath(krabfast.__file__)),
        **{name: _version(name) for name in PACKAGES},
        "pid": os.getpid(),
    }


def write_info(path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(environment(), fh)
    os.replace(tmp, path)  # the reader never sees half a file


def main(argv: list[str]) -> None:
    if argv[:1] == ["--probe"]:
        print(json.dumps(environment()))
        return
    if len(argv) < 3 or argv[0] != "--info" or argv[2] not in ("gateway", "echo"):
        raise SystemExit("usage: python -m krabfast.bench.launch --info FILE "
                         "(gateway|echo) ARGS... | --probe")
    info, kind, rest = argv[1], argv[2], argv[3:]
    write_info(info)
    if kind == "echo":
        from krabfast.bench.echo import main as echo_main

        echo_main(rest)
        return
    import runpy

    sys.argv = ["krabfast", "gateway", *rest]
    runpy.run_module("krabfast", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
