"""Servers started by `krabfast bench --vs-reference`: the reference gateway (Node 24, fresh
HOME), a krabfast gateway, and the bare picows+orjson echo server (benchmarks/echo_server.py).
Each runs in its own session on a free loopback port and is stopped (its process group)
when the benchmark is done with it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from krabfast.bench.loadclient import BenchError, close_conn, connect_frame, open_conn
from krabfast.bench.procstat import find_listening_pid

REPO = Path(__file__).resolve().parents[2]
ECHO_SERVER = REPO / "benchmarks" / "echo_server.py"
TARGET_NAMES = ("reference", "krabfast", "echo")


class TargetError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Target:
    name: str
    url: str
    port: int
    token: str
    process: subprocess.Popen
    log_path: Path
    home: Path | None = None
    pid: int | None = None
    """The pid listening on the port (may differ from process.pid for a wrapper)."""

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        stop_process_tree(self.process, grace)
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (the reference spawns workers in their own sessions)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_process_tree(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it and any straggling descendant."""
    if proc.poll() is not None:
        return
    tree = _descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
    deadline = time.monotonic() + 3
    for pid in tree:
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def command_for(name: str, port: int, token: str, *, tick_interval_ms: int | None = None,
                reference=None) -> tuple[list[str], dict[str, str], Path | None]:
    """(argv, env, temp HOME or None) to run target `name` on `port`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if name == "krabfast":
        argv = [sys.executable, "-m", "krabfast", "gateway", "--port", str(port),
                "--bind", "127.0.0.1", "--token", token, "--log-level", "warning"]
        if tick_interval_ms:
            argv += ["--tick-interval-ms", str(tick_interval_ms)]
        return argv, env, None
    if name == "echo":
        if not ECHO_SERVER.is_file():
            raise TargetError(f"{ECHO_SERVER} not found (run from a krabfast checkout)")
        argv = [sys.executable, str(ECHO_SERVER), "--port", str(port)]
        if tick_interval_ms:
            argv += ["--tick-interval-ms", str(tick_interval_ms)]
        return argv, env, None
    if name == "reference":
        if reference is None:
            raise TargetError("reference packages not located")
        home = Path(tempfile.mkdtemp(prefix="krabfast-bench-ref-home-"))
        argv = [str(reference.node), str(reference.openclaw_mjs), "gateway", "run",
                "--allow-unconfigured", "--bind", "loopback", "--port", str(port),
                "--auth", "token", "--token", token]
        return argv, reference.env(env, HOME=str(home)), home
    raise TargetError(f"unknown target {name!r}")


async def wait_ready(url: str, token: str, proc: subprocess.Popen, timeout: float) -> None:
    """Until a full handshake succeeds (the reference listens before it answers)."""
    deadline = time.monotonic() + timeout
    frame = connect_frame(token)
    last = "not started"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TargetError(f"exited with code {proc.returncode}")
        try:
            conn = await open_conn(url, frame, timeout=5.0)
        except BenchError as exc:
            last = str(exc)
            await asyncio.sleep(0.2)
            continue
        await close_conn(conn)
        return
    raise TargetError(f"not ready after {timeout:.0f} s ({last})")


async def start_target(name: str, token: str, *, tick_interval_ms: int | None = None,
                       reference=None, ready_timeout: float = 90.0) -> Target:
    port = free_port()
    argv, env, home = command_for(name, port, token, tick_interval_ms=tick_interval_ms,
                                  reference=reference)
    log = Path(tempfile.mkstemp(prefix=f"krabfast-bench-{name}-", suffix=".log")[1])
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(home or REPO))
    target = Target(name, f"ws://127.0.0.1:{port}", port, token, proc, log, home)
    try:
        await wait_ready(target.url, token, proc, ready_timeout)
    except TargetError as exc:
        tail = target.log_tail()
        target.stop()
        raise TargetError(f"{name} gateway: {exc}\n{tail}") from None
    target.pid = find_listening_pid(port) or proc.pid
    await wait_idle(target.pid)
    return target


async def wait_idle(pid: int, *, window: float = 0.5, busy_share: float = 0.1,
                    timeout: float = 30.0) -> bool:
    """Until the server uses under `busy_share` of a core over two windows in a row (the
    reference keeps loading plugins for a while after it answers handshakes)."""
    from krabfast.bench.procstat import cpu_delta, read_cpu

    deadline = time.monotonic() + timeout
    calm = 0
    before = read_cpu(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(window)
        after = read_cpu(pid)
        used, _ = cpu_delta(before, after)
        if used is None:
            return False
        calm = calm + 1 if used < busy_share * window else 0
        if calm >= 2:
            return True
        before = after
    return False
