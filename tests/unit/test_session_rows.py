"""Session rows and sessions.list pages without a gateway (gateway/session_rows.py): the
run's lifecycle as the row shows it, unread after a turn, and the reference's paging."""

from __future__ import annotations

from types import SimpleNamespace

from msgspec import UNSET

from krabfast.gateway.session_rows import list_page, run_error, run_fields, session_row
from krabfast.store.sessions import RunRecord, SessionRecord


def _record(**kw) -> SessionRecord:
    base = dict(key="agent:main:s", agent_id="main", session_id="sid", created_at=1_000,
                updated_at=1_000)
    return SessionRecord(**{**base, **kw})


def _active(started_at=1_000, ended_at=None):
    return SimpleNamespace(run_id="r1", started_at=started_at, ended_at=ended_at,
                           status="running")


def test_a_running_session_has_no_last_run_id_and_an_ended_one_has_its_outcome():
    running = run_fields(_active(), None)
    assert running["status"] == "running" and running["activeRunIds"] == ["r1"]
    assert "lastRunId" not in running
    last = RunRecord("r1", "agent:main:s", "aborted", 1_000, 1_250)
    ended = run_fields(_active(ended_at=1_250), last)  # its end being announced
    assert ended["status"] == "killed" and ended["abortedLastRun"] is True
    assert ended["runtimeMs"] == 250 and ended["lastRunId"] == "r1"
    failed = run_fields(None, RunRecord("r2", "k", "interrupted", 5, 9, error="stopped"))
    assert failed["status"] == "failed" and failed["lastRunError"] == "stopped"
    assert run_fields(None, None) == {"hasActiveRun": False, "activeRunIds": []}


def test_a_turn_makes_a_session_unread_until_it_is_read():
    last = RunRecord("r1", "agent:main:s", "ok", 1_000, 1_100)
    # The first turn created the session in the same millisecond: still unread.
    row = session_row(_record(last_run_id="r1"), last=last, now=2_000)
    assert row["unread"] is True and row["lastInteractionAt"] == 1_000
    read = _record(last_run_id="r1", settings={"last_read_at": 1_500})
    assert session_row(read, last=last, now=2_000)["unread"] is False
    assert session_row(_record(), now=2_000)["unread"] is False  # no turn yet


def _params(limit=UNSET, offset=UNSET):
    return SimpleNamespace(limit=limit, offset=offset)


def test_pages_follow_the_reference():
    items = list(range(5))
    page, fields = list_page(items, _params(limit=2))
    assert page == [0, 1] and fields == {"totalCount": 5, "limitApplied": 2, "nextOffset": 2,
                                         "hasMore": True}
    page, fields = list_page(items, _params(limit=2, offset=4))
    assert page == [4] and fields["offset"] == 4 and fields["nextOffset"] is None
    page, fields = list_page(items, _params())
    assert page == items and fields["limitApplied"] == 100 and "offset" not in fields


def test_a_row_shows_its_models_context_window_and_the_last_turns_usage():
    fresh = session_row(_record(), now=2_000, context_tokens=64_000)
    assert fresh["contextTokens"] == 64_000 and fresh["totalTokensFresh"] is False
    assert "inputTokens" not in fresh and "estimatedCostUsd" not in fresh
    assert "contextTokens" not in session_row(_record(), now=2_000)
    usage = {"inputTokens": 1_000, "outputTokens": 10, "totalTokens": 1_000,
             "totalTokensFresh": True}
    price = {"input": 3, "output": 15, "cacheRead": 0, "cacheWrite": 0}
    # No cost of its own (the turn's model had none): priced at the row's model's cost.
    row = session_row(_record(usage=usage), now=2_000, cost=price)
    assert row["inputTokens"] == 1_000 and row["totalTokensFresh"] is True
    assert row["estimatedCostUsd"] == 1_000 * 3 / 1e6 + 10 * 15 / 1e6
    assert "estimatedCostUsd" not in session_row(_record(usage=usage), now=2_000)
    # The turn's own cost wins over the row's model's.
    row = session_row(_record(usage={**usage, "estimatedCostUsd": 0.25}), now=2_000, cost=price)
    assert row["estimatedCostUsd"] == 0.25


def test_a_long_run_error_is_cut_as_the_reference_cuts_it():
    said = ("Authentication failed (provider returned HTTP 401). Your provider token may have "
            "expired — try the request again in a moment. If the failure persists, "
            "re-authenticate this provider.")
    # What the reference's row showed for this error (probed).
    assert run_error(said) == (
        "Authentication failed (provider returned HTTP 401). ... ave expired — try the request "
        "again in a moment. If the failure persists, re-authenticate this provider.")
    assert run_error("short\n  one") == "short one"
