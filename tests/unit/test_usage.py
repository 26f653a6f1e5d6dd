"""Token usage and cost as the reference records them (krabfast/models/usage.py)."""

from __future__ import annotations

import pytest

from krabfast.models.usage import (message_usage, parse_cost, row_cost, session_usage,
                                   wire_message_usage)

PRICE = {"input": 3, "output": 15, "cacheRead": 0.3, "cacheWrite": 3.75}


def test_a_cost_is_checked_and_completed():
    assert parse_cost(None, "c") is None
    assert parse_cost({"input": 1}, "c") == {"input": 1, "output": 0.0, "cacheRead": 0.0,
                                             "cacheWrite": 0.0}
    with pytest.raises(ValueError, match=r"m\.cost\.output: expected a number >= 0"):
        parse_cost({"output": -1}, "m.cost")
    with pytest.raises(ValueError, match=r"m\.cost: expected an object"):
        parse_cost([1], "m.cost")
    with pytest.raises(ValueError, match=r"m\.cost\.input"):
        parse_cost({"input": True}, "m.cost")


def test_a_messages_usage_has_the_references_shape_and_floats():
    usage = message_usage(6006, 2, PRICE)
    assert usage["totalTokens"] == 6008 and usage["cacheRead"] == usage["cacheWrite"] == 0
    # The reference's figures for these counts (probed): per part, then their sum.
    assert usage["cost"]["input"] == 0.018018 and usage["cost"]["output"] == 3e-05
    assert usage["cost"]["total"] == 0.018047999999999998
    assert message_usage(5, 2, None)["cost"]["total"] == 0


def test_a_turn_sets_the_sessions_counters():
    after = session_usage(None, (6006, 2), PRICE)
    assert after == {"inputTokens": 6006, "outputTokens": 2, "totalTokens": 6006,
                     "totalTokensFresh": True, "estimatedCostUsd": 0.018047999999999998}
    # A model without a cost: no cost kept; without counts: the last ones, not fresh.
    assert "estimatedCostUsd" not in session_usage(after, (10, 2), None)
    stale = session_usage(after, None, PRICE)
    assert stale["inputTokens"] == 6006 and stale["totalTokensFresh"] is False
    assert session_usage(None, (0, 4), None)["totalTokensFresh"] is False


def test_a_rows_cost():
    assert row_cost(None, PRICE) is None
    assert row_cost({"inputTokens": 0, "outputTokens": 0}, PRICE) is None  # after a reset
    assert row_cost({"inputTokens": 10, "outputTokens": 0}, None) is None
    assert row_cost({"inputTokens": 10, "outputTokens": 1, "estimatedCostUsd": 1.5}, None) == 1.5


def test_a_usage_stored_by_an_earlier_krabfast_is_shown_in_the_references_shape():
    assert wire_message_usage({"input": 3, "output": 2, "total": 5}) == {
        "input": 3, "output": 2, "totalTokens": 5, "cacheRead": 0, "cacheWrite": 0}
    now = message_usage(3, 2, None)
    assert wire_message_usage(now) is now
    assert wire_message_usage(None) is None
