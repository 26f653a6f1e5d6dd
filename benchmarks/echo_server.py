"""A bare picows + orjson WebSocket server shaped like an OpenClaw gateway, doing no protocol
work: the floor that `krabfast bench --vs-reference` compares the gateways against.

- on open: a `connect.challenge` event;
- a `connect` request: a minimal hello-ok-shaped `res` (any token is accepted);
- `system-event {text}`: a `presence` event {presence:[{text, ts}]} to every connected socket
  (own `seq` each), then `res ok`;
- any other request: a `res` with a fixed small payload;
- a `tick` event to every connected socket every --tick-interval-ms.

    python benchmarks/echo_server.py --port 18790 [--host 127.0.0.1] [--tick-interval-ms 30000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import time
import uuid

import orjson
from picows import WSListener, WSMsgType, ws_create_server

PAYLOAD = b'{"ok":true,"echo":"krabfast-bench"}'


class Hub:
    def __init__(self, tick_interval_ms: int) -> None:
        self.tick_interval_ms = tick_interval_ms
        self.clients: set["EchoListener"] = set()
        self.presence_version = 0

    def hello(self, conn_id: str) -> bytes:
        return orjson.dumps({
            "type": "hello-ok", "protocol": 4,
            "server": {"version": "echo", "connId": conn_id},
            "features": {"methods": [], "events": []},
            "snapshot": {"presence": [], "health": {}, "stateVersion": {"presence": 0, "health": 0},
                         "uptimeMs": 0},
            "auth": {"role": "operator", "scopes": ["operator.admin"]},
            "policy": {"maxPayload": 26214400, "maxBufferedBytes": 52428800,
                       "tickIntervalMs": self.tick_interval_ms},
        })

    def broadcast(self, event: str, payload: bytes, state_version: bytes = b"") -> None:
        head = b'{"type":"event","event":"' + event.encode() + b'","payload":' + payload + b',"seq":'
        tail = (b',"stateVersion":' + state_version if state_version else b"") + b"}"
        for client in self.clients:
            client.seq += 1
            client.transport.send(WSMsgType.TEXT, head + b"%d" % client.seq + tail)

    async def ticker(self) -> None:
        interval = self.tick_interval_ms / 1000
        next_at = time.monotonic() + interval
        while True:  # on a fixed schedule: a long broadcast must not delay the next tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            self.broadcast("tick", b'{"ts":%d}' % int(time.time() * 1000))


class EchoListener(WSListener):
    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub
        self.transport = None
        self.authed = False
        self.seq = 0

    def on_ws_connected(self, transport) -> None:
        self.transport = transport
        challenge = {"type": "event", "event": "connect.challenge",
                     "payload": {"nonce": str(uuid.uuid4()), "ts": int(time.time() * 1000)}}
        transport.send(WSMsgType.TEXT, orjson.dumps(challenge))

    def on_ws_frame(self, transport, frame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.CLOSE:
            if frame.payload_size >= 2:
                transport.send_close(frame.get_close_code())
            else:
                transport.send(WSMsgType.CLOSE, b"")
            transport.disconnect()
            return
        if kind is not WSMsgType.TEXT:
            return
        try:
            msg = orjson.loads(frame.get_payload_as_bytes())
            rid, method = msg["id"], msg["method"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            transport.send_close(1008)
            transport.disconnect()
            return
        head = b'{"type":"res","id":' + orjson.dumps(rid) + b',"ok":true,"payload":'
        if not self.authed:
            if method != "connect":
                transport.send_close(1008)
                transport.disconnect()
                return
            self.authed = True
            self.hub.clients.add(self)
            transport.send(WSMsgType.TEXT, head + self.hub.hello(uuid.uuid4().hex) + b"}")
        elif method == "system-event":
            params = msg.get("params") or {}
            entry = {"text": str(params.get("text", "")), "ts": int(time.time() * 1000)}
            hub = self.hub
            hub.presence_version += 1
            hub.broadcast("presence", orjson.dumps({"presence": [entry]}),
                          b'{"presence":%d,"health":1}' % hub.presence_version)
            transport.send(WSMsgType.TEXT, head + b'{"ok":true}}')
        else:
            transport.send(WSMsgType.TEXT, head + PAYLOAD + b"}")

    def on_ws_disconnected(self, transport) -> None:
        self.hub.clients.discard(self)


async def serve(host: str, port: int, tick_interval_ms: int) -> None:
    hub = Hub(tick_interval_ms)
    server = await ws_create_server(lambda _request: EchoListener(hub), host, port,
                                    max_frame_size=26214400, backlog=4096)
    print(f"echo server listening on ws://{host}:{port}", flush=True)
    ticker = asyncio.ensure_future(hub.ticker())
    try:
        await server.serve_forever()
    finally:
        ticker.cancel()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18790)
    p.add_argument("--tick-interval-ms", type=int, default=30_000)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.getLogger("picows").setLevel(logging.ERROR)
    import uvloop

    try:
        uvloop.run(serve(args.host, args.port, args.tick_interval_ms))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
