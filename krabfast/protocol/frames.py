"""Frame envelopes: a tagged union on `type` (req / res / event).

Inbound request params stay `msgspec.Raw` so the envelope is parsed once and the params
are decoded exactly once, straight into the method's typed params Struct.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from krabfast.protocol.model import Model, NonEmptyStr, NonNegInt, TraceParent

UNSET = msgspec.UNSET


class ErrorShape(Model):
    code: NonEmptyStr
    message: NonEmptyStr
    details: Any = UNSET
    retryable: bool | msgspec.UnsetType = UNSET
    retry_after_ms: NonNegInt | msgspec.UnsetType = UNSET


class StateVersion(Model):
    presence: NonNegInt
    health: NonNegInt


class RequestFrame(Model, tag="req", tag_field="type"):
    id: NonEmptyStr
    method: NonEmptyStr
    params: msgspec.Raw | msgspec.UnsetType = UNSET
    traceparent: TraceParent | msgspec.UnsetType = UNSET


class ResponseFrame(Model, tag="res", tag_field="type"):
    id: NonEmptyStr
    ok: bool
    payload: Any = UNSET
    error: ErrorShape | msgspec.UnsetType = UNSET


class EventFrame(Model, tag="event", tag_field="type"):
    event: NonEmptyStr
    payload: Any = UNSET
    seq: NonNegInt | msgspec.UnsetType = UNSET
    state_version: StateVersion | msgspec.UnsetType = UNSET


GatewayFrame = Union[RequestFrame, ResponseFrame, EventFrame]
