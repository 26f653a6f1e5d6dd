"""Fixtures for the interop tests: frames checked against the reference protocol.schema.json."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ref_schema(reference):
    """`check(definition, instance)` -> list of error strings, against protocol.schema.json."""
    import jsonschema

    schema = reference.schema()
    definitions = schema["definitions"]
    validators: dict[str, jsonschema.Draft7Validator] = {}

    def check(name: str, instance) -> list[str]:
        validator = validators.get(name)
        if validator is None:
            assert name in definitions, f"no definition {name} in protocol.schema.json"
            validator = validators[name] = jsonschema.Draft7Validator(
                {"$ref": f"#/definitions/{name}", "definitions": definitions})
        return [f"{name} at {'/'.join(map(str, e.absolute_path)) or '$'}: {e.message[:300]}"
                for e in validator.iter_errors(instance)]

    check.methods = schema.get("methods", {})
    return check
