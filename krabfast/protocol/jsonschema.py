"""Export the protocol as JSON Schema (draft-07), shaped like the reference's file:
top-level `oneOf` over the frames, `definitions`, and a `methods` map giving each
method's required scope (plus our params/result definition names).

The method declarations are passed in (they live with their handlers, in
`krabfast.methods`, a layer above this one): `build_schema(krabfast.methods.METHOD_SPECS)`."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
from typing import Any

import msgspec
import msgspec.inspect as mi

from krabfast.protocol import frames, handshake
from krabfast.protocol.methods import EVENT_SPECS
from krabfast.protocol.version import PROTOCOL_VERSION

SCHEMA_ID = "https://krabfast.dev/protocol.schema.json"


def _root_types(method_specs) -> list[type]:
    roots: list[type] = [frames.RequestFrame, frames.ResponseFrame, frames.EventFrame,
                         frames.ErrorShape, frames.StateVersion, handshake.ConnectChallenge,
                         handshake.ConnectParams, handshake.HelloOk, handshake.PresenceEntry,
                         handshake.Snapshot]
    for spec in method_specs:
        roots += [t for t in (spec.params, spec.result) if t is not None]
    for spec in EVENT_SPECS:
        if spec.payload is not None:
            roots.append(spec.payload)
    return list(dict.fromkeys(roots))


def clean_doc(doc: str) -> str:
    """`inspect.cleandoc`, with trailing whitespace dropped from every line (so whitespace-only
    lines are empty whichever way the docstring was trimmed: Python 3.13 trims at compile time)."""
    return "\n".join(line.rstrip() for line in inspect.cleandoc(doc).split("\n")).strip("\n")


def description(cls: type) -> str | None:
    """A class's description, computed here rather than taken from msgspec: msgspec's
    docstring trimming changed in 0.23 (indented continuation lines), and the text must not
    depend on the msgspec (or Python) version. `clean_doc` of the docstring, minus the
    boilerplate Python generates for undocumented enums and dataclasses (msgspec skips those)."""
    cls = getattr(cls, "__origin__", cls)
    doc = cls.__dict__.get("__doc__")
    if not doc:
        return None
    doc = clean_doc(doc)
    if issubclass(cls, enum.Enum) and doc == "An enumeration.":
        return None
    if dataclasses.is_dataclass(cls) or (issubclass(cls, tuple) and hasattr(cls, "_fields")):
        if doc.startswith(f"{cls.__name__}(") and doc.endswith(")"):
            return None
    return doc or None


def named_classes(types: list[type]) -> dict[str, type]:
    """Every class msgspec makes a definition of (Structs, enums, dataclasses, ...), by name."""
    found: dict[str, type] = {}
    seen: set[int] = set()

    def visit(node: Any) -> None:
        if isinstance(node, (tuple, list)):
            for item in node:
                visit(item)
            return
        if not isinstance(node, (mi.Type, mi.Field)) or id(node) in seen:
            return
        seen.add(id(node))
        cls = getattr(node, "cls", None)
        if isinstance(node, mi.Type) and isinstance(cls, type):
            if found.setdefault(cls.__name__, cls) is not cls:
                # msgspec would qualify both names, differently across versions; and the
                # names are the Swift struct names too.
                raise ValueError(f"two protocol classes are named {cls.__name__}")
        for field in node.__struct_fields__:
            if field != "cls":
                visit(getattr(node, field))

    visit(mi.multi_type_info(types))
    return found


def _definition(schema: dict[str, Any], cls: type) -> dict[str, Any]:
    """One definition, normalised: msgspec's cosmetic `title` (it repeats the definition
    name) dropped, and the description, placed first, derived from the class itself."""
    body = {k: v for k, v in schema.items() if k not in ("title", "description")}
    text = description(cls)
    return {"description": text, **body} if text else body


def build_definitions(roots: list[type]) -> dict[str, Any]:
    """The `definitions` of `roots` and everything they reference, sorted by name."""
    _, components = msgspec.json.schema_components(roots, ref_template="#/definitions/{name}")
    classes = named_classes(roots)
    unnamed = set(components) - set(classes)
    if unnamed:  # e.g. a generic Struct: msgspec's naming of those is its own
        raise ValueError(f"definitions not named after a protocol class: {sorted(unnamed)}")
    return {name: _definition(components[name], classes[name]) for name in sorted(components)}


def _unnamed_result_name(method: str) -> str:
    """`system-presence` -> `SystemPresenceResult`: the definition of a result that is not
    a class of its own (a list of entries)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-._]", method)) + "Result"


def _result_name(spec, definitions: dict[str, Any]) -> str:
    if isinstance(spec.result, type):
        return spec.result.__name__
    name = _unnamed_result_name(spec.name)
    if name not in definitions:
        definitions[name] = _inline_schema(spec.result, spec.name)
    return name


def _pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-._]", name))


def _payload_name(espec, definitions: dict[str, Any]) -> str:
    """An event payload's definition: its class, or for a union of classes (the `chat`
    event's states) a definition named after the event (`ChatEvent`) listing them."""
    if isinstance(espec.payload, type):
        return espec.payload.__name__
    name = _pascal(espec.name) + "Event"
    if name not in definitions:
        (schema,), _ = msgspec.json.schema_components([espec.payload],
                                                      ref_template="#/definitions/{name}")
        definitions[name] = {"description": f"The `{espec.name}` event's payload.", **schema}
    return name


def _inline_schema(result_type, method: str) -> dict[str, Any]:
    (schema,), _ = msgspec.json.schema_components([result_type], ref_template="#/definitions/{name}")
    return {"description": f"The answer to `{method}`.", **schema}


def build_schema(method_specs) -> dict[str, Any]:
    definitions = build_definitions(_root_types(method_specs))
    methods = {}
    for spec in sorted(method_specs, key=lambda s: s.name):
        entry: dict[str, Any] = {"scope": spec.scope}
        if spec.params is not None:
            entry["params"] = spec.params.__name__
        if spec.result is not None:
            entry["result"] = _result_name(spec, definitions)
        if spec.idempotent:
            entry["idempotent"] = True
        methods[spec.name] = entry
    events = {}
    for espec in EVENT_SPECS:
        e: dict[str, Any] = {}
        if espec.payload is not None:
            e["payload"] = _payload_name(espec, definitions)
        if espec.scope:
            e["scope"] = espec.scope
        if espec.droppable:
            e["dropIfSlow"] = True
        events[espec.name] = e
    definitions = dict(sorted(definitions.items()))
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


def render_schema(method_specs) -> str:
    return json.dumps(build_schema(method_specs), indent=2, sort_keys=False) + "\n"
