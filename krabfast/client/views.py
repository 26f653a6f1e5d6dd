"""What the client reads from a gateway, as lenient Structs.

The protocol Structs reject unknown fields (a gateway must not accept what it does not
understand), but a client must: gateways add fields over time (the reference's challenge
carries `capabilities`, its hello-ok `server.buildId`). These views check the fields the
client relies on and ignore the rest.
"""

from __future__ import annotations

import msgspec

UNSET = msgspec.UNSET


class View(msgspec.Struct, rename="camel", kw_only=True):
    pass


class ChallengeView(View):
    nonce: str
    ts: int


class ServerView(View):
    version: str
    conn_id: str


class FeaturesView(View):
    methods: list[str]
    events: list[str]


class AuthView(View):
    role: str
    scopes: list[str]
    device_token: str | msgspec.UnsetType = UNSET
    issued_at_ms: int | msgspec.UnsetType = UNSET


class PolicyView(View):
    max_payload: int
    max_buffered_bytes: int
    tick_interval_ms: int


class HelloView(View):
    type: str
    protocol: int
    server: ServerView
    features: FeaturesView
    auth: AuthView
    policy: PolicyView
    snapshot: dict = {}


class ErrorView(View):
    code: str
    message: str
    details: object = None
    retryable: bool | msgspec.UnsetType = UNSET
    retry_after_ms: int | msgspec.UnsetType = UNSET


class ResponseView(View, tag="res", tag_field="type"):
    id: str
    ok: bool
    payload: object = UNSET
    error: ErrorView | msgspec.UnsetType = UNSET


class EventView(View, tag="event", tag_field="type"):
    event: str
    payload: object = UNSET
    seq: int | msgspec.UnsetType = UNSET
    state_version: dict | msgspec.UnsetType = UNSET


class RequestView(View, tag="req", tag_field="type"):
    id: str
    method: str


frame_decoder = msgspec.json.Decoder(ResponseView | EventView | RequestView)
