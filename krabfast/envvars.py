"""Environment variables that carry the gateway's shared secret, first match wins.

Below the gateway and its clients alike: the client side (`krabfast.client.hints`, the node
host) names them in its hints without importing the gateway; `krabfast.gateway.config`
re-exports them.
"""

TOKEN_ENV_VARS = ("KRABKRAB_GATEWAY_TOKEN", "krabkrab_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_TOKEN")
PASSWORD_ENV_VARS = ("KRABKRAB_GATEWAY_PASSWORD", "OPENCLAW_GATEWAY_PASSWORD")
