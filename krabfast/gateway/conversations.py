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

log = logging.getLogger("krabfast.gateway")

SESSIONS_TOPIC = "sessions"
DEFAULT_AGENT_ID = "main"
MAIN_KEY = "main"
MAIN_SESSION_KEY = f"agent:{DEFAULT_AGENT_ID}:{MAIN_KEY}"


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
    def session_row(self, record) -> dict:
        """A session as `sessions.list` and `sessions.changed` show it (SessionRow)."""
        row = {"key": record.key, "kind": "direct", "sessionId": record.session_id,
               "agentId": record.agent_id, "updatedAt": record.updated_at,
               "isMain": record.key == MAIN_SESSION_KEY}
        if record.label:
            row["label"] = record.label
        # Only "running" is known without a look at the run table; the schema's statuses
        # have no "idle", so a session with no run going carries none.
        if self.runs.active.get(record.key) is not None:
            row["status"] = "running"
        return row

    def session_message(self, key: str, message) -> None:
        record = self.sessions.get(key)
        if self.bus.count(session_topic(key)) == 0 or record is None:
            return
        self.bus.publish("session.message", {
            "sessionKey": key, "agentId": record.agent_id, "message": message_json(message),
            "messageId": message.message_id, "messageSeq": message.seq,
            "session": self.session_row(record)}, topic=session_topic(key))

    def sessions_changed(self, key: str, reason: str) -> None:
        if self.bus.count(SESSIONS_TOPIC) == 0:
            return
        record = self.sessions.get(key)
        payload = {"sessionKey": key, "reason": reason, "ts": self.clock_ms()}
        if record is not None:
            payload["agentId"] = record.agent_id
            payload["session"] = self.session_row(record)
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
    if message.stop_reason:
        out["stopReason"] = message.stop_reason
    if message.usage:
        out["usage"] = message.usage
    return out
