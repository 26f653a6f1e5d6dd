"""Parent side of the load workers: spawn `python -m krabfast.bench.worker` processes, send
them JSON-line commands, collect results and progress."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Callable

import orjson

#: A worker holds at most this many sockets (fds), whatever --processes says.
MAX_SOCKETS_PER_WORKER = 9000


class WorkerError(RuntimeError):
    pass


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as possible (first ones get the remainder)."""
    if parts <= 0:
        raise ValueError("parts must be positive")
    base, extra = divmod(max(0, total), parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def workers_for(sockets: int, processes: int) -> int:
    """Processes needed so that none holds more than MAX_SOCKETS_PER_WORKER sockets."""
    need = -(-sockets // MAX_SOCKETS_PER_WORKER) if sockets > 0 else 1
    return max(1, processes, need)


class WorkerPool:
    """`async with WorkerPool(k, url, token) as pool: await pool.all("handshake", [...])`."""

    def __init__(self, size: int, url: str, token: str | None,
                 on_progress: Callable[[int, dict], None] | None = None) -> None:
        self.size = max(1, size)
        self.url = url
        self.token = token
        self.on_progress = on_progress
        self.procs: list[asyncio.subprocess.Process] = []
        self.info: list[dict] = []

    async def __aenter__(self) -> "WorkerPool":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for _ in range(self.size):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "krabfast.bench.worker", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, env=env, limit=1 << 27)
            self.procs.append(proc)
        self.info = await self.all("init", [{"url": self.url, "token": self.token}] * self.size)

    async def call(self, index: int, cmd: str, **args) -> dict:
        proc = self.procs[index]
        proc.stdin.write(orjson.dumps({"cmd": cmd, **args}) + b"\n")
        await proc.stdin.drain()
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise WorkerError(f"load worker {index} exited (code {proc.returncode}) during {cmd}")
            msg = orjson.loads(line)
            kind = msg.get("type")
            if kind == "progress":
                if self.on_progress is not None:
                    self.on_progress(index, msg)
                continue
            if kind == "error":
                raise WorkerError(f"load worker {index}: {cmd}: {msg.get('error')}")
            return msg

    async def all(self, cmd: str, args: list[dict | None]) -> list[dict]:
        """Run `cmd` on worker i with args[i] (None skips that worker: result {})."""
        async def one(i: int, a: dict | None) -> dict:
            return {} if a is None else await self.call(i, cmd, **a)

        return list(await asyncio.gather(*(one(i, a) for i, a in enumerate(args))))

    async def each(self, cmd: str, **args) -> list[dict]:
        return await self.all(cmd, [args] * self.size)

    async def stop(self, timeout: float = 10.0) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                try:
                    proc.stdin.write(b'{"cmd":"exit"}\n')
                    proc.stdin.close()
                except (BrokenPipeError, ConnectionResetError, RuntimeError):
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        self.procs = []
