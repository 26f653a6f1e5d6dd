"""Sessions: sessions.* params and results, the session row, and the `sessions.changed`,
`session.message` and `session.tool` events (reference names).

Params list every field the reference accepts (its JSON schema plus what its gateway takes
beyond it), so what its clients send decodes; fields krabfast does not act on are typed
loosely. A session key is "agent:<agentId>:<name>" (default "agent:main:main").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from krabfast.protocol.chat import (ChatAttachment, ChatMessage, FastMode, Open, PermissionMode,
                                    ThinkingLevel)
from krabfast.protocol.model import Model, NonEmptyStr, NonNegInt, PosInt

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType

Label = Annotated[str, Meta(min_length=1, max_length=512)]
BoardFace = Literal["chat", "dashboard"]
SessionKind = Literal["direct", "group", "global", "unknown"]
SessionStatus = Literal["queued", "running", "done", "failed", "killed", "timeout"]


# -- the row ---------------------------------------------------------------------------------

class SessionAgentStatus(Open):
    """A session's status note (sessions.patch statusNote/attention/ttlMinutes), shown
    until `expiresAt`."""

    note: str
    expires_at: float
    attention: str | Unset = UNSET


class SessionRow(Open):
    """One session as sessions.list, sessions.describe and session events carry it. The
    reference allows more keys than these; these are the ones krabfast fills."""

    key: str
    kind: SessionKind
    session_id: str | Unset = UNSET
    label: str | Unset = UNSET
    icon: str | Unset = UNSET
    color: str | Unset = UNSET
    board_face: BoardFace | Unset = UNSET
    display_name: str | Unset = UNSET
    derived_title: str | Unset = UNSET
    last_message_preview: str | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET
    is_main: bool | Unset = UNSET
    chat_type: Literal["direct", "group", "channel"] | Unset = UNSET
    updated_at: float | None | Unset = UNSET
    archived: bool | Unset = UNSET
    archived_at: float | Unset = UNSET
    pinned: bool | Unset = UNSET
    pinned_at: float | Unset = UNSET
    unread: bool | Unset = UNSET
    last_read_at: float | Unset = UNSET
    last_activity_at: float | Unset = UNSET
    last_interaction_at: float | Unset = UNSET
    status: SessionStatus | Unset = UNSET
    last_run_error: str | Unset = UNSET
    last_run_id: NonEmptyStr | Unset = UNSET
    # the current or last run, as the reference projects its lifecycle onto the session
    started_at: float | Unset = UNSET
    ended_at: float | Unset = UNSET
    runtime_ms: float | Unset = UNSET
    aborted_last_run: bool | Unset = UNSET
    has_active_run: bool | Unset = UNSET
    active_run_ids: list[str] | Unset = UNSET
    agent_status: SessionAgentStatus | Unset = UNSET
    marked_unread_at: float | Unset = UNSET
    category: str | Unset = UNSET
    permission_mode: PermissionMode | Unset = UNSET
    created_via: Literal["operator", "spawn", "channel", "cron", "talk", "run", "plugin",
                         "internal"] | Unset = UNSET
    created_at: float | Unset = UNSET
    previous_session_id: str | Unset = UNSET
    input_tokens: float | Unset = UNSET
    output_tokens: float | Unset = UNSET
    total_tokens: float | Unset = UNSET  # the last turn's prompt size (what the context holds)
    total_tokens_fresh: bool | Unset = UNSET
    estimated_cost_usd: float | Unset = UNSET  # the last turn's, from the model's cost
    context_tokens: float | Unset = UNSET  # the session model's configured context window
    model: str | Unset = UNSET
    model_provider: str | Unset = UNSET
    model_override_source: Literal["user", "auto"] | None | Unset = UNSET
    thinking_level: str | Unset = UNSET
    thinking_levels: list[ThinkingLevel] | Unset = UNSET  # what the session's model offers
    thinking_options: list[str] | Unset = UNSET
    thinking_default: str | Unset = UNSET
    fast_mode: FastMode | Unset = UNSET
    verbose_level: str | Unset = UNSET
    reasoning_level: str | Unset = UNSET
    send_policy: Literal["allow", "deny"] | Unset = UNSET
    message_count: NonNegInt | Unset = UNSET


class SessionsDefaults(Open):
    """`sessions.list` defaults: the model a session without an override uses."""

    model_provider: str | None = None
    model: str | None = None
    context_tokens: NonNegInt | None = None


# -- sessions.list / subscribe ---------------------------------------------------------------

class SessionsListParams(Model):
    limit: PosInt | Unset = UNSET
    offset: NonNegInt | Unset = UNSET
    active_minutes: PosInt | Unset = UNSET
    require_last_interaction: bool | Unset = UNSET
    sort_by: Literal["updatedAt", "lastInteractionAt"] | Unset = UNSET
    include_global: bool | Unset = UNSET
    include_unknown: bool | Unset = UNSET
    configured_agents_only: bool | Unset = UNSET
    include_derived_titles: bool | Unset = UNSET
    include_last_message: bool | Unset = UNSET
    label: Label | Unset = UNSET
    board_face: BoardFace | Unset = UNSET
    creator_id: NonEmptyStr | Unset = UNSET
    owner_id: NonEmptyStr | Unset = UNSET
    owner_first: bool | Unset = UNSET
    involving_me: bool | Unset = UNSET
    involving_profile_id: NonEmptyStr | Unset = UNSET
    include_people: bool | Unset = UNSET
    spawned_by: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET
    search: str | Unset = UNSET
    archived: bool | Literal["all"] | Unset = UNSET
    # accepted by the reference gateway beyond its published schema
    exclude_subagents: bool | Unset = UNSET
    exclude_system: bool | Unset = UNSET
    exclude_cron: bool | Unset = UNSET
    has_board: bool | Unset = UNSET
    pinned: bool | Unset = UNSET
    group: Any = UNSET
    include_activity_summary: bool | Unset = UNSET
    project_id: Any = UNSET
    profile_relation: Any = UNSET
    workspace_dir: Any = UNSET
    active_only: bool | Unset = UNSET


class SessionsListResult(Model):
    """Newest first (`updatedAt`)."""

    ts: NonNegInt
    count: NonNegInt
    sessions: list[SessionRow]
    defaults: SessionsDefaults
    path: str | Unset = UNSET
    total_count: NonNegInt | Unset = UNSET
    limit_applied: PosInt | Unset = UNSET
    offset: NonNegInt | Unset = UNSET
    next_offset: NonNegInt | None | Unset = UNSET
    has_more: bool | Unset = UNSET
    owners: list[dict[str, Any]] | Unset = UNSET


class SessionsSubscribeParams(Open):
    """`sessions.subscribe` / `sessions.unsubscribe`: no params (the reference ignores any)."""


SessionsUnsubscribeParams = SessionsSubscribeParams


class SessionsSubscribeResult(Model):
    """`sessions.subscribe` (true) / `sessions.unsubscribe` (false)."""

    subscribed: bool


SessionsUnsubscribeResult = SessionsSubscribeResult


class SessionsMessagesSubscribeParams(Model):
    """`session.message` events for one session key."""

    key: NonEmptyStr
    agent_id: NonEmptyStr | Unset = UNSET
    include_approvals: Literal[True] | Unset = UNSET


class SessionsMessagesUnsubscribeParams(Model):
    key: NonEmptyStr
    agent_id: NonEmptyStr | Unset = UNSET


class SessionsMessagesSubscribeResult(Model):
    """`sessions.messages.subscribe` (true) / `.unsubscribe` (false), for `key`."""

    subscribed: bool
    key: NonEmptyStr


SessionsMessagesUnsubscribeResult = SessionsMessagesSubscribeResult


# -- describe / resolve ----------------------------------------------------------------------

class SessionsDescribeParams(Model):
    key: NonEmptyStr
    agent_id: NonEmptyStr | Unset = UNSET
    include_derived_titles: bool | Unset = UNSET
    include_last_message: bool | Unset = UNSET


class SessionsDescribeResult(Model):
    """`session` is null for an unknown key."""

    session: SessionRow | None


class SessionsResolveParams(Model):
    key: NonEmptyStr | Unset = UNSET
    session_id: NonEmptyStr | Unset = UNSET
    label: Label | Unset = UNSET
    short_id: NonEmptyStr | Unset = UNSET
    slug_hint: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET
    spawned_by: NonEmptyStr | Unset = UNSET
    include_global: bool | Unset = UNSET
    include_unknown: bool | Unset = UNSET
    allow_missing: bool | Unset = UNSET
    reference: Any = UNSET


class SessionsResolveCandidate(Model):
    key: NonEmptyStr
    agent_id: NonEmptyStr
    display_name: str | Unset = UNSET
    board_face: BoardFace | Unset = UNSET


class SessionsResolveResult(Model):
    """`{ok: true, key, agentId}` when found; `{ok: false, candidates?}` when missing or
    ambiguous (with allowMissing; otherwise an error answer)."""

    ok: bool
    key: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET
    display_name: str | Unset = UNSET
    board_face: BoardFace | Unset = UNSET
    candidates: Annotated[list[SessionsResolveCandidate], Meta(max_length=10)] | Unset = UNSET

    def __post_init__(self) -> None:
        if self.ok and (self.key is UNSET or self.agent_id is UNSET or self.candidates is not UNSET):
            raise ValueError("ok: true needs key and agentId, and no candidates")
        if not self.ok and (self.key is not UNSET or self.agent_id is not UNSET
                            or self.display_name is not UNSET or self.board_face is not UNSET):
            raise ValueError("ok: false carries only candidates")


# -- create / patch / reset / delete / abort -------------------------------------------------

class SessionsCreateParams(Model):
    key: NonEmptyStr | Unset = UNSET
    idempotency_key: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET
    label: Label | Unset = UNSET
    display_name: Annotated[str, Meta(min_length=1, max_length=500)] | Unset = UNSET
    category: Label | Unset = UNSET
    model: NonEmptyStr | Unset = UNSET
    context_window: NonEmptyStr | Unset = UNSET
    thinking_level: NonEmptyStr | Unset = UNSET
    fast_mode: FastMode | Unset = UNSET
    permission_mode: PermissionMode | Unset = UNSET
    tool_overrides: dict[str, Any] | Unset = UNSET
    incognito: bool | Unset = UNSET
    visibility: Literal["shared", "read-only", "suggest", "draft"] | Unset = UNSET
    catalog_id: NonEmptyStr | Unset = UNSET
    parent_session_key: NonEmptyStr | Unset = UNSET
    spawn_depth: PosInt | Unset = UNSET
    fork: bool | Unset = UNSET
    fork_from: Literal["last-completed"] | Unset = UNSET
    emit_command_hooks: bool | Unset = UNSET
    succeeds_parent: bool | Unset = UNSET
    task: str | Unset = UNSET
    message: str | Unset = UNSET
    attachments: list[ChatAttachment] | Unset = UNSET
    project_id: NonEmptyStr | Unset = UNSET
    project_git_url: Annotated[str, Meta(min_length=1, max_length=2048)] | Unset = UNSET
    worktree: bool | Unset = UNSET
    worktree_base_ref: NonEmptyStr | Unset = UNSET
    worktree_name: str | Unset = UNSET
    exec_node: NonEmptyStr | Unset = UNSET
    cwd: NonEmptyStr | Unset = UNSET
    # accepted by the reference gateway beyond its published schema
    agent_runtime: Any = UNSET
    mentions: Any = UNSET
    worktree_source: Any = UNSET
    title_source: Any = UNSET
    repository: Any = UNSET
    timeout_ms: NonNegInt | Unset = UNSET


class SessionsRunError(Model):
    code: NonEmptyStr
    message: NonEmptyStr
    details: Any = UNSET
    retryable: bool | Unset = UNSET
    retry_after_ms: NonNegInt | Unset = UNSET


class SessionsCreateResult(Model):
    """With `message`, the first run starts at once (`runStarted`, `runId`, `messageSeq`)."""

    ok: Literal[True]
    key: NonEmptyStr
    session_id: NonEmptyStr | Unset = UNSET
    entry: SessionRow | Unset = UNSET
    run_started: bool | Unset = UNSET
    run_id: NonEmptyStr | Unset = UNSET
    message_seq: PosInt | Unset = UNSET
    run_error: SessionsRunError | Unset = UNSET


class SessionsPatchParams(Model):
    """Change a session's settings; null clears one (back to the default)."""

    key: NonEmptyStr
    agent_id: NonEmptyStr | Unset = UNSET
    expected_session_id: NonEmptyStr | Unset = UNSET
    expected_lifecycle_revision: NonEmptyStr | Unset = UNSET
    expected_permission_mode: PermissionMode | None | Unset = UNSET
    expected_tool_overrides: dict[str, Any] | None | Unset = UNSET
    expected_marked_unread_at: Annotated[float, Meta(ge=0)] | None | Unset = UNSET
    expected_native_runtime_consent: Any = UNSET
    expected_sandbox_mode: Any = UNSET
    label: Label | None | Unset = UNSET
    icon: str | None | Unset = UNSET
    color: str | None | Unset = UNSET
    category: Label | None | Unset = UNSET
    board_face: BoardFace | Unset = UNSET
    status_note: Annotated[str, Meta(max_length=120)] | None | Unset = UNSET
    attention: Literal["hand", "key", "alert", "flag", "lock", "hourglass"] | None | Unset = UNSET
    ttl_minutes: Annotated[int, Meta(ge=1, le=120)] | Unset = UNSET
    archived: bool | Unset = UNSET
    pinned: bool | Unset = UNSET
    unread: bool | Unset = UNSET
    context_window: NonEmptyStr | None | Unset = UNSET
    thinking_level: NonEmptyStr | None | Unset = UNSET
    fast_mode: FastMode | None | Unset = UNSET
    tool_overrides: dict[str, Any] | None | Unset = UNSET
    verbose_level: NonEmptyStr | None | Unset = UNSET
    trace_level: NonEmptyStr | None | Unset = UNSET
    reasoning_level: NonEmptyStr | None | Unset = UNSET
    response_usage: Literal["off", "tokens", "full", "on"] | None | Unset = UNSET
    elevated_level: NonEmptyStr | None | Unset = UNSET
    exec_host: NonEmptyStr | None | Unset = UNSET
    exec_security: NonEmptyStr | None | Unset = UNSET
    exec_ask: NonEmptyStr | None | Unset = UNSET
    exec_node: NonEmptyStr | None | Unset = UNSET
    permission_mode: PermissionMode | None | Unset = UNSET
    model: NonEmptyStr | None | Unset = UNSET
    completion_owner_session_key: NonEmptyStr | None | Unset = UNSET
    inherited_tool_policy_version: Literal[1] | None | Unset = UNSET
    inherited_tool_allow: list[NonEmptyStr] | None | Unset = UNSET
    inherited_tool_deny: list[NonEmptyStr] | None | Unset = UNSET
    send_policy: Literal["allow", "deny"] | None | Unset = UNSET
    group_activation: Literal["mention", "always"] | None | Unset = UNSET


class SessionsResolvedModel(Model):
    model_provider: str | Unset = UNSET
    model: str | Unset = UNSET


class SessionsPatchResult(Model):
    ok: Literal[True]
    key: NonEmptyStr
    entry: SessionRow
    path: str | Unset = UNSET
    resolved: SessionsResolvedModel | Unset = UNSET


class SessionsResetParams(Model):
    """Start a new transcript (new sessionId) under the same key."""

    key: NonEmptyStr
    agent_id: NonEmptyStr | Unset = UNSET
    reason: Literal["new", "reset"] | Unset = UNSET


class SessionsResetResult(Model):
    ok: Literal[True]
    key: NonEmptyStr
    entry: SessionRow


class SessionsDeleteParams(Model):
    key: NonEmptyStr
    agent_id: NonEmptyStr | Unset = UNSET
    delete_transcript: bool | Unset = UNSET
    expected_session_id: NonEmptyStr | Unset = UNSET
    expected_lifecycle_revision: NonEmptyStr | Unset = UNSET
    expected_session_updated_at: Annotated[float, Meta(ge=0)] | Unset = UNSET
    emit_lifecycle_hooks: bool | Unset = UNSET
    archived_only: bool | Unset = UNSET


class SessionsDeleteResult(Model):
    ok: Literal[True]
    key: NonEmptyStr
    deleted: bool
    archived: list[NonEmptyStr]


class SessionsAbortParams(Model):
    """Abort a session's runs (by `key`) or one run (`runId`)."""

    key: NonEmptyStr | Unset = UNSET
    run_id: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET
    clear_queued: bool | Unset = UNSET


class SessionsAbortResult(Model):
    ok: bool
    aborted: bool
    run_ids: list[NonEmptyStr]
    key: NonEmptyStr | Unset = UNSET


# -- events ----------------------------------------------------------------------------------

class SessionsChangedEvent(Open):
    """`sessions.changed` (to `sessions.subscribe`d sockets): `reason` for a mutation
    (create, patch, reset, delete, ...), `phase` for a run's lifecycle (start, end, error)
    or a new message ("message"); `session` is the row after the change."""

    ts: NonNegInt
    session_key: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET
    reason: NonEmptyStr | Unset = UNSET
    phase: NonEmptyStr | Unset = UNSET
    run_id: NonEmptyStr | Unset = UNSET
    session_id: str | Unset = UNSET
    updated_at: float | Unset = UNSET
    kind: SessionKind | Unset = UNSET
    status: SessionStatus | Unset = UNSET
    session: SessionRow | Unset = UNSET


class SessionMessageEvent(Open):
    """`session.message` (to `sessions.messages.subscribe`d sockets): one new transcript
    message of that session."""

    session_key: NonEmptyStr
    message: ChatMessage
    agent_id: NonEmptyStr | Unset = UNSET
    message_id: NonEmptyStr | Unset = UNSET
    message_seq: PosInt | Unset = UNSET
    run_id: NonEmptyStr | Unset = UNSET
    session_id: str | Unset = UNSET
    updated_at: float | Unset = UNSET
    session: SessionRow | Unset = UNSET


class SessionToolEvent(Open):
    """`session.tool`: an `agent` tool-stream event mirrored to session subscribers that did
    not connect with caps ["tool-events"]."""

    run_id: NonEmptyStr
    seq: NonNegInt
    stream: NonEmptyStr
    ts: NonNegInt
    data: dict[str, Any]
    session_key: NonEmptyStr | Unset = UNSET
    agent_id: NonEmptyStr | Unset = UNSET
    session_id: str | Unset = UNSET
    session: SessionRow | Unset = UNSET


__all__ = [name for name in list(globals()) if name.startswith("Session")]
