"""Gateway settings with embedded defaults (no config file needed)."""

from __future__ import annotations

import functools
import ipaddress
import os
from dataclasses import dataclass, field

from krabfast.envvars import PASSWORD_ENV_VARS, TOKEN_ENV_VARS  # noqa: F401 (re-exported)

DEFAULT_PORT = 18789
DEFAULT_BIND = "127.0.0.1"


def env_first(names) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


@functools.lru_cache(maxsize=4096)
def is_loopback(host: str) -> bool:
    if host in ("localhost", "loopback"):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass
class RateLimitConfig:
    max_attempts: int = 10
    window_ms: int = 60_000
    lockout_ms: int = 300_000
    exempt_loopback: bool = True


@dataclass
class GatewayConfig:
    bind: str = DEFAULT_BIND
    port: int = DEFAULT_PORT
    auth_mode: str = "none"  # none | token | password
    token: str | None = None
    password: str | None = None
    tick_interval_ms: int = 30_000
    health_interval_ms: int = 60_000
    max_payload: int = 26_214_400
    max_buffered_bytes: int = 52_428_800
    # Droppable events (presence) skip a socket whose send queue is above this.
    # A socket with more than this queued gets droppable events late (presence: only the
    # newest, once it drains) or not at all, so its responses never queue behind them.
    drop_if_slow_bytes: int = 65_536
    preauth_max_payload: int = 65_536
    handshake_timeout_ms: int = 15_000
    max_preauth_per_ip: int = 32
    ping_interval_s: float = 25.0
    ping_timeout_s: float = 25.0
    idempotency_ttl_ms: int = 300_000
    idempotency_max_entries: int = 1_000
    max_presence_entries: int = 200
    max_queued_system_events: int = 20  # as the reference (MAX_EVENTS)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    # Device pairing: where the SQLite state lives (None: ~/.krabfast or $KRABFAST_STATE_DIR;
    # ":memory:" for throwaway state), and whether direct loopback devices pair silently.
    state_dir: str | None = None
    auto_approve_local: bool = True
    # Peer addresses treated as remote even on loopback (tests stand in a remote device
    # with 127.0.0.2), from $KRABFAST_REMOTE_ADDRESSES (comma separated).
    remote_addresses: frozenset[str] = frozenset()
    # Reverse proxies whose forwarding headers are believed (IPs or CIDRs, as the
    # reference's gateway.trustedProxies); X-Real-IP only with allow_real_ip_fallback.
    trusted_proxies: tuple[str, ...] = ()
    # Plain HTTP on the port: a request head must arrive within this (slow senders).
    http_header_timeout_ms: int = 10_000
    allow_real_ip_fallback: bool = False
    # Node commands: privacy-heavy ones need opting in; deny always wins.
    node_commands_allow: frozenset[str] = frozenset()
    node_commands_deny: frozenset[str] = frozenset()
    # From the config file (--config / $KRABFAST_CONFIG / $OPENCLAW_CONFIG_PATH), passed
    # through: models.providers as {"providers": {id: {baseUrl, apiKey, api, models,
    # timeoutSeconds, headers}}}, agents.defaults.model's primary ("provider/model"), and the
    # file itself (None: no file, embedded defaults).
    models_config: dict | None = None
    primary_model: str | None = None
    config_path: str | None = None
    # The reference's Control UI (krabfast/web/control_ui.py): gateway.controlUi.{enabled,
    # basePath, root, allowedOrigins}; root None: found automatically. allowedOrigins are
    # browser origins (lower-cased, or "*") allowed besides the gateway's own.
    control_ui_enabled: bool = True
    control_ui_base_path: str = ""
    control_ui_root: str | None = None
    control_ui_allowed_origins: frozenset[str] = frozenset()
    # TLS (wss/https on the same port; krabfast/gateway/tls.py): off by default as the
    # reference. No cert/key path: <state dir>/gateway/tls/gateway-{cert,key}.pem, generated
    # at start when both are missing unless tls_auto_generate is off.
    tls_enabled: bool = False
    tls_auto_generate: bool = True
    tls_cert_path: str | None = None
    tls_key_path: str | None = None
    tls_ca_path: str | None = None

    @classmethod
    def resolve(cls, *, auth: str | None = None, token: str | None = None,
                password: str | None = None, **kw) -> "GatewayConfig":
        """Fill secrets from the environment and infer the auth mode when not given."""
        token = token or env_first(TOKEN_ENV_VARS)
        password = password or env_first(PASSWORD_ENV_VARS)
        if auth is None:
            auth = "token" if token else "password" if password else "none"
        timeout = env_first(("KRABFAST_HANDSHAKE_TIMEOUT_MS", "OPENCLAW_HANDSHAKE_TIMEOUT_MS"))
        if timeout and "handshake_timeout_ms" not in kw:
            kw["handshake_timeout_ms"] = int(timeout)
        remote = env_first(("KRABFAST_REMOTE_ADDRESSES",))
        if remote and "remote_addresses" not in kw:
            kw["remote_addresses"] = frozenset(a.strip() for a in remote.split(",") if a.strip())
        header_timeout = env_first(("KRABFAST_HTTP_HEADER_TIMEOUT_MS",))
        if header_timeout and "http_header_timeout_ms" not in kw:
            kw["http_header_timeout_ms"] = int(header_timeout)
        ping = env_first(("KRABFAST_PING_INTERVAL_MS",))
        if ping and "ping_interval_s" not in kw:
            kw["ping_interval_s"] = int(ping) / 1000
        cfg = cls(auth_mode=auth, token=token, password=password, **kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.auth_mode not in ("none", "token", "password"):
            raise ValueError(f"unknown auth mode {self.auth_mode!r} (use none, token or password)")
        if self.auth_mode == "token" and not self.token:
            raise ValueError("--auth token needs a token: pass --token or set KRABKRAB_GATEWAY_TOKEN "
                             "(or OPENCLAW_GATEWAY_TOKEN)")
        if self.auth_mode == "password" and not self.password:
            raise ValueError("--auth password needs --password (or KRABKRAB_GATEWAY_PASSWORD)")
        if self.auth_mode == "none" and not is_loopback(self.bind):
            raise ValueError(
                f"refusing to bind {self.bind} without auth: a non-loopback gateway must use "
                "--auth token (with --token) or --auth password (with --password)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port} is not a TCP port: use 1-65535 (0 picks a free port)")
        if self.tick_interval_ms < 1:
            raise ValueError("--tick-interval-ms must be >= 1")
        if not 0 < self.drop_if_slow_bytes <= self.max_buffered_bytes:
            raise ValueError("--drop-if-slow-bytes must be > 0 and <= --max-buffered-bytes")
        if self.control_ui_root and not os.path.isfile(
                os.path.join(os.path.expanduser(self.control_ui_root), "index.html")):
            raise ValueError(f"--control-ui-root {self.control_ui_root}: no index.html there "
                             "(expected an installed openclaw package's dist/control-ui)")
