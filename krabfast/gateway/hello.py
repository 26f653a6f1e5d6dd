"""hello-ok, built from cached pieces.

Every connect answers with a hello-ok of ~1 KB that differs from the previous one only in
connId, uptime, state versions and the caller's grant. Encoding the whole `HelloOk` Struct
each time was the largest single cost of a handshake; this builds the same bytes from
fragments encoded once (per health/presence version, per grant). `HelloOk` stays the
schema: tests check `encode()` == encoding `build()`.
"""

from __future__ import annotations

import msgspec

from krabfast.protocol.handshake import HelloAuth, HelloOk, Policy, ServerInfo

_encode = msgspec.json.Encoder().encode


class HelloEncoder:
    def __init__(self, hub) -> None:
        self.hub = hub
        cfg = hub.config
        self.policy = Policy(max_payload=cfg.max_payload, max_buffered_bytes=cfg.max_buffered_bytes,
                             tick_interval_ms=cfg.tick_interval_ms)
        self._prefix: dict[int, bytes] = {}
        self._auth: dict[tuple[str, tuple[str, ...]], bytes] = {}
        self._features = b""
        self._features_of = None
        self._tail = b',"policy":' + _encode(self.policy) + b"}"
        self._auth_mode = _encode(cfg.auth_mode)
        self._session_defaults = _encode(hub.session_defaults)
        self._health_json = b""
        self._health_of = None

    def build(self, conn_id: str, protocol: int, role: str, scopes: list[str], can_read: bool,
              device_token: str | None = None, issued_at_ms: int | None = None) -> HelloOk:
        """The hello-ok Struct (the slow, obviously-right form)."""
        hub = self.hub
        auth = HelloAuth(role=role, scopes=list(scopes))
        if device_token is not None:
            auth = HelloAuth(role=role, scopes=list(scopes), device_token=device_token,
                             issued_at_ms=issued_at_ms)
        return HelloOk(type="hello-ok", protocol=protocol,
                       server=ServerInfo(version=hub.server_version, conn_id=conn_id),
                       features=hub.features, snapshot=hub.snapshot(can_read=can_read),
                       auth=auth, policy=self.policy)

    def encode(self, conn_id: str, protocol: int, role: str, scopes, can_read: bool,
               device_token: str | None = None, issued_at_ms: int | None = None) -> bytes:
        """Bytes identical to `_encode(self.build(...))`."""
        hub = self.hub
        prefix = self._prefix.get(protocol)
        if prefix is None:
            prefix = self._prefix[protocol] = (
                b'{"type":"hello-ok","protocol":%d,"server":{"version":%b,"connId":'
                % (protocol, _encode(hub.server_version)))
        if self._features_of is not hub.features:
            self._features = b'},"features":' + _encode(hub.features) + b',"snapshot":'
            self._features_of = hub.features
        health = hub.health_snapshot()
        if self._health_of is not health:
            self._health_json = _encode(health)
            self._health_of = health
        if device_token is not None:  # per connection: never cached
            auth = _encode(HelloAuth(role=role, scopes=list(scopes), device_token=device_token,
                                     issued_at_ms=issued_at_ms))
        else:
            key = (role, tuple(scopes))
            auth = self._auth.get(key)
            if auth is None:
                auth = _encode(HelloAuth(role=role, scopes=list(scopes)))
                if len(self._auth) < 256:
                    self._auth[key] = auth
        presence = bytes(hub.presence_json()) if can_read else b"[]"
        snapshot = (b'{"presence":%b,"health":%b,"stateVersion":{"presence":%d,"health":%d},'
                    b'"uptimeMs":%d,"authMode":%b,"sessionDefaults":%b}'
                    % (presence, self._health_json, hub.presence.version, hub.health_version,
                       hub.uptime_ms(), self._auth_mode, self._session_defaults))
        return b"".join((prefix, _encode(conn_id), self._features, snapshot, b',"auth":', auth,
                         self._tail))
