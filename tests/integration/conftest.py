"""Fixtures for the integration suite: real `python -m krabfast gateway` processes on
loopback, and schema validation of every frame the tests receive.

Server processes come from `gateway_server` / `gateway_server_module` in tests/conftest.py
(subprocess, free port, SIGTERM at teardown).
"""

from __future__ import annotations

import os

import pytest

from tests import refschema
from tests.integration import helpers


@pytest.fixture(autouse=True)
def _frames_match_reference_schema():
    """Fail any test during which krabfast sent a frame the reference schema rejects."""
    helpers.FRAME_ERRORS.clear()
    yield
    errors = list(helpers.FRAME_ERRORS)
    helpers.FRAME_ERRORS.clear()
    assert not errors, "frames not valid against the reference schema:\n" + "\n".join(errors[:5])


@pytest.fixture(scope="session")
def schema_active() -> bool:
    """True when the reference schema is loaded (validation is otherwise a no-op)."""
    if os.environ.get("KRABFAST_REQUIRE_REFERENCE") == "1":
        assert refschema.available(), "KRABFAST_REQUIRE_REFERENCE=1 but no reference schema"
    return refschema.available()


@pytest.fixture(scope="module")
def gw(gateway_server_module):
    """One token-auth gateway (token "T") shared by a test module."""
    return gateway_server_module("--token", helpers.TOKEN)
