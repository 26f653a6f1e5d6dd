"""Servers started by `krabfast bench --vs-reference`: the reference gateway (Node 24, fresh
HOME), krabfast gateways (compiled and/or pure-Python core, `--core`), and the echo server
(`krabfast.bench.echo`: krabfast's transport without the gateway). Each runs in its own
session on a free loopback port and is stopped (its process group) when the benchmark is
done with it.

krabfast and echo targets start through `python -m krabfast.bench.launch`, which writes
what the process actually runs (core, versions, pid) to a file before it becomes the
server; `start_target` reads it, cross-checks the core against the compiled modules mapped
into the listening process (/proc/PID/maps) and fails when it is not the core asked for."""

from __future__ import annotations

import asyncio
import dataclasses
import json
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
from krabfast.bench.procstat import find_listening_pid, mapped_core_modules

REPO = Path(__file__).resolve().parents[2]
TARGET_NAMES = ("reference", "krabfast", "echo")
CORES = ("compiled", "pure", "both")
# The compiled modules, by name (krabfast._core.MODULES, without importing the core here).
CORE_MODULES = ("wire", "sink", "dispatch", "fanout", "listener", "gate")
NO_EXTENSIONS = "KRABFAST_NO_EXTENSIONS"


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
    info: dict = dataclasses.field(default_factory=dict)
    """What the process runs (core, versions): see krabfast.bench.launch."""
    info_path: Path | None = None
    config_path: Path | None = None
    """The generated config file (the chat scenario's model), removed at stop."""

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
        if self.info_path is not None:
            self.info_path.unlink(missing_ok=True)
        if self.config_path is not None:
            self.config_path.unlink(missing_ok=True)


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


def core_env(env: dict[str, str], core: str | None) -> dict[str, str]:
    """`env` for a krabfast process on `core`: "pure" sets KRABFAST_NO_EXTENSIONS=1;
    "compiled" and None (whatever is built) clear it."""
    env = dict(env)
    env.pop(NO_EXTENSIONS, None)
    if core == "pure":
        env[NO_EXTENSIONS] = "1"
    return env


def command_for(name: str, port: int, token: str, *, tick_interval_ms: int | None = None,
                reference=None, core: str | None = None,
                info_path: Path | None = None, config_path: Path | None = None
                ) -> tuple[list[str], dict[str, str], Path | None]:
    """(argv, env, temp dir or None: the reference's HOME, krabfast's state directory; removed
    when the target stops) to run target kind `name` on `port`; krabfast and echo
    on `core` (compiled, pure, or None for whatever is built), reporting to `info_path`;
    krabfast and the reference reading the openclaw.json `config_path` (None: no file)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("OPENCLAW_CONFIG_PATH", None)
    env.pop("KRABFAST_CONFIG", None)
    launch = [sys.executable, "-m", "krabfast.bench.launch", "--info", str(info_path)]
    if name == "krabfast":
        # A fresh state directory per server (removed when it stops): every run starts from
        # an empty store, as the reference's temporary HOME does, and none writes into the
        # user's own ~/.krabfast.
        state = Path(tempfile.mkdtemp(prefix="krabfast-bench-state-"))
        argv = [*launch, "gateway", "--port", str(port), "--bind", "127.0.0.1", "--token", token,
                "--log-level", "warning", "--state-dir", str(state)]
        if config_path is not None:
            argv += ["--config", str(config_path)]
        if tick_interval_ms:
            argv += ["--tick-interval-ms", str(tick_interval_ms)]
        return argv, core_env(env, core), state
    if name == "echo":
        argv = [*launch, "echo", "--port", str(port)]
        if tick_interval_ms:
            argv += ["--tick-interval-ms", str(tick_interval_ms)]
        return argv, core_env(env, core), None
    if name == "reference":
        if reference is None:
            raise TargetError("reference packages not located")
        home = Path(tempfile.mkdtemp(prefix="krabfast-bench-ref-home-"))
        argv = [str(reference.node), str(reference.openclaw_mjs), "gateway", "run",
                "--allow-unconfigured", "--bind", "loopback", "--port", str(port),
                "--auth", "token", "--token", token]
        extra = {"HOME": str(home)}
        if config_path is not None:
            # its usual place in the fresh HOME, and named by $OPENCLAW_CONFIG_PATH too
            state = home / ".openclaw"
            state.mkdir()
            placed = state / "openclaw.json"
            shutil.copyfile(config_path, placed)
            extra["OPENCLAW_CONFIG_PATH"] = str(placed)
        return argv, reference.env(env, **extra), home
    raise TargetError(f"unknown target {name!r}")


def probe_core(core: str | None) -> dict:
    """The environment a krabfast target on `core` would run in (`launch --probe`, same
    interpreter and environment as start_target uses)."""
    env = core_env(dict(os.environ), core)
    proc = subprocess.run([sys.executable, "-m", "krabfast.bench.launch", "--probe"], env=env,
                          cwd=str(REPO), capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise TargetError(f"cannot import krabfast for the target: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def check_core(name: str, wanted: str | None, info: dict, mapped: set[str] | None) -> None:
    """Fail when a target does not run the core asked for, by its own report and (when
    /proc/PID/maps is readable) by the compiled modules mapped into it."""
    got = info.get("core")
    if got not in ("compiled", "pure"):
        raise TargetError(f"{name}: no core reported ({info or 'no info file'})")
    if mapped is not None:
        compiled_mapped = set(CORE_MODULES) <= mapped
        if compiled_mapped != (got == "compiled"):
            raise TargetError(f"{name}: reports core {got!r} but has compiled modules "
                              f"{sorted(mapped) or 'none'} mapped")
    if wanted is not None and got != wanted:
        hint = (" (the Cython core is not built or does not import in this environment: "
                "python setup.py build_ext --inplace)" if wanted == "compiled" else "")
        raise TargetError(f"{name}: asked for the {wanted} core, the process runs {got}{hint}")


def reference_info(reference) -> dict:
    info: dict = {"core": None}
    try:
        out = subprocess.run([str(reference.node), "--version"], capture_output=True, text=True,
                             timeout=30)
        info["node"] = out.stdout.strip().lstrip("v") or None
    except (OSError, subprocess.SubprocessError):
        info["node"] = None
    try:
        pkg = json.loads((Path(reference.openclaw_mjs).parent / "package.json").read_text())
        info["openclaw"] = pkg.get("version")
    except (OSError, ValueError):
        info["openclaw"] = None
    return info


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
                       reference=None, ready_timeout: float = 90.0, core: str | None = None,
                       kind: str | None = None, config: dict | None = None) -> Target:
    """Start target `name` (of kind `kind`, default the name: reference, krabfast, echo);
    krabfast and echo on `core` ("compiled", "pure", or None for whatever is built);
    krabfast and the reference with `config` (an openclaw.json as a dict, e.g. the chat
    scenario's model) in a generated file."""
    kind = kind or name
    port = free_port()
    info_path = config_path = None
    if kind in ("krabfast", "echo"):
        info_path = Path(tempfile.mkstemp(prefix=f"krabfast-bench-{name}-", suffix=".json")[1])
        info_path.unlink()  # written by the target itself
    if config is not None:
        if kind == "echo":
            raise TargetError("the echo server reads no config")
        fd, raw = tempfile.mkstemp(prefix=f"krabfast-bench-{name}-config-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2)
        config_path = Path(raw)
    argv, env, home = command_for(kind, port, token, tick_interval_ms=tick_interval_ms,
                                  reference=reference, core=core, info_path=info_path,
                                  config_path=config_path)
    log = Path(tempfile.mkstemp(prefix=f"krabfast-bench-{name}-", suffix=".log")[1])
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(home if kind == "reference" else REPO))
    target = Target(name, f"ws://127.0.0.1:{port}", port, token, proc, log, home,
                    info_path=info_path, config_path=config_path)
    try:
        await wait_ready(target.url, token, proc, ready_timeout)
        target.pid = find_listening_pid(port) or proc.pid
        if info_path is not None:
            try:
                target.info = json.loads(info_path.read_text())
            except (OSError, ValueError) as exc:
                raise TargetError(f"no report of what it runs ({info_path}: {exc})") from None
            mapped = mapped_core_modules(target.pid)
            target.info["core_modules_mapped"] = None if mapped is None else sorted(mapped)
            check_core(name, core, target.info, mapped)
        elif kind == "reference":
            target.info = reference_info(reference)
    except TargetError as exc:
        tail = target.log_tail()
        target.stop()
        raise TargetError(f"{name} gateway: {exc}\n{tail}") from None
    except BaseException:
        target.stop()
        raise
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
