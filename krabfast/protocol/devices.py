"""Device pairing and device tokens: params, results and events (reference names)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from krabfast.protocol.model import Model, NonEmptyStr, NonNegInt

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType
Label = Annotated[str, Meta(min_length=1, max_length=64)]

class DevicePairListParams(Model):
    pass

class DevicePairApproveParams(Model):
    request_id: NonEmptyStr

class DevicePairRejectParams(Model):
    request_id: NonEmptyStr

class DevicePairRemoveParams(Model):
    device_id: NonEmptyStr

class DevicePairRenameParams(Model):
    device_id: NonEmptyStr
    label: Label

class DeviceTokenRotateParams(Model):
    device_id: NonEmptyStr
    role: NonEmptyStr
    scopes: list[NonEmptyStr] | Unset = UNSET

class DeviceTokenRevokeParams(Model):
    device_id: NonEmptyStr
    role: NonEmptyStr

class PendingDevice(Model):
    """A pairing request waiting for an operator (also the `device.pair.requested` payload)."""

    request_id: NonEmptyStr
    device_id: NonEmptyStr
    public_key: NonEmptyStr
    ts: NonNegInt
    display_name: NonEmptyStr | Unset = UNSET
    platform: NonEmptyStr | Unset = UNSET
    device_family: NonEmptyStr | Unset = UNSET
    client_id: NonEmptyStr | Unset = UNSET
    client_mode: NonEmptyStr | Unset = UNSET
    role: NonEmptyStr | Unset = UNSET
    roles: list[NonEmptyStr] | Unset = UNSET
    scopes: list[NonEmptyStr] | Unset = UNSET
    remote_ip: NonEmptyStr | Unset = UNSET
    silent: bool | Unset = UNSET
    is_repair: bool | Unset = UNSET

class DeviceTokenSummary(Model):
    role: NonEmptyStr
    scopes: list[str]
    created_at_ms: NonNegInt

class PairedDeviceEntry(Model):
    device_id: NonEmptyStr
    public_key: NonEmptyStr
    created_at_ms: NonNegInt
    approved_at_ms: NonNegInt
    display_name: NonEmptyStr | Unset = UNSET
    operator_label: NonEmptyStr | Unset = UNSET
    platform: NonEmptyStr | Unset = UNSET
    device_family: NonEmptyStr | Unset = UNSET
    client_id: NonEmptyStr | Unset = UNSET
    client_mode: NonEmptyStr | Unset = UNSET
    role: NonEmptyStr | Unset = UNSET
    roles: list[NonEmptyStr] | Unset = UNSET
    scopes: list[NonEmptyStr] | Unset = UNSET
    remote_ip: NonEmptyStr | Unset = UNSET
    approved_via: NonEmptyStr | Unset = UNSET
    last_seen_at_ms: NonNegInt | Unset = UNSET
    last_seen_reason: NonEmptyStr | Unset = UNSET
    connected: bool | Unset = UNSET
    tokens: list[DeviceTokenSummary] | Unset = UNSET

class DevicePairListResult(Model):
    pending: list[PendingDevice]
    paired: list[PairedDeviceEntry]

class DevicePairApproveResult(Model):
    request_id: NonEmptyStr
    device: PairedDeviceEntry

class DevicePairRejectResult(Model):
    request_id: NonEmptyStr
    device_id: NonEmptyStr

class DevicePairRemoveResult(Model):
    device_id: NonEmptyStr

class DevicePairRenameResult(Model):
    device_id: NonEmptyStr
    label: NonEmptyStr

class DeviceTokenRotateResult(Model):
    device_id: NonEmptyStr
    role: NonEmptyStr
    scopes: list[str]
    rotated_at_ms: NonNegInt
    token: NonEmptyStr | Unset = UNSET
    token_delivery: Literal["in-band", "withheld-cross-device"] | Unset = UNSET

class DeviceTokenRevokeResult(Model):
    device_id: NonEmptyStr
    role: NonEmptyStr
    revoked_at_ms: NonNegInt

class DevicePairResolvedEvent(Model):
    request_id: NonEmptyStr
    device_id: NonEmptyStr
    decision: NonEmptyStr
    ts: NonNegInt

class DevicePairChangedEvent(Model):
    pass
