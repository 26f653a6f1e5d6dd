"""krabfast's node host against an in-process gateway: protocol fallback and the plugin API."""

from __future__ import annotations

import asyncio

import krabfast.connection as connection
from krabfast.gateway.config import GatewayConfig
from krabfast.gateway.server import GatewayServer
from krabfast.node import NodeHost, default_registry
from tests.conftest import free_port


def test_node_host_falls_back_to_protocol_3(tmp_path, monkeypatch):
    # A gateway that only speaks protocol 3 (an older release) answers v4 with
    # PROTOCOL_MISMATCH; the node host retries with 3 and stays there.
    monkeypatch.setattr(connection, "accepted_range", lambda role, mode: (3, 3))
    registry = default_registry()

    @registry.command("demo.echo")
    def echo(params):
        return {"echo": params}

    async def body():
        port = free_port()
        server = GatewayServer(GatewayConfig.resolve(token="T", port=port, state_dir=":memory:"))
        await server.start()
        host = NodeHost(f"ws://127.0.0.1:{port}", token="T", state_dir=tmp_path / "node",
                        registry=registry)
        task = asyncio.ensure_future(host.run())
        try:
            await asyncio.wait_for(host.connected.wait(), 10)
            assert host.protocol == 3
            hello = host.client.hello
            assert hello.protocol == 3 and hello.auth.role == "node" and hello.auth.device_token
            record = server.hub.nodes.store.get(host.node_id)
            assert "demo.echo" in record.declared and "system.which" in record.declared
            # The identity persists: a second host on the same state dir is the same node.
            assert NodeHost("ws://x", state_dir=tmp_path / "node").node_id == host.node_id
        finally:
            await host.stop()
            task.cancel()
            await server.stop()

    asyncio.run(body())
