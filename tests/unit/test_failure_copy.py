"""A failed model call in the reference's words (krabfast/models/failure_copy.py): each
expected text below is what the reference was seen to send or keep (2026-12-03, a fake
OpenAI-compatible provider "fake" with model "m")."""

from __future__ import annotations

import pytest

from krabfast.models.failure_copy import error_fields, live_message, transcript_text

TEMP = " This is usually temporary — try again shortly."


@pytest.mark.parametrize("kind, status, said", [
    ("provider", 500, "⚠️ fake/m request failed (provider internal error, HTTP 500)." + TEMP),
    ("rate_limit", 429, "⚠️ API rate limit reached. Please try again later."),
    ("auth", 401, "Authentication failed (provider returned HTTP 401). Your provider token may "
                  "have expired — try the request again in a moment. If the failure persists, "
                  "re-authenticate this provider."),
    ("timeout", None, "LLM request timed out."),
    ("bad_response", None, "⚠️ Agent run failed (model: fake/m)."),
    ("connection", None, "backend's own"),   # the transport's wording stays
    ("provider", 400, "backend's own"),      # a refused request too
])
def test_the_events_message(kind, status, said):
    assert live_message("backend's own", kind, status, "fake/m") == said


@pytest.mark.parametrize("kind, status, partial, kept", [
    ("provider", 500, "", "⚠️ LLM request failed (provider internal error, HTTP 500)." + TEMP),
    ("rate_limit", 429, "", "⚠️ LLM request failed (rate limited, HTTP 429)." + TEMP),
    ("auth", 401, "", "⚠️ LLM request failed (authentication failed, HTTP 401). "
                      "Re-authenticate the provider and try again."),
    ("timeout", None, "Four word a",
     "⚠️ LLM request failed (request timed out)." + TEMP + "\n\nFour word a"),
    ("bad_response", None, "Four word a", "Four word a"),
    ("bad_response", None, "", None),
])
def test_the_transcripts_text(kind, status, partial, kept):
    assert transcript_text(kind, status, partial) == kept


def test_the_events_kind_and_detail():
    assert error_fields("auth", 401, "fake", "m") == {"errorDetail": {
        "provider": "fake", "model": "m", "failoverReason": "auth",
        "providerRuntimeFailureKind": "auth_invalid_token"}}
    assert error_fields("rate_limit", 429, "fake", "m")["errorKind"] == "rate_limit"
    assert error_fields("timeout", None, "fake", "m")["errorDetail"]["failoverReason"] == "timeout"
    assert error_fields("bad_response", None, "fake", "m") == {"errorDetail": {
        "provider": "fake", "model": "m", "providerRuntimeFailureKind": "unclassified"}}
    assert error_fields("connection", None, "fake", "m") == {}
