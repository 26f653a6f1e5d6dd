"""Node commands and the plugin API to add more.

A command is `handler(params: dict) -> result` (sync or async), registered under its wire
name. Built in: `system.which` and `file.stat`, with the reference node host's params and
results. Add your own:

    registry = default_registry()

    @registry.command("demo.hello")
    def hello(params):
        return {"hello": params.get("name", "world")}

    NodeHost(url, registry=registry).run()

or ship them in a module and pass `--plugin mypkg.mymodule` to `krabfast node run`; the
module's `register(registry)` is called.
"""

from __future__ import annotations

import importlib
import os
import shutil
import stat
from typing import Any, Callable


class NodeCommandError(Exception):
    """A command's failure, reported to the gateway as `node.invoke.result` error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CommandRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Callable[[dict], Any]] = {}
        self.caps: set[str] = set()

    def command(self, name: str, cap: str | None = None):
        def register(fn):
            self.add(name, fn, cap)
            return fn
        return register

    def add(self, name: str, handler: Callable[[dict], Any], cap: str | None = None) -> None:
        self._handlers[name] = handler
        if cap:
            self.caps.add(cap)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def get(self, name: str):
        return self._handlers.get(name)

    def load_plugin(self, module_name: str) -> None:
        module = importlib.import_module(module_name)
        register = getattr(module, "register", None)
        if register is None:
            raise ValueError(f"plugin {module_name} has no register(registry) function")
        register(self)


def system_which(params: dict) -> dict:
    """{bins: [name, ...]} -> {bins: {name: absolute path}} for the ones found on PATH."""
    bins = params.get("bins")
    if not isinstance(bins, list):
        raise NodeCommandError("INVALID_REQUEST", "INVALID_REQUEST: bins required")
    found = {}
    for name in bins:
        if isinstance(name, str) and name.strip():
            path = shutil.which(name.strip())
            if path:
                found[name.strip()] = os.path.abspath(path)
    return {"bins": found}


def file_stat(params: dict) -> dict:
    """{path, followSymlinks?} -> {ok, path, type, size, mtimeMs, binding} or {ok: false, code,
    message}: metadata of a regular file or directory."""
    path = params.get("path")
    if not isinstance(path, str) or not os.path.isabs(path):
        return {"ok": False, "code": "INVALID_PATH", "message": "path must be an absolute path"}
    try:
        canonical = os.path.realpath(path) if params.get("followSymlinks") is True else \
            os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        info = os.lstat(canonical)
    except FileNotFoundError:
        return {"ok": False, "code": "NOT_FOUND", "message": "path not found"}
    except PermissionError:
        return {"ok": False, "code": "PERMISSION_DENIED", "message": "could not read file metadata"}
    except OSError:
        return {"ok": False, "code": "READ_ERROR", "message": "could not read file metadata"}
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        return {"ok": False, "code": "UNSUPPORTED_FILE_TYPE",
                "message": "only regular files and directories are supported",
                "canonicalPath": canonical}
    return {"ok": True, "path": canonical,
            "type": "directory" if stat.S_ISDIR(info.st_mode) else "file",
            "size": info.st_size, "mtimeMs": info.st_mtime_ns / 1e6,
            "binding": {"kind": "existing", "device": str(info.st_dev), "inode": str(info.st_ino)}}


def default_registry() -> CommandRegistry:
    registry = CommandRegistry()
    registry.add("system.which", system_which, cap="system")
    registry.add("file.stat", file_stat, cap="file")
    return registry
