"""Device family: device.pair.* and device.token.* (pairing records and device tokens).

Authorization beyond the method scope (operator.pairing), as on the reference: a caller
holding operator.admin may do anything; others may only grant or touch scopes they hold
themselves, and a caller that authenticated with its own device token (no admin) may only
manage its own device.
"""

from __future__ import annotations

from msgspec import UNSET

from krabfast.protocol import devices as dev
from krabfast.protocol.devices import (DevicePairApproveResult, DevicePairListResult,
                                       DevicePairRejectResult, DevicePairRemoveResult,
                                       DevicePairRenameResult, DeviceTokenRevokeResult,
                                       DeviceTokenRotateResult)
from krabfast.protocol.errors import CLOSE_DEVICE_REMOVED, invalid_request
from krabfast.protocol.methods import MethodTable, Reply
from krabfast.protocol.scopes import ADMIN, PAIRING, ROLE_OPERATOR, covers, normalized

table = MethodTable()


def _is_admin(call) -> bool:
    return ADMIN in call.scopes


def _own_device_only(call) -> str | None:
    """The device a non-admin device-token caller is limited to (None: no limit)."""
    if call.auth_method == "device-token" and not _is_admin(call) and call.device is not None:
        return call.device.id
    return None


@table.method("device.pair.list", dev.DevicePairListParams, DevicePairListResult, PAIRING,
              summary="pending pairing requests and paired devices")
def device_pair_list(call, params):
    pairing = call.services.pairing
    own = _own_device_only(call)
    pending = [r for r in pairing.pending() if own is None or r.device_id == own]
    paired = [d for d in pairing.store.list() if own is None or d.device_id == own]
    pending.sort(key=lambda r: r.created_at, reverse=True)
    paired.sort(key=lambda d: d.approved_at or 0, reverse=True)
    return DevicePairListResult(pending=[pairing.pending_entry(r) for r in pending],
                                paired=[pairing.paired_entry(d) for d in paired])


@table.method("device.pair.approve", dev.DevicePairApproveParams, DevicePairApproveResult,
              PAIRING, durable=True,
              summary="approve a pending pairing request")
def device_pair_approve(call, params):
    pairing = call.services.pairing
    request = next((r for r in pairing.pending() if r.request_id == params.request_id), None)
    if not _is_admin(call):
        own = _own_device_only(call)
        if request is None or request.role != ROLE_OPERATOR or (own and request.device_id != own):
            raise invalid_request("device pairing approval denied")
        missing = [s for s in request.scopes if not covers(call.scopes, [s])]
        if missing:
            raise invalid_request(f"missing scope: {missing[0]}")
    if request is None:
        raise invalid_request("unknown requestId")
    device = pairing.approve(request.request_id)
    return DevicePairApproveResult(request_id=request.request_id,
                                   device=pairing.paired_entry(device, with_connected=False))


@table.method("device.pair.reject", dev.DevicePairRejectParams, DevicePairRejectResult,
              PAIRING, durable=True,
              summary="reject a pending pairing request")
def device_pair_reject(call, params):
    pairing = call.services.pairing
    own = _own_device_only(call)
    request = next((r for r in pairing.pending() if r.request_id == params.request_id), None)
    if request is not None and own and request.device_id != own:
        raise invalid_request("device pairing rejection denied")
    if request is None or pairing.reject(request.request_id) is None:
        raise invalid_request("unknown requestId")
    return DevicePairRejectResult(request_id=request.request_id, device_id=request.device_id)


@table.method("device.pair.remove", dev.DevicePairRemoveParams, DevicePairRemoveResult,
              PAIRING, durable=True,
              summary="forget a paired device (its sockets close)")
def device_pair_remove(call, params):
    pairing = call.services.pairing
    device = pairing.store.get(params.device_id)
    own = _own_device_only(call)
    if device is not None and own and (device.device_id != own or device.roles != [ROLE_OPERATOR]):
        raise invalid_request("device pairing removal denied")
    if device is None or not pairing.store.remove(params.device_id):
        raise invalid_request("unknown deviceId")
    return _then_close(call, DevicePairRemoveResult(device_id=params.device_id), params.device_id)


@table.method("device.pair.rename", dev.DevicePairRenameParams, DevicePairRenameResult,
              PAIRING, durable=True,
              summary="set a paired device's operator label")
def device_pair_rename(call, params):
    pairing = call.services.pairing
    label = params.label.strip()
    if not label:
        raise invalid_request("label required")
    own = _own_device_only(call)
    if own and params.device_id != own:
        raise invalid_request("device pairing rename denied")
    if pairing.store.rename(params.device_id, label) is None:
        raise invalid_request("unknown deviceId")
    call.services.bus.publish("device.pair.changed", {})
    return DevicePairRenameResult(device_id=params.device_id, label=label)


def _token_target(call, device_id: str, role: str, what: str):
    """The paired device whose `role` token the caller may manage, or a denial."""
    store = call.services.pairing.store
    device = store.get(device_id)
    denied = invalid_request(f"device token {what} denied")
    if device is None or role not in device.roles:
        raise denied  # unknown device or role
    own = _own_device_only(call)
    if own and device_id != own:
        raise denied  # another device's token
    if role != ROLE_OPERATOR and not _is_admin(call):
        raise denied  # other roles are admin business
    return device


@table.method("device.token.rotate", dev.DeviceTokenRotateParams, DeviceTokenRotateResult,
              PAIRING, durable=True,
              summary="replace a device token (its sockets for that role close)")
def device_token_rotate(call, params):
    device = _token_target(call, params.device_id, params.role, "rotation")
    store = call.services.pairing.store
    current = store.token(params.device_id, params.role)
    scopes = list(params.scopes) if params.scopes is not UNSET else (current.scopes if current else [])
    if not covers(device.scopes, scopes):
        raise invalid_request("device token rotation denied")  # outside the approved baseline
    if params.role == ROLE_OPERATOR and not _is_admin(call) and not covers(call.scopes, scopes):
        raise invalid_request("device token rotation denied")  # the caller lacks those scopes
    now = call.services.clock_ms()
    token = store.issue_token(params.device_id, params.role, normalized(scopes), now)
    own = call.device is not None and call.device.id == params.device_id and \
        call.auth_method == "device-token"
    return _then_close(call, DeviceTokenRotateResult(
        device_id=params.device_id, role=params.role, scopes=normalized(scopes), rotated_at_ms=now,
        token=token if own else UNSET, token_delivery="in-band" if own else "withheld-cross-device"),
        params.device_id, params.role)


@table.method("device.token.revoke", dev.DeviceTokenRevokeParams, DeviceTokenRevokeResult,
              PAIRING, durable=True,
              summary="revoke a device token (its sockets for that role close)")
def device_token_revoke(call, params):
    device = _token_target(call, params.device_id, params.role, "revocation")
    store = call.services.pairing.store
    current = store.token(params.device_id, params.role)
    if params.role == ROLE_OPERATOR and not _is_admin(call) and current is not None \
            and not covers(call.scopes, current.scopes):
        raise invalid_request("device token revocation denied")
    store.revoke_token(params.device_id, params.role)
    # The role is no longer approved: a later shared-secret connect asks again (role-upgrade).
    device.roles = [r for r in device.roles if r != params.role]
    store.save(device)
    return _then_close(call, DeviceTokenRevokeResult(
        device_id=params.device_id, role=params.role, revoked_at_ms=call.services.clock_ms()),
        params.device_id, params.role)


def _then_close(call, result, device_id: str, role: str | None = None) -> Reply:
    """Answer, then close the device's sockets (for `role`, or all): the caller's own
    socket among them, once it has its answer."""
    directory = call.services.directory
    return Reply(result, lambda: directory.close_device(device_id, role, CLOSE_DEVICE_REMOVED,
                                                        "device removed"))
