"""The model server of the `chat` benchmark: an OpenAI-compatible `POST /v1/chat/completions`
that streams a fixed answer in N chunks, `delay` seconds apart (the first one too: the
model's own time to first chunk is `delay`), over HTTP/1.1 keep-alive.

    python -m krabfast.bench.fakemodel --port P --chunks 20 --delay 0.005

It prints one JSON line `{"base_url": ..., "pid": ...}` once it listens. For every streamed
request it records, by the run marker found in the request body (`kfb-` + 16 hex digits, the
last one in the body: the newest user turn), when the request's first bytes arrived (its
own parsing is the model server's time, not the caller's) and when the first content chunk
was written (time.monotonic(), i.e. CLOCK_MONOTONIC, comparable across processes on the
machine); `GET /bench/timings` returns and clears them:
`{"timings": {marker: [t_request, t_first_chunk]}, "requests": n, "streams": n}`.

`FakeModel` (parent side) starts it as a subprocess, fetches the timings and measures the
time to first chunk directly, as a client sees it (`direct_ttfc`). It runs in its own
process so the harness's sockets never delay its chunks (and its CPU is not the gateway's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time

monotonic = time.monotonic
MARKER = re.compile(rb"kfb-[0-9a-f]{16}")
MODEL_ID = "bench-model"
PROVIDER_ID = "bench"
API_KEY = "bench-local-key"  # a marker value: the server is on loopback and checks nothing


def answer_pieces(chunks: int) -> list[str]:
    return [f"tok{i:02d} " for i in range(chunks)]


def _sse(obj) -> bytes:
    data = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    payload = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(payload), payload)  # one HTTP chunk per SSE event


def _chunk(model, delta: dict, finish=None) -> bytes:
    return _sse({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
                 "model": model, "choices": [{"index": 0, "delta": delta,
                                              "finish_reason": finish}]})


class Server:
    def __init__(self, chunks: int, delay: float) -> None:
        self.pieces = answer_pieces(chunks)
        self.delay = delay
        self.timings: dict[str, list[float]] = {}
        self.requests = 0
        self.streams = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = (lines[0].split(" ") + ["", ""])[:2]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await self._body(reader, headers)
                t_request = getattr(reader, "arrived", None)  # a StampedReader's
                if t_request is None:
                    t_request = monotonic()
                else:
                    reader.arrived = None  # the next request's bytes set it again
                self.requests += 1
                if not await self.respond(writer, method, path, body, t_request):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await reader.readline()
                    return b"".join(parts)
                parts.append(await reader.readexactly(size))
                await reader.readline()
        n = int(headers.get("content-length") or 0)
        return await reader.readexactly(n) if n else b""

    async def respond(self, writer, method: str, path: str, body: bytes,
                      t_request: float) -> bool:
        path = path.split("?", 1)[0]
        if method == "GET" and path == "/bench/timings":
            out = {"timings": self.timings, "requests": self.requests, "streams": self.streams}
            self.timings = {}
            self._send_json(writer, 200, out)
        elif method == "GET" and path.endswith("/models"):
            self._send_json(writer, 200, {"object": "list", "data": [
                {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "bench"}]})
        elif method == "POST" and path.endswith("/chat/completions"):
            try:
                req = json.loads(body or b"{}")
            except ValueError:
                req = {}
            model = req.get("model") if isinstance(req, dict) else None
            if isinstance(req, dict) and req.get("stream"):
                await self._stream(writer, req, model, body, t_request)
            else:
                await asyncio.sleep(self.delay)
                self._send_json(writer, 200, {
                    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0,
                    "model": model, "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": "".join(self.pieces)}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": len(self.pieces),
                              "total_tokens": 1 + len(self.pieces)}})
        else:
            self._send_json(writer, 404, {"error": {"message": f"no route {method} {path}",
                                                    "type": "invalid_request_error"}})
        await writer.drain()
        return True

    @staticmethod
    def _send_json(writer, status: int, obj) -> None:
        data = json.dumps(obj).encode()
        writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d"
                     b"\r\nConnection: keep-alive\r\n\r\n%s"
                     % (status, b"OK" if status == 200 else b"Not Found", len(data), data))

    async def _stream(self, writer, req: dict, model, body: bytes, t_request: float) -> None:
        self.streams += 1
        markers = MARKER.findall(body)
        marker = markers[-1].decode() if markers else None
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-cache\r\nConnection: keep-alive\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        writer.write(_chunk(model, {"role": "assistant", "content": ""}))
        await writer.drain()
        for i, piece in enumerate(self.pieces):
            if self.delay:
                await asyncio.sleep(self.delay)
            writer.write(_chunk(model, {"content": piece}))
            if i == 0 and marker is not None:
                self.timings[marker] = [t_request, monotonic()]
            await writer.drain()
        writer.write(_chunk(model, {}, "stop"))
        opts = req.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage"):
            n = len(self.pieces)
            writer.write(_sse({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                               "created": 0, "model": model, "choices": [], "usage": {
                                   "prompt_tokens": 1, "completion_tokens": n,
                                   "total_tokens": 1 + n}}))
        writer.write(_sse(b"[DONE]") + b"0\r\n\r\n")


class StampedReader(asyncio.StreamReader):
    """A StreamReader that notes when bytes arrive while none are awaited (a request's
    first bytes: the handler clears `arrived` once it has read a request)."""

    arrived: float | None = None

    def feed_data(self, data: bytes) -> None:
        if self.arrived is None:
            self.arrived = monotonic()
        super().feed_data(data)


async def serve(host: str, port: int, chunks: int, delay: float) -> None:
    server = Server(chunks, delay)
    loop = asyncio.get_running_loop()

    def protocol() -> asyncio.StreamReaderProtocol:  # what start_server builds, stamped
        return asyncio.StreamReaderProtocol(StampedReader(limit=1 << 24, loop=loop),
                                            server.handle, loop=loop)

    srv = await loop.create_server(protocol, host, port, backlog=1024)
    bound = srv.sockets[0].getsockname()[1]
    print(json.dumps({"base_url": f"http://{host}:{bound}/v1", "pid": _pid()}), flush=True)
    async with srv:
        await srv.serve_forever()


def _pid() -> int:
    import os

    return os.getpid()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m krabfast.bench.fakemodel")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--delay", type=float, default=0.005, help="seconds before each chunk")
    a = p.parse_args(argv)
    try:
        import uvloop

        uvloop.run(serve(a.host, a.port, a.chunks, a.delay))
    except KeyboardInterrupt:
        pass


# -- parent side -------------------------------------------------------------------------------

class FakeModel:
    """The fake as a subprocess: `fm = FakeModel.start(chunks, delay)`, `fm.base_url`,
    `await fm.timings()`, `await fm.direct_ttfc(n)`, `fm.config()`, `fm.stop()`."""

    def __init__(self, proc: subprocess.Popen, base_url: str, chunks: int, delay: float) -> None:
        self.proc = proc
        self.base_url = base_url
        self.chunks = chunks
        self.delay = delay
        rest = base_url.split("://", 1)[1]
        hostport = rest.split("/", 1)[0]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)

    @classmethod
    def start(cls, chunks: int, delay: float, timeout: float = 30.0) -> "FakeModel":
        proc = subprocess.Popen([sys.executable, "-m", "krabfast.bench.fakemodel", "--chunks",
                                 str(chunks), "--delay", str(delay)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, start_new_session=True)
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            raise RuntimeError("the fake model server did not start")
        line = proc.stdout.readline()
        try:
            info = json.loads(line)
        except ValueError:
            proc.kill()
            raise RuntimeError(f"the fake model server did not start: {line[:200]!r}") from None
        return cls(proc, info["base_url"], chunks, delay)

    def config(self) -> dict:
        """The model part of an openclaw.json using this server as the primary model."""
        return {"models": {"providers": {PROVIDER_ID: {
                    "baseUrl": self.base_url, "apiKey": API_KEY, "api": "openai-completions",
                    "models": [{"id": MODEL_ID, "name": "krabfast bench fake model",
                                "contextWindow": 128000, "maxTokens": 4096}]}}},
                "agents": {"defaults": {"model": {"primary": f"{PROVIDER_ID}/{MODEL_ID}"}}}}

    async def _request(self, head: bytes, body: bytes = b""):
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(head + body)
        await writer.drain()
        return reader, writer

    async def timings(self) -> dict:
        """{marker: (t_request, t_first_chunk)} since the last call (and clears them)."""
        reader, writer = await self._request(b"GET /bench/timings HTTP/1.1\r\nHost: fake\r\n\r\n")
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            n = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            out = json.loads(await reader.readexactly(n))
        finally:
            writer.close()
        return {k: tuple(v) for k, v in out["timings"].items()}

    async def direct_ttfc(self, n: int = 10) -> list[float]:
        """Seconds from sending a streamed request to reading its first content chunk, as
        a client on this machine sees it (n sequential requests, one connection)."""
        body = json.dumps({"model": MODEL_ID, "stream": True, "messages": [
            {"role": "user", "content": "direct"}]}).encode()
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: fake\r\nContent-Type: "
                b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        reader, writer = await asyncio.open_connection(self.host, self.port)
        out = []
        try:
            for _ in range(n):
                t0 = monotonic()
                writer.write(head + body)
                buf = b""
                first = None
                while not buf.endswith(b"0\r\n\r\n"):
                    data = await reader.read(65536)
                    if not data:
                        raise RuntimeError("the fake model server closed the connection")
                    buf += data
                    if first is None and b'"content":"tok' in buf:
                        first = monotonic()
                out.append(first - t0)
        finally:
            writer.close()
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


if __name__ == "__main__":
    main()
