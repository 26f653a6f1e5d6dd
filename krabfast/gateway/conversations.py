"""Conversations: the sessions store, the model catalog and the run manager, wired to the
event bus. Opened on first use (the first chat or session call), so a gateway nobody chats
with never loads a model client or a transcript.

Events: `chat` and `agent` to every `operator.read` socket (as the reference);
`session.message` only to the sockets subscribed to that session (`sessions.messages.
subscribe`: the bus topic `session:<key>`); `sessions.changed` to the sockets that called
`sessions.subscribe` (topic `sessions`).
"""

from __future__ import annotations

import logging

from krabfast.gateway.runs import RunManager
from krabfast.gateway.session_patch import patch_changes
from krabfast.gateway.session_rows import list_filter, list_page, session_row
from krabfast.models.thinking import level_not_offered, normalize_think_level
from krabfast.models.usage import wire_message_usage

log = logging.getLogger("krabfast.gateway")

SESSIONS_TOPIC = "sessions"
DEFAULT_AGENT_ID = "main"
MAIN_KEY = "main"


def session_topic(key: str) -> str:
    return f"session:{key}"


def normalize_key(key: str | None, agent_id: str | None = None) -> tuple[str, str]:
    """(session key in the reference's form `agent:<agentId>:<name>`, agent id). A bare
    name belongs to the default agent (or `agent_id`); "main" is the main session."""
    from krabfast.store.sessions import parse_session_key, session_key

    agent = agent_id or DEFAULT_AGENT_ID
    if not key:
        return session_key(agent, MAIN_KEY), agent
    parsed = parse_session_key(key)
    if parsed is not None:
        return key, parsed[0]
    return session_key(agent, key), agent


class Conversations:
    normalize_key = staticmethod(normalize_key)
    session_topic = staticmethod(session_topic)
    SESSIONS_TOPIC = SESSIONS_TOPIC

    def __init__(self, hub) -> None:
        from krabfast.models.registry import ModelCatalog
        from krabfast.store.sessions import SessionStore

        self.bus = hub.bus
        self.clock_ms = hub.clock_ms
        cfg = hub.config
        self.models = ModelCatalog.from_config(getattr(cfg, "models_config", None),
                                               getattr(cfg, "primary_model", None))
        self.database = hub.database
        self.sessions = SessionStore(self.database)
        self._mark_interrupted(hub.clock_ms())
        self.runs = RunManager(self)
        from krabfast.models.base import ProviderError

        self.ProviderError = ProviderError  # what submit raises (handlers catch it)

    def _mark_interrupted(self, now: int) -> None:
        """Runs a previous process did not finish (a crash, a kill) are marked, and their
        sessions say so in the transcript, instead of silently missing a reply."""
        interrupted = self.sessions.mark_interrupted(now)
        for run in interrupted:
            if self.sessions.get(run.session_key) is None:
                continue
            self.sessions.append_message(
                run.session_key, "assistant",
                [{"type": "text", "text": "(This reply was interrupted: the gateway stopped "
                  "before it finished.)"}], run_id=run.run_id, stop_reason="interrupted", ts=now)
        if interrupted:
            log.warning("%d run(s) were interrupted by the previous shutdown or crash",
                        len(interrupted))

    async def durable(self) -> None:
        """Wait until every transcript write so far is on disk (a final answer is sent
        only once the turn survives a crash)."""
        if str(self.database.path) != ":memory:":
            await self.database.flushed()

    # -- rows and events ------------------------------------------------------------------------
    def session_row(self, record, params=None) -> dict:
        """A session as `sessions.list` and the session events show it (SessionRow), its
        last run's outcome included; `params` (of sessions.list / describe) may ask for
        the derived title and the last message's preview."""
        last = self.sessions.run(record.last_run_id) if record.last_run_id else None
        model = self.models.default
        title = params is not None and params.include_derived_titles is True
        preview = None
        if params is not None and params.include_last_message is True:
            preview = self.sessions.preview(record.key)
        return session_row(record, active=self.runs.active.get(record.key), last=last,
                           now=self.clock_ms(),
                           default_model=(model.provider, model.model_id or model.id),
                           derived_title=title, preview=preview, **self._row_model(record))

    def thinking_refusal(self, key: str, raw) -> str | None:
        """Why an `agent` request's `thinking` cannot run on session `key`'s model (the
        reference's messages), or None. Not a level: the default model's levels are listed,
        as the reference lists them."""
        if not raw:
            return None
        level = normalize_think_level(raw)
        record = self.sessions.get(key)
        try:
            info = self.models.info(None if level is None or record is None else record.model)
        except self.ProviderError:  # an unknown model: the run's submit says so
            return None
        levels = info.thinking.levels
        if level is None:
            return f"Invalid thinking level. Use one of: {', '.join(levels)}."
        return level_not_offered(level, info.ref, levels) if level not in levels else None

    def _row_model(self, record) -> dict:
        """What a row shows of its session's model: its thinking levels and context window."""
        try:
            info = self.models.info(record.model)
        except self.ProviderError:  # a model no longer configured: its row says nothing of it
            return {}
        return {"thinking": info.thinking, "context_tokens": info.context_window,
                "cost": info.cost}

    def list_sessions(self, params) -> tuple[list[dict], dict]:
        """sessions.list: (the rows of the page, its paging fields)."""
        keep = list_filter(params, now=self.clock_ms())
        records = [r for r in self.sessions.list() if keep(r)] if keep is not None else []
        page, paging = list_page(records, params)
        return [self.session_row(r, params) for r in page], paging

    def patch_session(self, key: str, agent: str, params, extra: dict | None = None):
        """sessions.patch: every check first (a refused patch changes nothing, and creates
        no session), then the change, with `extra` store fields (checked by the caller) in
        the same write; the session record after it."""
        existing = self.sessions.get(key)

        def label_in_use(label: str) -> bool:
            return any(r.label == label and r.key != key for r in self.sessions.list(agent))

        changes = patch_changes(params, existing, key=key, now=self.clock_ms(),
                                label_in_use=label_in_use, think_profile=self._think_profile)
        if changes.get("model"):
            self.models.resolve(changes["model"])  # an unknown model is refused now
        if extra:
            changes.update(extra)
        record = existing or self.sessions.ensure(key, agent)[0]
        return self.sessions.patch(key, **changes) if changes else record

    def _think_profile(self, ref: str | None) -> tuple[str, tuple[str, ...]]:
        """("provider/model", the thinking levels it offers) of a session model."""
        info = self.models.info(ref)  # an unknown model: its ProviderError, as resolve's
        return info.ref, info.thinking.levels

    def session_message(self, key: str, message) -> None:
        # Subscribers first: the record is rebuilt after every append (a new row), and
        # this runs on the path from chat.send to the model request.
        if self.bus.count(session_topic(key)) == 0:
            return
        record = self.sessions.get(key)
        if record is None:
            return
        self.bus.publish("session.message", {
            "sessionKey": key, "agentId": record.agent_id, "message": message_json(message),
            "messageId": message.message_id, "messageSeq": message.seq,
            "session": self.session_row(record)}, topic=session_topic(key))

    def sessions_changed(self, key: str, reason: str | None = None, *, phase: str | None = None,
                         run_id: str | None = None) -> None:
        """`sessions.changed` to the `sessions.subscribe`d sockets, as the reference: a
        mutation has a `reason` (create, send, patch, archive, unarchive, reset, delete), a
        run's lifecycle a `phase` (start, end, error) and its `runId`; the row is `session`,
        and its identity and status are repeated at the top level."""
        if self.bus.count(SESSIONS_TOPIC) == 0:
            return
        record = self.sessions.get(key)
        payload = {"sessionKey": key, "ts": self.clock_ms()}
        if reason is not None:
            payload["reason"] = reason
        if phase is not None:
            payload["phase"] = phase
        if run_id is not None:
            payload["runId"] = run_id
        if record is not None:
            row = self.session_row(record)
            payload["agentId"] = record.agent_id
            payload["sessionId"] = record.session_id
            payload["updatedAt"] = record.updated_at
            payload["kind"] = row["kind"]
            if "status" in row:
                payload["status"] = row["status"]
            payload["session"] = row
        self.bus.publish("sessions.changed", payload, topic=SESSIONS_TOPIC)

    @staticmethod
    def message_json(message) -> dict:
        return message_json(message)

    async def close(self) -> None:
        await self.runs.shutdown()
        await self.models.aclose()


def message_json(message) -> dict:
    """A transcript message as chat.history and session.message carry it: user content
    the raw string, assistant content a list of parts."""
    out = {"role": message.role, "content": message.content, "timestamp": message.ts,
           "messageId": message.message_id, "seq": message.seq,
           # The reference's transcript position: its Control UI tells messages apart by
           # __openclaw.id/seq, and matches its own pending user message to the stored one
           # by idempotencyKey "<runId>:user" (without them each turn showed twice).
           "__openclaw": {"id": message.message_id, "seq": message.seq}}
    if message.run_id:
        out["runId"] = message.run_id
        if message.role == "user":
            out["idempotencyKey"] = f"{message.run_id}:user"
    if message.model:  # what answered: api, provider, model
        out.update(message.model)
    if message.stop_reason:
        out["stopReason"] = message.stop_reason
    if message.usage:
        out["usage"] = wire_message_usage(message.usage)
    return out
