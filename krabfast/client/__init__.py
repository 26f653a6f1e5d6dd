"""Asyncio client for OpenClaw-compatible gateways (krabfast or the reference)."""

from krabfast.client.client import GatewayClient, GatewayClientError, GatewayClosed, RequestError

__all__ = ["GatewayClient", "GatewayClientError", "GatewayClosed", "RequestError"]
