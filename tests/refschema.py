"""Validate frames krabfast emits against the *reference's* published JSON Schema.

Used by the unit and integration harnesses: every frame a test sees is checked here, so
any drift from what real OpenClaw clients accept fails the test that produced it.
"""

from __future__ import annotations

import functools
import json
import os

import jsonschema

_DEFS = ("HelloOk", "ErrorShape", "TickEvent", "ShutdownEvent", "PresenceEntry",
         "MissingScopeErrorDetails", "GatewayFrame")


@functools.lru_cache(maxsize=1)
def _reference_schema() -> dict | None:
    path = os.environ.get("KRABFAST_REFERENCE_SCHEMA")
    if not path:
        try:
            from krabfast.reference import ensure_installed
        except ImportError:
            return None
        try:
            path = str(ensure_installed().protocol_schema)
        except Exception:
            if os.environ.get("KRABFAST_REQUIRE_REFERENCE") == "1":
                raise
            return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def available() -> bool:
    return _reference_schema() is not None


# Methods whose answers the reference schema defines (checked whenever a test sees one).
_RESULT_DEFINITIONS = {
    "models.list": "ModelsListResult",
    "commands.list": "CommandsListResult",
    "agents.list": "AgentsListResult",
    "agent.identity.get": "AgentIdentityResult",
    "sessions.resolve": "SessionsResolveResult",
}


@functools.lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.Draft7Validator:
    root = _reference_schema()
    defs = root["definitions"]
    if name == "health":
        schema = dict(defs["Snapshot"]["properties"]["health"])
    elif name == "frame":
        schema = {"oneOf": root["oneOf"]}
    else:
        schema = {"$ref": f"#/definitions/{name}"}
    schema["definitions"] = defs
    return jsonschema.Draft7Validator(schema)


def check(name: str, value) -> None:
    errors = sorted(validator(name).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        raise AssertionError(f"not valid as reference {name} at {list(e.absolute_path)}: {e.message}"
                             f"\n{json.dumps(value)[:2000]}")


def check_frame(data: bytes | str, method: str | None = None) -> dict:
    """Validate one emitted frame (and the payloads we know the reference types of)."""
    frame = json.loads(data)
    if not available():
        return frame
    check("frame", frame)
    kind = frame["type"]
    if kind == "res":
        if frame["ok"]:
            payload = frame.get("payload")
            if isinstance(payload, dict) and payload.get("type") == "hello-ok":
                check("HelloOk", payload)
            elif method == "health":
                check("health", payload)
            elif method == "system-presence":
                for entry in payload:
                    check("PresenceEntry", entry)
            elif method == "device.token.rotate":
                check("DeviceTokenRotateResult", payload)
            elif method in _RESULT_DEFINITIONS:
                check(_RESULT_DEFINITIONS[method], payload)
        else:
            err = frame["error"]
            check("ErrorShape", err)
            details = err.get("details")
            if isinstance(details, dict) and details.get("code") == "MISSING_SCOPE":
                check("MissingScopeErrorDetails", details)
    elif kind == "event":
        name, payload = frame["event"], frame.get("payload")
        if name == "tick":
            check("TickEvent", payload)
        elif name == "shutdown":
            check("ShutdownEvent", payload)
        elif name == "health":
            check("health", payload)
        elif name == "presence":
            for entry in payload["presence"]:
                check("PresenceEntry", entry)
        elif name == "device.pair.requested":
            check("DevicePairRequestedEvent", payload)
        elif name == "device.pair.resolved":
            check("DevicePairResolvedEvent", payload)
        elif name == "chat":
            check("ChatEvent", payload)
        elif name == "agent":
            # The reference's agent events carry sessionKey and agentId, its lifecycle
            # events sessionId too (observed; its schema's AgentEvent lists none of them).
            check("AgentEvent", {k: v for k, v in payload.items()
                                 if k not in ("sessionKey", "agentId", "sessionId")})
        elif name == "connect.challenge":
            assert isinstance(payload["nonce"], str) and payload["nonce"]
            assert isinstance(payload["ts"], int) and payload["ts"] >= 0
    return frame
