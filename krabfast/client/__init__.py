"""Asyncio client for OpenClaw-compatible gateways (krabfast or the reference)."""

from krabfast.client.client import (GatewayClient, GatewayClientError, GatewayClosed,
                                    GatewayConnectError, RequestError, check_url)

__all__ = ["GatewayClient", "GatewayClientError", "GatewayClosed", "GatewayConnectError",
           "RequestError", "check_url"]
