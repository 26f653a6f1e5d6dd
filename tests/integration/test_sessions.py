"""The sessions surface against a real gateway (offline model), as the reference serves it:
sessions.list pages and filters, rows that carry the last run's outcome, sessions.changed
along a run's lifecycle, sessions.patch of settings and archived/pinned/unread (checks
first: a refused patch changes nothing), sessions.create with a first message. Every
frame is checked against the reference's schema (tests/refschema.py)."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.helpers import TOKEN, RawWS, run


@pytest.fixture(scope="module")
def gateway(gateway_server_module):
    return gateway_server_module("--token", TOKEN)


async def _operator(url, scopes=("operator.admin",)):
    return await RawWS.connected(url, scopes=list(scopes), client_id="cli", mode="cli")


async def _list(ws, **params) -> dict:
    res = await ws.call("sessions.list", params)
    assert res["ok"], res
    return res["payload"]


def test_sessions_list_pages_and_filters(gateway):
    async def main():
        ws = await _operator(gateway.url)
        tag = f"pg{uuid.uuid4().hex[:8]}"
        keys = []
        for i in range(5):
            created = (await ws.call("sessions.create", {"label": f"{tag} {i}"}))["payload"]
            keys.append(created["key"])
        first = await _list(ws, search=tag, limit=2)
        assert first["count"] == 2 and first["totalCount"] == 5 and first["limitApplied"] == 2
        assert first["hasMore"] is True and first["nextOffset"] == 2 and "offset" not in first
        # Newest first (updatedAt; sessions created in one millisecond tie, and the tie's
        # order is the list's own): the first page is the head of the whole list.
        whole = (await _list(ws, search=tag))["sessions"]
        stamps = [r["updatedAt"] for r in whole]
        assert stamps == sorted(stamps, reverse=True)
        assert [r["key"] for r in first["sessions"]] == [r["key"] for r in whole][:2]
        second = await _list(ws, search=tag, limit=2, offset=first["nextOffset"])
        assert second["offset"] == 2 and second["nextOffset"] == 4
        last = await _list(ws, search=tag, limit=2, offset=4)
        assert last["count"] == 1 and last["hasMore"] is False and last["nextOffset"] is None
        paged = first["sessions"] + second["sessions"] + last["sessions"]
        assert sorted(r["key"] for r in paged) == sorted(keys)
        assert (await _list(ws, search=tag))["limitApplied"] == 100  # the reference's default
        assert [r["key"] for r in (await _list(ws, label=f"{tag} 3"))["sessions"]] == [keys[3]]
        # Facets krabfast sessions never have match nothing, as on the reference.
        spawned = await _list(ws, spawnedBy=keys[0])
        assert spawned["count"] == 0 and spawned["totalCount"] == 0
        assert (await _list(ws, search=tag, agentId="elsewhere"))["totalCount"] == 0
        assert (await _list(ws, search=tag, activeMinutes=5))["totalCount"] == 5
        # Archived sessions leave the default list.
        row = (await ws.call("sessions.describe", {"key": keys[1]}))["payload"]["session"]
        archived = await ws.call("sessions.patch", {"key": keys[1], "archived": True,
                                                    "expectedSessionId": row["sessionId"]})
        assert archived["ok"] and archived["payload"]["entry"]["archived"] is True
        assert (await _list(ws, search=tag))["totalCount"] == 4
        only = await _list(ws, search=tag, archived=True)
        assert [r["key"] for r in only["sessions"]] == [keys[1]]
        assert (await _list(ws, search=tag, archived="all"))["totalCount"] == 5
        # Sessions without a turn are left out when one is required.
        assert (await _list(ws, search=tag, requireLastInteraction=True))["totalCount"] == 0
        await ws.close()
    run(main())


def test_rows_and_sessions_changed_follow_a_run(gateway):
    async def main():
        ws = await _operator(gateway.url)
        sub = await _operator(gateway.url, scopes=("operator.read",))
        await sub.call("sessions.subscribe", {})
        key = f"agent:main:life-{uuid.uuid4().hex[:8]}"
        run_id = f"life-{uuid.uuid4().hex[:8]}"
        await ws.call("chat.send", {"sessionKey": key, "message": "how does it end",
                                    "idempotencyKey": run_id})
        end = await sub.event("sessions.changed", 10, lambda f: f["payload"].get("sessionKey")
                              == key and f["payload"].get("phase") == "end")
        await sub.barrier()
        mine = [f["payload"] for f in sub.events("sessions.changed")
                if f["payload"].get("sessionKey") == key]
        assert [p.get("reason") or p.get("phase") for p in mine] == \
            ["create", "send", "start", "end"]
        start = mine[2]
        assert start["runId"] == run_id and start["status"] == "running"
        assert start["session"]["status"] == "running" and "lastRunId" not in start["session"]
        done = end["payload"]
        assert done["runId"] == run_id and done["status"] == "done"
        assert done["sessionId"] == done["session"]["sessionId"] and done["kind"] == "direct"
        row = done["session"]
        assert row["status"] == "done" and row["lastRunId"] == run_id
        assert row["abortedLastRun"] is False
        assert row["endedAt"] >= row["startedAt"] and row["runtimeMs"] == \
            row["endedAt"] - row["startedAt"]
        described = (await ws.call("sessions.describe", {"key": key}))["payload"]["session"]
        assert described["status"] == "done" and described["lastRunId"] == run_id
        # A turn since the session was last read makes it unread, until it is read.
        assert described["unread"] is True and described["lastInteractionAt"] > 0
        read = (await ws.call("sessions.patch", {"key": key, "unread": False}))["payload"]
        assert read["entry"]["unread"] is False
        listed = await _list(ws, search=key, requireLastInteraction=True)
        assert [r["key"] for r in listed["sessions"]] == [key]
        await ws.close()
        await sub.close()
    run(main())


def test_rows_show_a_derived_title_and_the_last_message_when_asked(gateway):
    """As the reference: the label (else the display name; none from the messages), and
    the newest message, flattened; only with includeDerivedTitles / includeLastMessage."""
    async def main():
        ws = await _operator(gateway.url)
        key = f"agent:main:title-{uuid.uuid4().hex[:8]}"
        run_id = f"title-{uuid.uuid4().hex[:8]}"
        await ws.call("chat.send", {"sessionKey": key, "idempotencyKey": run_id,
                                    "message": "Hi. fix the **flaky** test please"})
        final = await ws.event("chat", 10, lambda f: f["payload"].get("runId") == run_id
                               and f["payload"]["state"] == "final")
        reply = final["payload"]["message"]["content"][0]["text"]
        plain = (await _list(ws, search=key))["sessions"][0]
        assert "derivedTitle" not in plain and "lastMessagePreview" not in plain
        row = (await _list(ws, search=key, includeDerivedTitles=True,
                           includeLastMessage=True))["sessions"][0]
        assert "derivedTitle" not in row  # no label, no display name
        assert row["lastMessagePreview"] == reply.replace("**", "")[:237] + "..." \
            if len(reply.replace("**", "")) > 240 else reply.replace("**", "")
        described = (await ws.call("sessions.describe", {
            "key": key, "includeLastMessage": True}))["payload"]["session"]
        assert described["lastMessagePreview"] == row["lastMessagePreview"]
        assert "derivedTitle" not in described
        await ws.call("sessions.patch", {"key": key, "label": f"named {run_id}"})
        row = (await _list(ws, search=key, includeDerivedTitles=True))["sessions"][0]
        assert row["derivedTitle"] == f"named {run_id}"
        await ws.call("sessions.reset", {"key": key})
        row = (await _list(ws, search=key, includeDerivedTitles=True,
                           includeLastMessage=True))["sessions"][0]
        assert row["derivedTitle"] == f"named {run_id}" and "lastMessagePreview" not in row
        await ws.close()
    run(main())


def test_sessions_patch_settings_and_flags(gateway):
    async def main():
        ws = await _operator(gateway.url)
        sub = await _operator(gateway.url, scopes=("operator.read",))
        await sub.call("sessions.subscribe", {})
        label = f"patch {uuid.uuid4().hex[:8]}"
        created = (await ws.call("sessions.create", {"label": label}))["payload"]
        key, sid = created["key"], created["sessionId"]

        async def patch(**params):
            return await ws.call("sessions.patch", {"key": key, **params})

        async def row():
            return (await ws.call("sessions.describe", {"key": key}))["payload"]["session"]

        # The offline model does not reason: "off" is its only thinking level (a model
        # configured with `reasoning: false` on the reference is the same).
        high = await patch(thinkingLevel="high", icon="🦀")
        assert not high["ok"] and high["error"]["message"] == (
            'thinkingLevel "high" is not supported for krabfast/offline (use off)')
        entry = (await patch(thinkingLevel="OFF", icon="🦀", pinned=True))["payload"]["entry"]
        assert entry["thinkingLevel"] == "off" and entry["icon"] == "🦀"
        assert entry["pinned"] is True and isinstance(entry["pinnedAt"], (int, float))
        # Archiving needs the session id the caller saw, as on the reference.
        refused = await patch(archived=True)
        assert not refused["ok"] and "expectedSessionId" in refused["error"]["message"]
        stale = await patch(archived=True, expectedSessionId="not-this-one")
        assert not stale["ok"]
        assert stale["error"]["details"] == {"reason": "session-changed"}
        assert (await row())["archived"] is False and (await row())["pinned"] is True
        entry = (await patch(archived=True, expectedSessionId=sid))["payload"]["entry"]
        assert entry["archived"] is True and entry["pinned"] is False  # archiving unpins
        assert "pinnedAt" not in entry and isinstance(entry["archivedAt"], (int, float))
        pin = await patch(pinned=True)
        assert not pin["ok"] and "archived" in pin["error"]["message"]
        entry = (await patch(archived=False, expectedSessionId=sid))["payload"]["entry"]
        assert entry["archived"] is False and "archivedAt" not in entry
        entry = (await patch(unread=True))["payload"]["entry"]
        assert entry["unread"] is True and entry["markedUnreadAt"] > 0
        entry = (await patch(statusNote="  waiting   on you ", attention="hourglass",
                             ttlMinutes=5))["payload"]["entry"]
        assert entry["agentStatus"]["note"] == "waiting on you"
        assert entry["agentStatus"]["attention"] == "hourglass"
        entry = (await patch(unread=False))["payload"]["entry"]
        assert entry["unread"] is False and "markedUnreadAt" not in entry
        assert entry["lastReadAt"] > 0 and "agentStatus" not in entry  # read clears it
        entry = (await patch(thinkingLevel=None))["payload"]["entry"]
        assert "thinkingLevel" not in entry and entry["icon"] == "🦀"
        # Refusals change nothing.
        other = (await ws.call("sessions.create", {"label": f"{label} two"}))["payload"]["key"]
        taken = await ws.call("sessions.patch", {"key": other, "label": label})
        assert not taken["ok"] and "already in use" in taken["error"]["message"]
        retired = await patch(execSecurity="full", label="never stored")
        assert not retired["ok"] and (await row())["label"] == label
        ghost = f"agent:main:ghost-{uuid.uuid4().hex[:8]}"
        bad = await ws.call("sessions.patch", {"key": ghost, "label": "x", "model": "nope/none"})
        assert not bad["ok"]
        assert (await ws.call("sessions.describe", {"key": ghost}))["payload"] == {"session": None}
        await sub.barrier()
        reasons = [f["payload"].get("reason") for f in sub.events("sessions.changed")
                   if f["payload"].get("sessionKey") == key]
        assert reasons[0] == "create" and "archive" in reasons and "unarchive" in reasons
        assert "patch" in reasons
        await ws.close()
        await sub.close()
    run(main())


def test_sessions_create_with_a_first_message(gateway):
    async def main():
        ws = await _operator(gateway.url)
        idem = f"create-{uuid.uuid4().hex[:8]}"
        params = {"label": f"first {idem}", "message": "hello from create",
                  "idempotencyKey": idem, "thinkingLevel": "None"}  # "off", normalized
        res = await ws.call("sessions.create", params)
        assert res["ok"], res
        out = res["payload"]
        assert out["runStarted"] is True and out["runId"] == idem and out["messageSeq"] == 1
        assert out["entry"]["thinkingLevel"] == "off" and out["entry"]["status"] == "running"
        await ws.event("chat", 10, lambda f: f["payload"]["runId"] == idem
                       and f["payload"]["state"] == "final")
        history = (await ws.call("chat.history", {"sessionKey": out["key"]}))["payload"]
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
        # The same idempotency key answers the same, and starts nothing.
        again = await ws.call("sessions.create", params)
        assert again["payload"]["key"] == out["key"] and again["payload"]["runId"] == idem
        await ws.barrier()
        history = (await ws.call("chat.history", {"sessionKey": out["key"]}))["payload"]
        assert len(history["messages"]) == 2
        # What krabfast sessions cannot be is refused, and no session is made.
        before = (await _list(ws))["totalCount"]
        forked = await ws.call("sessions.create", {"fork": True, "label": f"fork {idem}"})
        assert not forked["ok"] and "fork" in forked["error"]["message"]
        assert (await _list(ws))["totalCount"] == before
        await ws.close()
    run(main())
