"""The exported JSON Schema: fresh, valid draft-07, and compatible with the reference's."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from krabfast.methods import METHOD_SPECS
from krabfast.protocol.jsonschema import build_schema, render_schema
from tests import refschema

ROOT = Path(__file__).resolve().parents[2]
OURS = build_schema(METHOD_SPECS)

# Same-named definitions. Outbound: we must send everything the reference requires.
# Inbound: we must not require anything reference clients may omit.
OUTBOUND = ["ResponseFrame", "EventFrame", "ErrorShape", "StateVersion", "HelloOk", "PresenceEntry",
            "Snapshot", "TickEvent", "ShutdownEvent", "DevicePairResolvedEvent", "DeviceTokenRotateResult",
            ("PendingDevice", "DevicePairRequestedEvent")]
INBOUND = ["RequestFrame", "ConnectParams", "DevicePairListParams", "DevicePairApproveParams",
           "DevicePairRejectParams", "DevicePairRemoveParams", "DevicePairRenameParams",
           "DeviceTokenRotateParams", "DeviceTokenRevokeParams"]

needs_reference = pytest.mark.skipif(not refschema.available(), reason="reference schema not installed")


def _ref():
    return refschema._reference_schema()


def test_committed_schema_is_fresh():
    assert (ROOT / "dist" / "protocol.schema.json").read_text() == render_schema(METHOD_SPECS)


def test_committed_swift_models_are_fresh():
    from krabfast.protocol.swift import render_swift

    swift = render_swift(OURS)
    assert (ROOT / "dist" / "GatewayModels.swift").read_text() == swift
    assert "public struct HelloOk: Codable, Sendable {" in swift
    assert "    public let `protocol`: Int" in swift


def test_schema_is_valid_draft7():
    jsonschema.Draft7Validator.check_schema(OURS)
    assert set(OURS) >= {"$schema", "definitions", "methods", "oneOf"}


def _resolve(schema: dict, defs: dict) -> dict:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:  # Optional[X] / X | None: look at the object branch
        objects = [_resolve(s, defs) for s in schema["anyOf"] if _resolve(s, defs).get("type") == "object"]
        if len(objects) == 1:
            return objects[0]
    return schema


def _compare(name: str, ours: dict, theirs: dict, our_defs: dict, ref_defs: dict, outbound: bool, path=""):
    ours, theirs = _resolve(ours, our_defs), _resolve(theirs, ref_defs)
    if theirs.get("type") != "object" or "properties" not in theirs:
        return
    extra = set(ours.get("properties", {})) - set(theirs["properties"])
    assert not extra, f"{name}{path}: properties the reference does not define: {sorted(extra)}"
    ours_req, ref_req = set(ours.get("required", [])), set(theirs.get("required", []))
    if outbound:
        assert ref_req <= ours_req, f"{name}{path}: reference requires {sorted(ref_req - ours_req)}"
    else:
        assert ours_req <= ref_req, f"{name}{path}: we require {sorted(ours_req - ref_req)}"
    for prop, sub in ours.get("properties", {}).items():
        _compare(name, sub, theirs["properties"][prop], our_defs, ref_defs, outbound, f"{path}.{prop}")


@needs_reference
@pytest.mark.parametrize("name", OUTBOUND + INBOUND)
def test_definition_compatible_with_reference(name):
    ours, theirs = name if isinstance(name, tuple) else (name, name)
    ref = _ref()
    _compare(theirs, OURS["definitions"][ours], ref["definitions"][theirs], OURS["definitions"],
             ref["definitions"], outbound=name in OUTBOUND)


@needs_reference
def test_method_scopes_match_reference():
    ref_methods = _ref()["methods"]
    for name, entry in OURS["methods"].items():
        if name in ref_methods:
            assert entry["scope"] == ref_methods[name]["scope"], name


@needs_reference
def test_client_enums_match_reference():
    ref_client = _ref()["definitions"]["ConnectParams"]["properties"]["client"]["properties"]
    ours = OURS["definitions"]["ClientInfo"]["properties"]
    assert sorted(ours["id"]["enum"]) == sorted(ref_client["id"]["enum"])
    assert sorted(ours["mode"]["enum"]) == sorted(ref_client["mode"]["enum"])
