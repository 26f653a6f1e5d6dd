"""A session as the reference's clients see it (SessionRow), and the `sessions.list`
filters and page, from a SessionRecord and its runs. Pure functions: no bus, no store.
"""

from __future__ import annotations

import math
from functools import lru_cache

from msgspec import UNSET

from krabfast.models.usage import row_cost
from krabfast.store.session_text import derived_title as derived_title_of

MAIN_SESSION_KEY = "agent:main:main"
DEFAULT_LIST_LIMIT = 100  # the reference's page when `limit` is not given

# A finished run's status (store) -> the session status the reference shows (SessionStatus).
# "interrupted" (the gateway stopped mid-run) is "failed", as the reference maps it.
_SESSION_STATUS = {"ok": "done", "error": "failed", "aborted": "killed",
                   "interrupted": "failed"}
RUN_ERROR_MAX = 160  # the reference's bound on a row's lastRunError
_NOT_IN_ROW = ("agent_status", "exec_host")  # settings kept but not shown in a row


@lru_cache(maxsize=256)  # a few dozen setting names, renamed for every row
def camel(name: str) -> str:
    """snake_case -> the wire's camelCase."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)



def run_fields(active, last) -> dict:
    """status/startedAt/endedAt/runtimeMs/lastRunId/lastRunError/abortedLastRun, as the
    reference projects a run's lifecycle onto its session: while a run goes, "running" and
    no lastRunId; after it, its outcome. `active`: the session's run in flight (or one whose
    end is being announced, `ended_at` set); `last`: the stored record of its last run."""
    if active is not None and active.ended_at is None:
        out = {"status": "running", "abortedLastRun": False, "hasActiveRun": True,
               "activeRunIds": [active.run_id]}
        if active.started_at is not None:
            out["startedAt"] = active.started_at
        return out
    out = {"hasActiveRun": False, "activeRunIds": []}
    if last is None:
        return out
    out["lastRunId"] = last.run_id
    status = _SESSION_STATUS.get(last.status)
    if status is None:  # still "running" in the store: the end is being recorded
        return out
    out["status"] = status
    out["startedAt"] = last.started_at
    if last.ended_at is not None:
        out["endedAt"] = last.ended_at
        out["runtimeMs"] = max(0, last.ended_at - last.started_at)
    if status == "failed" and last.error:
        out["lastRunError"] = run_error(last.error)
    out["abortedLastRun"] = status == "killed"
    return out


def run_error(error: str) -> str:
    """A run's error as a row shows it: whitespace runs made one space and, past
    RUN_ERROR_MAX characters, its start and end around " ... ", as the reference cuts it."""
    text = " ".join(error.split())
    if len(text) <= RUN_ERROR_MAX:
        return text
    return f"{text[:155 // 3].rstrip()} ... {text[-104:].lstrip()}"


def active_agent_status(record, now: int) -> dict | None:
    """The session's agent status note ({note, attention?, expiresAt}) while it lasts."""
    status = record.settings.get("agent_status")
    if not status or not status.get("note") or status.get("expiresAt", 0) <= now:
        return None
    return status


def session_row(record, *, active=None, last=None, now: int,
                default_model: tuple[str, str] | None = None, derived_title: bool = False,
                preview: str | None = None, thinking=None,
                context_tokens: int | None = None, cost: dict | None = None) -> dict:
    """A session as sessions.list/describe/create/patch and the session events carry it;
    `default_model` (provider, model): what a session without its own model uses;
    `thinking`: the ThinkingProfile of the session's model (None: its model is unknown);
    `context_tokens` / `cost`: that model's configured context window and cost.
    `derived_title` / `preview`: add `derivedTitle` / `lastMessagePreview` (when there is
    one), as the reference does for includeDerivedTitles / includeLastMessage."""
    row = {"key": record.key, "kind": "direct", "sessionId": record.session_id,
           "agentId": record.agent_id, "createdAt": record.created_at,
           "updatedAt": record.updated_at, "isMain": record.key == MAIN_SESSION_KEY,
           "archived": record.archived, "pinned": record.pinned, "unread": record.unread}
    if record.label:
        row["label"] = record.label
        row["displayName"] = record.label
    provider, _, model = (record.model or "").partition("/")
    if model:  # a per-session model ("provider/model"), as sessions.patch set it
        row["modelProvider"], row["model"] = provider, model
        row["modelOverrideSource"] = "user"
    elif default_model is not None:  # the reference's rows name the model in use
        row["modelProvider"], row["model"] = default_model
        row["modelOverrideSource"] = None
    if thinking is not None:  # what the reference's model pickers offer
        row.update(thinking.wire_fields())
    if context_tokens is not None:
        row["contextTokens"] = context_tokens
    # The last turn's token counters and cost; before any, the count is not fresh.
    row["totalTokensFresh"] = False
    if record.usage:
        row.update(record.usage)
        row.pop("estimatedCostUsd", None)
        estimated = row_cost(record.usage, cost)
        if estimated is not None:
            row["estimatedCostUsd"] = estimated
    if record.previous_session_id:
        row["previousSessionId"] = record.previous_session_id
    # What sessions.patch stored (icon, thinkingLevel, archivedAt, ...), under the names
    # the reference's rows use; the agent status only until it expires. The exec host is
    # kept but, as on the reference, not in the row.
    for name, value in record.settings.items():
        if name not in _NOT_IN_ROW:
            row[camel(name)] = value
    status = active_agent_status(record, now)
    if status is not None:
        row["agentStatus"] = status
    row.update(run_fields(active, last))
    # A turn is an interaction (its run's start stands for the message's time); as on the
    # reference, a session with one since it was last read is unread, and a direct chat.
    interaction = last.started_at if last is not None else None
    if active is not None and active.started_at is not None:
        interaction = active.started_at
    if interaction is not None:
        row["lastInteractionAt"] = interaction
        row["chatType"] = "direct"
        read_at = record.settings.get("last_read_at")
        # (a session its first turn created: unread, even when both fall in one ms)
        since = interaction > read_at if read_at is not None else interaction >= record.created_at
        row["unread"] = bool(record.unread) or since
    if derived_title:
        title = derived_title_of(record.label, row.get("displayName"))
        if title:
            row["derivedTitle"] = title
    if preview:
        row["lastMessagePreview"] = preview
    return row


# -- sessions.list ---------------------------------------------------------------------------
def _given(value) -> bool:
    return value is not UNSET and value is not None


def list_filter(params, *, now: int):
    """A predicate on SessionRecords for sessions.list's params, or None when nothing can
    match. Facets krabfast has no data for (boards, creators, owners, profiles, spawning)
    match nothing when asked for, as the reference's filters do on sessions without them."""
    for absent in ("spawned_by", "board_face", "creator_id", "owner_id", "involving_profile_id"):
        if _given(getattr(params, absent)):
            return None
    archived = params.archived if _given(params.archived) else False
    agent_id = params.agent_id if _given(params.agent_id) else None
    label = params.label.strip() if _given(params.label) else ""
    search = params.search.strip().lower() if _given(params.search) else ""
    cutoff = None
    if _given(params.active_minutes):
        cutoff = now - max(1, math.floor(params.active_minutes)) * 60_000
    require_turn = params.require_last_interaction is True

    def keep(record) -> bool:
        if archived != "all" and bool(record.archived) != archived:
            return False
        if agent_id is not None and record.agent_id != agent_id:
            return False
        if label and record.label != label:
            return False
        if require_turn and record.message_count == 0:
            return False
        if cutoff is not None and record.updated_at < cutoff:
            return False
        if search:
            fields = (record.key, record.label, record.session_id, record.model, "direct")
            if not any(f and search in f.lower() for f in fields):
                return False
        return True

    return keep


def list_page(records: list, params) -> tuple[list, dict]:
    """(the page of `records`, the paging fields of SessionsListResult), as the reference:
    `limit` default 100 (floored, at least 1), `offset` floored, at least 0."""
    limit = DEFAULT_LIST_LIMIT if not _given(params.limit) else max(1, math.floor(params.limit))
    offset = 0 if not _given(params.offset) else max(0, math.floor(params.offset))
    page = records[offset:offset + limit]
    next_offset = offset + len(page)
    has_more = next_offset < len(records)
    fields = {"totalCount": len(records), "limitApplied": limit,
              "nextOffset": next_offset if has_more else None, "hasMore": has_more}
    if offset > 0:
        fields["offset"] = offset
    return page, fields
