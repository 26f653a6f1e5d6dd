"""A tiny HTTP/1.1 server (asyncio streams, own thread) behind the fake model providers.

Every response is made by a `Flavour` (the wire format: openai, anthropic, ollama) from
the current `Behaviour`. The server records each request and each response stream
(concurrency, client disconnects) so tests can check what a backend sent and did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

MODES = ("ok", "status", "close_mid_stream", "malformed", "hang", "not_stream", "slow_headers")


@dataclass
class Behaviour:
    """What the next response does.

    mode: "ok" (stream `text` in `chunks` pieces, `delay` s apart), "status" (HTTP `status`
    with an error body carrying `error_message`), "close_mid_stream" (send `chunks_before_close`
    pieces then drop the connection), "malformed" (one piece, then a fragment that is not
    JSON), "hang" (one piece, then nothing until the client goes away), "not_stream" (200
    with a JSON body), "slow_headers" (no response for `delay` s, then "ok").
    """

    mode: str = "ok"
    text: str = "Hello from the fake model."
    chunks: int = 3
    delay: float = 0.0
    status: int = 401
    error_message: str = "Incorrect API key provided"
    finish_reason: str = "stop"
    usage: tuple[int, int] | None = None
    chunks_before_close: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r} (use {', '.join(MODES)})")

    def pieces(self) -> list[str]:
        n = max(1, min(self.chunks, len(self.text) or 1))
        size, extra = divmod(len(self.text), n)
        out, pos = [], 0
        for i in range(n):
            step = size + (1 if i < extra else 0)
            out.append(self.text[pos : pos + step])
            pos += step
        return out

    def token_counts(self, body: Any) -> tuple[int, int]:
        if self.usage is not None:
            return self.usage
        words = 0
        if isinstance(body, dict):
            for m in body.get("messages") or []:
                if isinstance(m, dict) and isinstance(m.get("content"), str):
                    words += len(m["content"].split())
            if isinstance(body.get("system"), str):
                words += len(body["system"].split())
        return words, len(self.pieces())


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-case names."""
    body: Any
    """Parsed JSON, or the raw bytes when not JSON."""


@dataclass
class StreamRecord:
    path: str
    started: float
    ended: float | None = None
    completed: bool = False
    disconnected: bool = False
    """The client closed the connection before the stream ended."""


class Flavour:
    """A provider wire format. `stream_path` matches the streaming endpoint's path suffix."""

    name = "base"
    stream_path = "/"
    content_type = "text/event-stream"

    def error_body(self, b: Behaviour) -> dict:
        return {"error": {"message": b.error_message, "type": "error", "code": b.status}}

    def start(self, b: Behaviour, body: Any) -> list[bytes]:
        return []

    def piece(self, text: str, body: Any) -> bytes:
        raise NotImplementedError

    def end(self, b: Behaviour, body: Any) -> list[bytes]:
        return []

    def malformed(self) -> bytes:
        return b'data: {"choices": [{"delta": {"content": "trunc\n\n'

    def non_stream(self, b: Behaviour, body: Any) -> dict:
        return {"text": b.text}


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class FakeServer:
    """Handle of a running fake: `.base_url`, `.requests`, `.streams`, `.set_behaviour()`,
    `.enqueue()` (one-off behaviour for the next request), `.wait_disconnect()`, `.stop()`."""

    def __init__(self, flavour: Flavour, base_path: str = "", host: str = "127.0.0.1", port: int = 0, **behaviour: Any) -> None:
        self.flavour = flavour
        self.base_path = base_path
        self.host = host
        self._port = port
        self.behaviour = Behaviour(**behaviour)
        self._queue: list[Behaviour] = []
        self.requests: list[RecordedRequest] = []
        self.streams: list[StreamRecord] = []
        self.active_streams = 0
        self.max_active_streams = 0
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- control (any thread) ------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{self.base_path}"

    def set_behaviour(self, **changes: Any) -> None:
        """Change the behaviour of all later requests (fields of `Behaviour`)."""
        self.behaviour = replace(self.behaviour, **changes)

    def enqueue(self, **changes: Any) -> None:
        """A behaviour (current one plus `changes`) used once, by the next request."""
        self._queue.append(replace(self.behaviour, **changes))

    @property
    def disconnects(self) -> int:
        return sum(1 for s in self.streams if s.disconnected)

    def wait_disconnect(self, count: int = 1, timeout: float = 2.0) -> bool:
        """Block until `count` streams saw their client go away; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.disconnects >= count, timeout)

    def wait_streams_done(self, timeout: float = 2.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.active_streams == 0, timeout)

    def reset(self) -> None:
        self.requests.clear()
        self.streams.clear()
        self.max_active_streams = self.active_streams

    def start(self) -> "FakeServer":
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, self._port)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-{self.flavour.name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "FakeServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- server (its own loop) -------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                self.requests.append(RecordedRequest(method, path, headers, body))
                b = self._queue.pop(0) if self._queue else self.behaviour
                if not await self._respond(reader, writer, path, b, body):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _send_json(self, writer: asyncio.StreamWriter, status: int, data: Any) -> None:
        payload = json.dumps(data).encode()
        reason = {200: "OK", 401: "Unauthorized", 429: "Too Many Requests", 404: "Not Found"}.get(status, "Error")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n".encode() + payload
        )
        await writer.drain()

    async def _respond(self, reader, writer, path: str, b: Behaviour, body: Any) -> bool:
        """Answer one request; False when the connection must close."""
        f = self.flavour
        if not path.split("?")[0].endswith(f.stream_path):
            await self._send_json(writer, 404, {"error": {"message": f"no route {path}"}})
            return True
        if b.mode == "status":
            await self._send_json(writer, b.status, f.error_body(b))
            return True
        if b.mode == "not_stream":
            await self._send_json(writer, 200, f.non_stream(b, body))
            return True
        if b.mode == "slow_headers":
            await asyncio.sleep(b.delay)
            b = replace(b, mode="ok", delay=0.0)
        record = StreamRecord(path, time.monotonic())
        self._stream_started(record)
        eof = asyncio.ensure_future(reader.read(1))
        try:
            writer.write(
                f"HTTP/1.1 200 OK\r\ncontent-type: {f.content_type}\r\n"
                "cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
                # One stream per connection: the disconnect watch (`eof`) reads from the
                # socket, so a kept-alive next request could lose its first byte to it.
                "connection: close\r\n\r\n".encode()
            )
            ok = await self._stream(writer, b, body, eof)
            if ok is None:
                record.disconnected = True
                return False
            record.completed = ok
            return False
        finally:
            if not eof.done():
                eof.cancel()
                try:
                    await eof
                except (asyncio.CancelledError, ConnectionError):
                    pass
            record.ended = time.monotonic()
            self._stream_ended()

    async def _stream(self, writer, b: Behaviour, body: Any, eof: asyncio.Future) -> bool | None:
        """True: complete; False: dropped on purpose; None: the client went away."""
        f = self.flavour

        async def send(data: bytes, pause: float = 0.0) -> bool:
            if pause:
                await asyncio.wait({eof}, timeout=pause)
            if eof.done():
                return False
            writer.write(_chunk(data))
            await writer.drain()
            return True

        for part in f.start(b, body):
            if not await send(part):
                return None
        pieces = b.pieces()
        if b.mode == "close_mid_stream":
            for p in pieces[: b.chunks_before_close]:
                if not await send(f.piece(p, body), b.delay):
                    return None
            writer.transport.abort()
            return False
        if b.mode in ("malformed", "hang"):
            if not await send(f.piece(pieces[0], body)):
                return None
            if b.mode == "malformed":
                if not await send(f.malformed()):
                    return None
                await asyncio.wait({eof}, timeout=5)  # the client should give up now
                if eof.done():
                    return None
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return True
            await eof  # hang until the client disconnects
            return None
        for p in pieces:
            if not await send(f.piece(p, body), b.delay):
                return None
        for part in f.end(b, body):
            if not await send(part):
                return None
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    def _stream_started(self, record: StreamRecord) -> None:
        with self._cond:
            self.streams.append(record)
            self.active_streams += 1
            self.max_active_streams = max(self.max_active_streams, self.active_streams)
            self._cond.notify_all()

    def _stream_ended(self) -> None:
        with self._cond:
            self.active_streams -= 1
            self._cond.notify_all()


def behaviour_fields() -> list[str]:
    return [f.name for f in fields(Behaviour)]


def main(flavour_name: str, start: Callable[..., FakeServer], argv: list[str] | None = None) -> None:
    """`python -m tests.fakes.<x>_server --port P --text ... [--chunks N --delay S --mode M]`."""
    import argparse

    parser = argparse.ArgumentParser(description=f"fake {flavour_name} model server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--text", default=Behaviour.text)
    parser.add_argument("--chunks", type=int, default=Behaviour.chunks)
    parser.add_argument("--delay", type=float, default=Behaviour.delay)
    parser.add_argument("--mode", default="ok", choices=MODES)
    parser.add_argument("--status", type=int, default=Behaviour.status)
    args = parser.parse_args(argv)
    server = start(
        host=args.host, port=args.port, text=args.text, chunks=args.chunks,
        delay=args.delay, mode=args.mode, status=args.status,
    )
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
