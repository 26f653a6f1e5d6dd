"""Export the protocol as JSON Schema (draft-07), shaped like the reference's file:
top-level `oneOf` over the frames, `definitions`, and a `methods` map giving each
method's required scope (plus our params/result definition names)."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from krabfast.protocol import frames, handshake
from krabfast.protocol.methods import EVENT_SPECS, METHOD_SPECS
from krabfast.protocol.version import PROTOCOL_VERSION

SCHEMA_ID = "https://krabfast.dev/protocol.schema.json"


def _root_types() -> list[type]:
    roots: list[type] = [frames.RequestFrame, frames.ResponseFrame, frames.EventFrame,
                         frames.ErrorShape, frames.StateVersion, handshake.ConnectChallenge,
                         handshake.ConnectParams, handshake.HelloOk, handshake.PresenceEntry,
                         handshake.Snapshot]
    for spec in METHOD_SPECS:
        roots += [t for t in (spec.params, spec.result) if t is not None]
    for spec in EVENT_SPECS:
        if spec.payload is not None:
            roots.append(spec.payload)
    return list(dict.fromkeys(roots))


def _clean(node: Any) -> Any:
    """Drop msgspec's cosmetic `title` (it repeats the definition name) recursively."""
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def build_schema() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(_root_types(), ref_template="#/definitions/{name}")
    definitions = {name: _clean(components[name]) for name in sorted(components)}
    methods = {}
    for spec in sorted(METHOD_SPECS, key=lambda s: s.name):
        entry: dict[str, Any] = {"scope": spec.scope}
        if spec.params is not None:
            entry["params"] = spec.params.__name__
        if spec.result is not None:
            entry["result"] = spec.result.__name__
        if spec.side_effect:
            entry["idempotent"] = True
        methods[spec.name] = entry
    events = {}
    for espec in EVENT_SPECS:
        e: dict[str, Any] = {}
        if espec.payload is not None:
            e["payload"] = espec.payload.__name__
        if espec.scope:
            e["scope"] = espec.scope
        if espec.droppable:
            e["dropIfSlow"] = True
        events[espec.name] = e
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "krabfast Gateway Protocol",
        "description": "Handshake, request/response, and event frames for the Gateway WebSocket "
                       f"(protocol {PROTOCOL_VERSION}).",
        "oneOf": [{"$ref": "#/definitions/RequestFrame"}, {"$ref": "#/definitions/ResponseFrame"},
                  {"$ref": "#/definitions/EventFrame"}],
        "discriminator": {"propertyName": "type", "mapping": {
            "req": "#/definitions/RequestFrame", "res": "#/definitions/ResponseFrame",
            "event": "#/definitions/EventFrame"}},
        "methods": methods,
        "events": events,
        "definitions": definitions,
    }


def render_schema() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=False) + "\n"
