"""Helpers for the interop tests (Node 24 subprocesses, JSON-lines output)."""

from __future__ import annotations

import json
import subprocess

TOKEN = "interop-token"


def run_node(reference, args: list[str], *, cwd, home, timeout: float = 60.0,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the Node 24 binary with `args` (HOME set to `home`), capturing text output."""
    run_env = reference.env(HOME=str(home), NO_COLOR="1", FORCE_COLOR="0", CI="true",
                            **(env or {}))
    return subprocess.run([str(reference.node), *args], cwd=cwd, env=run_env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out
