"""Self-checks of the integration harness: frame validation is live and catches drift."""

from __future__ import annotations

import os

import pytest

from tests.integration import helpers


def test_reference_schema_validation_is_active(schema_active):
    if not schema_active:
        if os.environ.get("KRABFAST_REQUIRE_REFERENCE") == "1":
            pytest.fail("reference schema required but unavailable")
        pytest.skip("reference schema unavailable: frames are not validated "
                    "(set KRABFAST_REFERENCE_SCHEMA)")
    # A frame the reference would reject is recorded (and would fail its test).
    helpers.validate(b'{"type":"event","event":"tick","payload":{"ts":-1},"seq":1}')
    helpers.validate(b'{"type":"res","id":"1","ok":false,"error":{"code":"X"}}')
    assert len(helpers.FRAME_ERRORS) == 2, helpers.FRAME_ERRORS
    helpers.FRAME_ERRORS.clear()
