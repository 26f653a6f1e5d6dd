"""Shared fixtures: the reference npm packages, and real krabfast gateway processes.

- `reference` (session): `krabfast.reference.Reference` for the installed reference packages.
  Skips the test when they cannot be installed, or fails it when KRABFAST_REQUIRE_REFERENCE=1.
- `gateway_server` (function) / `gateway_server_module` (module): start
  `python -m krabfast gateway` subprocesses; see `GatewayFactory.__call__`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def reference():
    from krabfast.reference import ReferenceInstallError, ensure_installed

    try:
        return ensure_installed(quiet=True)
    except (ReferenceInstallError, OSError) as exc:
        message = f"reference npm packages unavailable: {exc}"
        if os.environ.get("KRABFAST_REQUIRE_REFERENCE", "") not in ("", "0"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


class GatewayProcess(NamedTuple):
    url: str
    """ws://127.0.0.1:<port>"""
    port: int
    process: subprocess.Popen

    @property
    def log(self) -> Path:
        """The file holding the gateway's stdout+stderr."""
        return self.process.log_path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class GatewayFactory:
    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self.started: list[GatewayProcess] = []

    def __call__(self, *args: str, env: dict[str, str] | None = None,
                 ready_timeout: float = 15.0) -> GatewayProcess:
        """Start `python -m krabfast gateway --port <free> --bind 127.0.0.1 *args`.

        `args` are extra CLI arguments, e.g. `("--token", "T", "--tick-interval-ms", "500")`.
        `env` (optional) is merged over os.environ. Returns once the port accepts TCP
        connections: a `GatewayProcess` named tuple `(url, port, process)`, with `.log` (path
        of the gateway's stdout+stderr) and `.output()` (its text) besides.
        Every process started is stopped at fixture teardown (SIGTERM, then SIGKILL after
        5 s); a test may also stop one itself.
        """
        # Each gateway gets its own state directory (pairing database) unless a test
        # passes one, so tests never share or touch ~/.krabfast.
        state = self.tmp_dir / f"state-{len(self.started)}"
        run_env = {**os.environ, "PYTHONUNBUFFERED": "1", "KRABFAST_STATE_DIR": str(state),
                   **(env or {})}
        for _attempt in range(3):  # a free port can be taken between probe and bind
            port = free_port()
            log = self.tmp_dir / f"gateway-{len(self.started)}-{port}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "krabfast", "gateway", "--port", str(port),
                     "--bind", "127.0.0.1", *args],
                    cwd=REPO, env=run_env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True)
            proc.log_path = log
            gw = GatewayProcess(f"ws://127.0.0.1:{port}", port, proc)
            self.started.append(gw)
            deadline = time.monotonic() + ready_timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                if _port_open(port):
                    return gw
                time.sleep(0.05)
            else:
                _stop(proc)
                raise RuntimeError(f"gateway not listening on {port} after {ready_timeout}s:\n"
                                   f"{gw.output()}")
            if "cannot listen" not in gw.output():
                raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gw.output()}")
        raise RuntimeError(f"gateway could not get a free port:\n{gw.output()}")

    def stop_all(self) -> None:
        for gw in self.started:
            _stop(gw.process)


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def gateway_server(tmp_path):
    """Factory: `url, port, proc = gateway_server("--token", "T")` (see GatewayFactory.__call__)."""
    factory = GatewayFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def gateway_server_module(tmp_path_factory):
    """Like `gateway_server`, for module-scoped fixtures; processes live until the module ends."""
    factory = GatewayFactory(tmp_path_factory.mktemp("gateway"))
    yield factory
    factory.stop_all()
