"""Runs: one model turn of a session, from the user's message to the assistant's reply.

A run is a tracked task owned by the gateway, not by the socket that asked for it: a client
that disconnects does not stop a run others watch (as on the reference). Per session one run
is active at a time; later ones wait their turn in order (the reference's behaviour for a
turn that cannot be steered). At most `max_active` runs stream at once across sessions.
`abort` cancels the model stream at once; `shutdown` aborts every run cleanly.

Streaming: `chat` and `agent` events go to every `operator.read`
socket through the event bus; a socket that is behind skips deltas (each carries the text so
far, so the next one it gets is complete) but never a final, error or aborted event. Deltas
are paced: the first at once, then at most one per `DELTA_INTERVAL_S` per run.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from krabfast.gateway.eager import start_eager
from krabfast.models.base import ChatMessage, Finish, ModelRequest, ProviderError, TextDelta, Usage
from krabfast.models.failure_copy import error_fields, live_message, transcript_text
from krabfast.models.thinking import level_not_offered, normalize_think_level
from krabfast.models.usage import message_usage, session_usage

if TYPE_CHECKING:
    from krabfast.models.registry import ModelInfo

log = logging.getLogger("krabfast.runs")

DELTA_INTERVAL_S = 0.075
FINISHED_KEPT = 2048  # finished runs remembered (idempotent retries, agent.wait)
HISTORY_TURNS = 200   # transcript messages sent to the model


@dataclass
class Run:
    run_id: str
    session_key: str
    agent_id: str
    message: str
    kind: str                      # "chat" or "agent"
    model: str | None = None       # "provider/model" override, else the session's / default
    origin: str | None = None      # connection id of the socket that asked (served first)
    thinking: str | None = None    # this run's thinking level (the request's), normalized
    status: str = "queued"         # queued, running, ok, error, aborted, interrupted
    started_at: int | None = None
    ended_at: int | None = None
    text: str = ""
    emitted: int = 0               # len(text) already sent in deltas
    seq: int = 0                   # payload seq of this run's chat events
    agent_seq: int = 0             # payload seq of its agent events
    usage: dict | None = None      # the model's counts: {input, output, total}
    info: ModelInfo | None = None  # its model, once resolved (cost, what answered)
    stop_reason: str | None = None
    error: str | None = None
    error_kind: str | None = None
    task: asyncio.Task | None = None
    done: asyncio.Future | None = None
    last_delta_at: float = 0.0
    flush_handle: asyncio.TimerHandle | None = None
    start_pending: bool = False    # its lifecycle start is still to be published
    waiters: list = field(default_factory=list)

    def outcome(self) -> dict:
        """What agent.wait and the agent's final answer report."""
        out = {"runId": self.run_id, "status": self.status}
        if self.started_at is not None:
            out["startedAt"] = self.started_at
        if self.ended_at is not None:
            out["endedAt"] = self.ended_at
        if self.error:
            out["error"] = self.error
        return out


class RunManager:
    def __init__(self, conv, *, max_active: int = 8) -> None:
        # The conversation services (gateway/conversations.py): sessions store, model
        # catalog, event bus, clock, and the session events it publishes.
        self.hub = conv
        self.max_active = max_active
        self.runs: OrderedDict[str, Run] = OrderedDict()   # by run id, oldest first
        self.active: dict[str, Run] = {}                  # session key -> running run
        self.queued: dict[str, deque[Run]] = {}           # session key -> waiting runs
        self.tasks: set[asyncio.Task] = set()
        self._slots: asyncio.Semaphore | None = None
        self.closing = False

    # -- starting --------------------------------------------------------------------------------
    def get(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)

    def submit(self, session_key: str, agent_id: str, message: str, run_id: str, *,
               kind: str = "chat", model: str | None = None, origin: str | None = None,
               launch: bool = True, thinking: str | None = None) -> tuple[Run, bool]:
        """Start (or queue) a run; (run, False) when `run_id` is already known: the same
        idempotency key never starts a second model request. `origin`: the asking
        connection, which gets the run's events before the other watchers. With
        `launch=False` the caller starts it with `launch(run)` (once its answer is out).
        `thinking`: the request's thinking level for this run only (as given: an unknown
        one is ignored, as on the reference)."""
        known = self.runs.get(run_id)
        if known is not None:
            return known, False
        if self.closing:
            raise ProviderError("the gateway is shutting down", kind="provider")
        session, created = self.hub.sessions.ensure(session_key, agent_id)
        run = Run(run_id, session_key, agent_id, message, kind, model or session.model or None,
                  origin, thinking=normalize_think_level(thinking))
        run.done = asyncio.get_running_loop().create_future()
        self._remember(run)
        if created:
            self.hub.sessions_changed(session_key, "create")
        if launch:
            self.launch(run)
        return run, True

    def launch(self, run: Run, *, eager: bool = False) -> None:
        """Start a submitted run, or queue it behind its session's active run. `eager`: its
        first step (which writes the model request) runs now, not on the loop's next turn
        (see gateway/eager.py); for a caller whose answer is already out, so no event of
        the run can precede it."""
        if run.session_key in self.active:
            self.queued.setdefault(run.session_key, deque()).append(run)
        else:
            self._start(run, eager)

    def _remember(self, run: Run) -> None:
        self.runs[run.run_id] = run
        while len(self.runs) > FINISHED_KEPT:
            oldest_id, oldest = next(iter(self.runs.items()))
            if oldest.done is not None and not oldest.done.done():
                break  # never forget a live run
            del self.runs[oldest_id]

    def _start(self, run: Run, eager: bool = False) -> None:
        """The run becomes its session's active one: its message enters the transcript now
        (a queued message waits outside it, so each turn sees the turns before it)."""
        self.active[run.session_key] = run
        hub = self.hub
        user = hub.sessions.append_message(run.session_key, "user", run.message,
                                           run_id=run.run_id, ts=hub.clock_ms())
        hub.session_message(run.session_key, user)
        hub.sessions_changed(run.session_key, "send")
        coro = self._execute(run)
        task = start_eager(coro) if eager else asyncio.ensure_future(coro)
        run.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- one run -----------------------------------------------------------------------------
    async def _execute(self, run: Run) -> None:
        hub = self.hub
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_active)
        try:
            async with self._slots:
                run.status = "running"
                run.started_at = hub.clock_ms()
                hub.sessions.run_started(run.run_id, run.session_key, run.started_at)
                # The model request goes out first: the lifecycle start (a fan-out to every
                # operator.read socket) follows two loop turns later, once the request is
                # written, and always before any other event of the run (_publish_start).
                run.start_pending = True
                asyncio.get_running_loop().call_soon(self._start_soon, run)
                await self._stream(run)
                await self._finish_ok(run)
        except asyncio.CancelledError:
            self._finish_aborted(run)
        except ProviderError as exc:
            self._finish_error(run, str(exc), exc.kind, exc.status)
        except Exception as exc:  # a bug: the run ends with an error, the gateway lives on
            log.exception("run %s failed", run.run_id)
            self._finish_error(run, f"internal error: {type(exc).__name__}", "internal")
        finally:
            self._settle(run)

    async def _stream(self, run: Run) -> None:
        hub = self.hub
        backend, info = hub.models.resolve(run.model)
        run.info = info
        profile = info.thinking
        if run.thinking is not None and run.thinking not in profile.levels:
            # As the reference: the turn is answered without asking the model.
            run.text = level_not_offered(run.thinking, info.ref, profile.levels)
            run.stop_reason = "stop"
            run.emitted = len(run.text)  # no delta: the final alone carries it
            return
        history = hub.sessions.messages(run.session_key, limit=HISTORY_TURNS)
        request = ModelRequest(model=info.own_id,
                               messages=[m for m in (_chat_message(r) for r in history) if m],
                               max_tokens=info.max_tokens,
                               thinking=self._thinking(run, info, profile.default))
        stream = backend.stream(request)
        async for event in stream:
            if type(event) is TextDelta:
                if event.text:
                    run.text += event.text
                    self._maybe_delta(run)
            elif type(event) is Usage:
                run.usage = {"input": event.input_tokens, "output": event.output_tokens,
                             "total": event.total_tokens}
            elif type(event) is Finish:
                run.stop_reason = event.stop_reason
                # The answer is complete: the final goes out now; what is left of the
                # stream (an HTTP backend reads its tail to reuse the connection) ends in
                # the background, never delaying the run.
                self._finish_stream(stream)
                return

    def _thinking(self, run: Run, info, default: str) -> str | None:
        """The run's thinking level: the request's, else the session's (sessions.patch
        keeps it one the model offers), else the model's default; None for a model that
        does not reason."""
        if not info.reasoning:
            return None
        if run.thinking is not None:
            return run.thinking
        session = self.hub.sessions.get(run.session_key)
        level = session.settings.get("thinking_level") if session is not None else None
        return level or default

    def _finish_stream(self, stream) -> None:
        task = asyncio.ensure_future(_exhaust(stream))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _start_soon(self, run: Run) -> None:
        asyncio.get_running_loop().call_soon(self._publish_start, run)

    def _publish_start(self, run: Run) -> None:
        if run.start_pending:
            run.start_pending = False
            self._agent_event(run, "lifecycle", {"phase": "start", "startedAt": run.started_at})
            self.hub.sessions_changed(run.session_key, phase="start", run_id=run.run_id)

    # -- deltas ------------------------------------------------------------------------------
    def _maybe_delta(self, run: Run) -> None:
        loop = asyncio.get_running_loop()
        wait = run.last_delta_at + DELTA_INTERVAL_S - loop.time()
        if wait <= 0:
            self._emit_delta(run)
        elif run.flush_handle is None:
            run.flush_handle = loop.call_later(wait, self._emit_delta, run)

    def _emit_delta(self, run: Run) -> None:
        run.flush_handle = None
        if run.emitted >= len(run.text) or run.status != "running":
            return
        delta = run.text[run.emitted:]
        run.emitted = len(run.text)
        run.last_delta_at = asyncio.get_running_loop().time()
        with self.hub.bus.corked():  # the pair goes out in one write per socket
            self._chat_event(run, "delta", {"deltaText": delta,
                                            "message": _assistant(run.text, self.hub.clock_ms())},
                             droppable=True)
            self._agent_event(run, "assistant", {"text": run.text, "delta": delta})

    def _cancel_flush(self, run: Run) -> None:
        if run.flush_handle is not None:
            run.flush_handle.cancel()
            run.flush_handle = None

    # -- endings -----------------------------------------------------------------------------
    async def _finish_ok(self, run: Run) -> None:
        hub = self.hub
        self._cancel_flush(run)
        # As the reference: the deltas add up to the final text (the last one is not
        # swallowed by the pacing when the model ends in a burst).
        self._emit_delta(run)
        ended = hub.clock_ms()
        counts = (run.usage["input"], run.usage["output"]) if run.usage else None
        info = run.info
        message = hub.sessions.append_message(
            run.session_key, "assistant", [{"type": "text", "text": run.text}], run_id=run.run_id,
            usage=message_usage(*counts, info.cost) if counts else None,
            stop_reason=run.stop_reason or "stop", ts=ended, model=info.answered_by)
        hub.sessions.run_finished(run.run_id, "ok", ended)
        record = hub.sessions.get(run.session_key)
        if record is not None:  # the row's counters are the last turn's, as the reference's
            hub.sessions.set_usage(run.session_key, session_usage(record.usage, counts, info.cost))
        # The turn is on disk before anyone is told it is complete (survives kill -9).
        await hub.durable()
        run.status = "ok"
        run.ended_at = ended
        # The stored message's transcript position, as history and session.message carry
        # it: the reference's Control UI then shows the streamed reply and the stored one
        # as one message whichever reaches it first.
        final = {**_assistant(run.text, run.ended_at),
                 "__openclaw": {"id": message.message_id, "seq": message.seq}}
        # (no usage, as the reference: the transcript message and the session row have it)
        extra = {"message": final, "stopReason": run.stop_reason or "stop"}
        with hub.bus.corked():
            self._chat_event(run, "final", extra)
            self._agent_event(run, "lifecycle", {
                "phase": "end", "stopReason": run.stop_reason or "stop", "aborted": False,
                "startedAt": run.started_at, "endedAt": run.ended_at})
            hub.session_message(run.session_key, message)
            hub.sessions_changed(run.session_key, phase="end", run_id=run.run_id)

    def _finish_aborted(self, run: Run) -> None:
        self._cancel_flush(run)
        run.status = "aborted"
        run.ended_at = self.hub.clock_ms()
        extra = {"stopReason": "rpc"}
        if run.text:
            extra["message"] = _assistant(run.text, run.ended_at)
        self._chat_event(run, "aborted", extra)
        self._agent_event(run, "lifecycle", {"phase": "end", "aborted": True,
                                             "endedAt": run.ended_at})

    def _finish_error(self, run: Run, message: str, kind: str,
                      status: int | None = None) -> None:
        """As the reference: the event says what failed in its words; the failed turn is kept
        in the transcript (its note and what the model had said, stopReason "error")."""
        self._cancel_flush(run)
        hub = self.hub
        run.status = "error"
        run.ended_at = hub.clock_ms()
        info = run.info
        provider, model = (info.provider, info.own_id) if info is not None else (None, None)
        message = live_message(message, kind, status, info.ref if info is not None else None)
        run.error, run.error_kind = message, kind
        text = transcript_text(kind, status, run.text)
        if text is not None and hub.sessions.get(run.session_key) is not None:
            kept = hub.sessions.append_message(
                run.session_key, "assistant", [{"type": "text", "text": text}],
                run_id=run.run_id, usage=message_usage(0, 0, info.cost if info else None),
                stop_reason="error", ts=run.ended_at, model=info.answered_by if info else None)
            hub.session_message(run.session_key, kept)
        self._chat_event(run, "error", {"errorMessage": message,
                                        **error_fields(kind, status, provider, model)})
        self._agent_event(run, "lifecycle", {"phase": "error", "error": message,
                                             "endedAt": run.ended_at})

    def _settle(self, run: Run) -> None:
        """The run is over (whatever the reason): record it, wake its waiters, start the
        next one of its session."""
        hub = self.hub
        if run.ended_at is None:
            run.ended_at = hub.clock_ms()
        try:
            hub.sessions.run_finished(run.run_id, run.status, run.ended_at, error=run.error)
        except Exception:
            log.exception("recording the end of run %s failed", run.run_id)
        if run.done is not None and not run.done.done():
            run.done.set_result(run.outcome())
        if self.active.get(run.session_key) is run:
            del self.active[run.session_key]
        if run.status in ("aborted", "error") and run.started_at is not None:
            # (an ok run announced its end with its final, in one write)
            hub.sessions_changed(run.session_key, phase="error" if run.status == "error" else "end",
                                 run_id=run.run_id)
        waiting = self.queued.get(run.session_key)
        if waiting:
            nxt = waiting.popleft()
            if not waiting:
                del self.queued[run.session_key]
            if not self.closing:
                self._start(nxt)
            else:
                self._drop_queued(nxt)

    def _drop_queued(self, run: Run) -> None:
        run.status = "aborted"
        run.ended_at = self.hub.clock_ms()
        self._chat_event(run, "aborted", {"stopReason": "rpc"})
        if run.done is not None and not run.done.done():
            run.done.set_result(run.outcome())

    # -- control -----------------------------------------------------------------------------
    def abort(self, session_key: str, run_id: str | None = None) -> list[str]:
        """Cancel the session's runs (or just `run_id`): the running one's model stream
        closes at once, queued ones never start. Returns the run ids aborted."""
        aborted = []
        waiting = self.queued.get(session_key)
        if waiting:
            keep = deque()
            for run in waiting:
                if run_id is None or run.run_id == run_id:
                    self._drop_queued(run)
                    aborted.append(run.run_id)
                else:
                    keep.append(run)
            if keep:
                self.queued[session_key] = keep
            else:
                del self.queued[session_key]
        active = self.active.get(session_key)
        if active is not None and (run_id is None or active.run_id == run_id):
            if active.task is not None and not active.task.done():
                active.task.cancel()
                aborted.append(active.run_id)
        return aborted

    def session_runs(self, session_key: str) -> list[Run]:
        runs = list(self.queued.get(session_key, ()))
        if session_key in self.active:
            runs.insert(0, self.active[session_key])
        return runs

    async def wait(self, run_id: str, timeout_ms: int) -> dict:
        """agent.wait: the run's outcome, or `timeout` (the run goes on)."""
        run = self.runs.get(run_id)
        if run is None or run.done is None:
            return {"runId": run_id, "status": "timeout"}
        if not run.done.done():
            try:
                await asyncio.wait_for(asyncio.shield(run.done), max(0, timeout_ms) / 1000)
            except asyncio.TimeoutError:
                out = run.outcome()
                out["status"] = "timeout"
                return out
        return run.done.result()

    async def shutdown(self) -> None:
        """Abort every run; returns once their tasks have ended."""
        self.closing = True
        for key in list(self.queued):
            for run in self.queued.pop(key):
                self._drop_queued(run)
        tasks = [t for t in self.tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- events ------------------------------------------------------------------------------
    def _chat_event(self, run: Run, state: str, extra: dict, *, droppable: bool = False) -> None:
        if run.start_pending:
            self._publish_start(run)
        run.seq += 1
        payload = {"runId": run.run_id, "sessionKey": run.session_key, "agentId": run.agent_id,
                   "seq": run.seq, "state": state, **extra}
        self.hub.bus.publish("chat", payload, droppable=droppable, first=run.origin)

    def _agent_event(self, run: Run, stream: str, data: dict) -> None:
        # Every run (chat.send's too) reports on the agent stream, as on the reference.
        if run.start_pending:
            self._publish_start(run)
        run.agent_seq += 1
        event = {"runId": run.run_id, "seq": run.agent_seq, "stream": stream,
                 "ts": self.hub.clock_ms(), "data": data, "isHeartbeat": False,
                 "sessionKey": run.session_key, "agentId": run.agent_id}
        if stream == "lifecycle":  # as the reference: which transcript the run is in
            record = self.hub.sessions.get(run.session_key)
            if record is not None:
                event["sessionId"] = record.session_id
        self.hub.bus.publish("agent", event, droppable=stream == "assistant", first=run.origin)


async def _exhaust(stream) -> None:
    """Run a model stream past its Finish to its end (errors there do not matter)."""
    try:
        async for _ in stream:
            pass
    except Exception:  # noqa: BLE001 - the run already ended well
        log.debug("a model stream failed after its finish", exc_info=True)


def new_run_id() -> str:
    return str(uuid.uuid4())


def _assistant(text: str, ts: int | None = None) -> dict:
    message = {"role": "assistant", "content": [{"type": "text", "text": text}]}
    if ts is not None:
        message["timestamp"] = ts
    return message


def _chat_message(record) -> ChatMessage | None:
    """A transcript message as the model sees it (text parts joined); a failed turn's is
    not shown to it."""
    if record.stop_reason == "error":
        return None
    content = record.content
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if record.role not in ("user", "assistant", "system") or not isinstance(content, str):
        return None
    return ChatMessage(role=record.role, content=content)

