"""Device trust: who a device is allowed to be at connect time, and the pairing workflow.

A device proves its key at every connect (device_auth.py). It is then admitted either
with the gateway's shared secret (its pairing record must cover the role and scopes it
asks for, else a pairing request waits for an operator; direct loopback devices are
approved silently unless that is turned off) or with its own device token (which must
cover the scopes asked for). Tokens are bound to (device, role).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from krabfast.connection import is_control_ui
from krabfast.gateway.auth import auth_error
from krabfast.protocol.devices import (DevicePairResolvedEvent, DeviceTokenSummary, PairedDeviceEntry,
                                       PendingDevice)
from krabfast.protocol.errors import CLOSE_DEVICE_REMOVED, CLOSE_POLICY, DetailCode, ErrorCode, GatewayError
from krabfast.protocol.scopes import OPERATOR_SCOPES, SCOPE_BIT, covers, normalized, scope_mask
from krabfast.store.devices import DeviceStore, PairedDevice, PairingRequest

UNSET = msgspec.UNSET
PENDING_TTL_MS = 300_000

_REASONS = {
    "not-paired": ("device is not approved yet", "Approve this device from the pending pairing requests."),
    "role-upgrade": ("device is asking for a higher role than currently approved",
                     "Review the requested role upgrade, then approve the pending request."),
    "scope-upgrade": ("device is asking for more scopes than currently approved",
                      "Review the requested scopes, then approve the pending upgrade."),
}


@dataclass
class Admission:
    scopes: list[str]
    method: str                      # "token" | "password" | "none" | "device-token"
    device_token: str | None = None
    issued_at_ms: int | None = None


def _meta(params, peer_ip: str | None) -> dict:
    client = params.client
    meta = {"displayName": client.display_name, "platform": client.platform,
            "deviceFamily": client.device_family, "clientId": client.id, "clientMode": client.mode,
            "remoteIp": peer_ip}
    return {k: v for k, v in meta.items() if isinstance(v, str) and v}


class Pairing:
    def __init__(self, hub, store: DeviceStore) -> None:
        self.hub = hub
        self.store = store

    # -- connect-time admission ------------------------------------------------------------------
    def admit_shared(self, conn, params, role: str, requested: list[str], method: str) -> Admission:
        """A device that authenticated with the shared secret (or auth none)."""
        hub, store, device = self.hub, self.store, params.device
        now = hub.clock_ms()
        local = self.is_local(conn, params.client)
        if local and (params.client.id, params.client.mode) == ("gateway-client", "backend"):
            return Admission(requested, method)  # local backends skip pairing (no token)
        paired = store.get(device.id)
        reason = None
        if paired is None or paired.public_key != device.public_key:
            reason = "not-paired"
        elif role not in paired.roles:
            reason = "role-upgrade"
        elif not covers(paired.scopes, requested):
            reason = "scope-upgrade"
        if reason is not None:
            meta = _meta(params, None if local else conn.peer_ip)
            if local and hub.config.auto_approve_local:
                request = self._record_request(device, role, requested, meta, now)
                paired = self.approve(request.request_id, via="silent")
            else:
                raise self._pairing_required(reason, device, role, requested, paired, meta, now)
        store.touch(device.id, now, conn.peer_ip)
        # The token the device already holds, if it covers what it asks for now (so two
        # processes sharing an identity do not knock each other's tokens out); else a new one.
        current = store.token(device.id, role)
        if current is not None and covers(current.scopes, requested):
            return Admission(requested, method, store.current_token(device.id, role),
                             current.issued_at)
        scopes = normalized(requested) if role == "operator" else []
        return Admission(requested, method, store.issue_token(device.id, role, scopes, now), now)

    def admit_device_token(self, conn, params, role: str, requested: list[str], token: str) -> Admission:
        store, device = self.store, params.device
        limiter = self.hub.rate_limiter
        key = ("device-token", conn.peer_ip)  # failures counted per address and credential kind
        wait = limiter.retry_after_ms(key, conn.is_local)
        if wait:
            raise auth_error("rate_limited", params.client.id, conn.is_local, wait)
        paired = store.get(device.id)
        found = None
        if paired is not None and paired.public_key == device.public_key:
            found = store.check_token(device.id, role, token)
        if found is None:
            limiter.record_failure(key, conn.is_local)
            raise auth_error("device_token_mismatch", params.client.id, conn.is_local)
        limiter.record_success(key)
        if not covers(found.scopes, requested):
            raise auth_error("scope_mismatch", params.client.id, conn.is_local)
        store.touch(device.id, self.hub.clock_ms(), conn.peer_ip)
        return Admission(requested, "device-token", token, found.issued_at)

    def is_local(self, conn, client) -> bool:
        """Direct loopback, and no web page behind it unless the page is the Control UI or
        WebChat, whose Origin the handshake has already checked (the reference approves
        silently without an Origin header "unless Control UI/webchat"): any other client
        id sent from a page could be a foreign site driving a browser on this machine."""
        if not conn.is_local or conn.peer_ip in self.hub.config.remote_addresses:
            return False
        return conn.browser is None or is_control_ui(client)

    def _record_request(self, device, role, requested, meta, now) -> PairingRequest:
        """Add or refresh the pending request; announce what changed."""
        request, superseded = self.store.add_request(device.id, device.public_key, role, requested,
                                                     meta, now)
        if superseded is not None:
            self.hub.broadcast("device.pair.resolved", DevicePairResolvedEvent(
                request_id=superseded.request_id, device_id=device.id, decision="rejected", ts=now))
        return request

    def _pairing_required(self, reason, device, role, requested, paired, meta, now) -> GatewayError:
        request = self._record_request(device, role, requested,
                                       dict(meta, isRepair=paired is not None), now)
        if request.created_at == now:  # new (a refreshed request keeps its first ts)
            self.hub.broadcast("device.pair.requested", self.pending_entry(request))
        message, hint = _REASONS[reason]
        details = {"code": DetailCode.PAIRING_REQUIRED.value, "reason": reason,
                   "requestId": request.request_id, "remediationHint": hint, "deviceId": device.id,
                   "requestedRole": role}
        if requested:
            details["requestedScopes"] = list(requested)
        if paired is not None and paired.public_key == device.public_key:
            details["approvedRoles"] = sorted(paired.roles)
            details["approvedScopes"] = sorted(paired.scopes)
        return GatewayError(ErrorCode.NOT_PAIRED, f"pairing required: {message}", details=details,
                            close_code=CLOSE_POLICY,
                            close_reason=f"pairing required: {message} (requestId: {request.request_id})")

    # -- operations (methods and silent approval) ------------------------------------------------
    def pending(self) -> list[PairingRequest]:
        cutoff = self.hub.clock_ms() - PENDING_TTL_MS
        live = []
        for request in self.store.requests():
            if (request.refreshed_at or request.created_at) <= cutoff:
                self.store.drop_request(request.request_id)
            else:
                live.append(request)
        return live

    def approve(self, request_id: str, via: str = "owner") -> PairedDevice | None:
        request = next((r for r in self.pending() if r.request_id == request_id), None)
        if request is None:
            return None
        now = self.hub.clock_ms()
        store = self.store
        paired = store.get(request.device_id)
        meta = request.meta
        if paired is None or paired.public_key != request.public_key:
            paired = PairedDevice(request.device_id, request.public_key, [], [], created_at=now)
        paired.roles = sorted(set(paired.roles) | {request.role})
        paired.scopes = sorted(set(paired.scopes) | set(request.scopes))
        paired.approved_at = now
        paired.display_name = meta.get("displayName", paired.display_name)
        paired.platform = meta.get("platform", paired.platform)
        paired.device_family = meta.get("deviceFamily", paired.device_family)
        paired.client_id = meta.get("clientId", paired.client_id)
        paired.client_mode = meta.get("clientMode", paired.client_mode)
        paired.approved_via = via
        store.save(paired)
        store.drop_request(request_id)
        current = store.token(request.device_id, request.role)
        if current is not None:
            # An approved upgrade replaces the token: the old grant must not live on.
            store.issue_token(request.device_id, request.role,
                              normalized(set(current.scopes) | set(request.scopes)), now)
        self.hub.broadcast("device.pair.resolved", DevicePairResolvedEvent(
            request_id=request_id, device_id=request.device_id, decision="approved", ts=now))
        return paired

    def reject(self, request_id: str) -> PairingRequest | None:
        request = next((r for r in self.pending() if r.request_id == request_id), None)
        if request is None:
            return None
        self.store.drop_request(request_id)
        self.hub.broadcast("device.pair.resolved", DevicePairResolvedEvent(
            request_id=request_id, device_id=request.device_id, decision="rejected",
            ts=self.hub.clock_ms()))
        return request

    def close_device_sockets(self, device_id: str, role: str | None = None) -> int:
        """Revoked or removed: the device's open sockets go at once."""
        return self.hub.directory.close_device(device_id, role, CLOSE_DEVICE_REMOVED,
                                               "device removed")

    # -- rendering -------------------------------------------------------------------------------
    def pending_entry(self, request: PairingRequest) -> PendingDevice:
        meta = request.meta
        return PendingDevice(
            request_id=request.request_id, device_id=request.device_id,
            public_key=request.public_key, ts=request.created_at,
            display_name=meta.get("displayName", UNSET), platform=meta.get("platform", UNSET),
            device_family=meta.get("deviceFamily", UNSET), client_id=meta.get("clientId", UNSET),
            client_mode=meta.get("clientMode", UNSET), role=request.role, roles=[request.role],
            scopes=request.scopes or UNSET, remote_ip=meta.get("remoteIp", UNSET), silent=False,
            is_repair=bool(meta.get("isRepair")))

    def paired_entry(self, device: PairedDevice, *, with_connected: bool = True) -> PairedDeviceEntry:
        tokens = []
        for role in device.roles:
            token = self.store.token(device.device_id, role)
            if token is not None:
                tokens.append(DeviceTokenSummary(role=role, scopes=normalized(token.scopes),
                                                 created_at_ms=token.issued_at))
        connected = self.hub.directory.device_connected(device.device_id)
        opt = lambda v: v if v else UNSET  # noqa: E731 - absent fields are omitted, not null
        return PairedDeviceEntry(
            device_id=device.device_id, public_key=device.public_key,
            created_at_ms=device.created_at, approved_at_ms=device.approved_at or device.created_at,
            display_name=opt(device.display_name), operator_label=opt(device.label),
            platform=opt(device.platform), device_family=opt(device.device_family),
            client_id=opt(device.client_id), client_mode=opt(device.client_mode),
            role=device.roles[0] if device.roles else UNSET, roles=device.roles or UNSET,
            scopes=device.scopes or UNSET, approved_via=opt(device.approved_via),
            last_seen_at_ms=device.last_seen_at or UNSET,
            last_seen_reason="connect" if device.last_seen_at else UNSET,
            connected=connected if with_connected else UNSET, tokens=tokens or UNSET)


def operator_scopes_only(scopes) -> list[str]:
    return [s for s in scopes if not s.startswith("operator.") or s in OPERATOR_SCOPES]
