"""The run manager without sockets: a scripted model backend, an in-memory session store
and a bus that records what it publishes."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import pytest

from krabfast.gateway.runs import RunManager
from krabfast.gateway.session_rows import run_fields
from krabfast.models.base import Finish, ProviderError, TextDelta, Usage
from krabfast.models.registry import ModelInfo
from krabfast.store import Database
from krabfast.store.sessions import SessionStore


class Bus:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict, bool | None]] = []
        self.firsts: list[str | None] = []  # each publish's `first`
        self.corks: list[list[str]] = []    # the events of each corked block
        self._cork: list[str] | None = None

    def publish(self, event, payload, *, topic="", state_version=None, droppable=None,
                first=None):
        self.events.append((event, payload, droppable))
        self.firsts.append(first)
        if self._cork is not None:
            self._cork.append(event)
        return 1

    @contextlib.contextmanager
    def corked(self):
        self._cork = []
        yield
        self.corks.append(self._cork)
        self._cork = None

    def chat(self, run_id):
        return [p for e, p, _ in self.events if e == "chat" and p["runId"] == run_id]


class Backend:
    """Streams `words` (one TextDelta each, `pause` apart); `fail` raises after them."""

    api = "test"

    def __init__(self, words=("a ", "b ", "c"), pause=0.0, fail=None) -> None:
        self.words, self.pause, self.fail = words, pause, fail
        self.requests = []
        self.cancelled = 0

    async def stream(self, request):
        self.requests.append(request)
        try:
            for word in self.words:
                await asyncio.sleep(self.pause)
                yield TextDelta(word)
            if self.fail is not None:
                raise self.fail
            yield Usage(1, len(self.words), 1 + len(self.words))
            yield Finish("stop")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def aclose(self):
        pass


class Models:
    def __init__(self, backend, info=None) -> None:
        self.backend = backend
        self.info = info or ModelInfo(id="test/model", provider="test", name="model", max_tokens=512)

    def resolve(self, ref):
        return self.backend, self.info


class Conv:
    def __init__(self, backend) -> None:
        self.bus = Bus()
        self.models = Models(backend)
        self.sessions = SessionStore(Database(":memory:"))
        self.clock_ms = lambda: 1_000
        self.messages = []
        self.changed = []

    def session_message(self, key, message):
        self.messages.append((key, message.role))

    def sessions_changed(self, key, reason=None, *, phase=None, run_id=None):
        # With the run manager known, what the session's row says at that moment.
        status = None
        runs = getattr(self, "runs", None)
        record = self.sessions.get(key)
        if runs is not None and record is not None:
            last = self.sessions.run(record.last_run_id) if record.last_run_id else None
            status = run_fields(runs.active.get(key), last).get("status")
        self.changed.append((reason or phase, run_id, status))

    async def durable(self):
        pass


def _go(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_a_run_streams_deltas_then_a_final_and_writes_the_transcript():
    async def main():
        conv = Conv(Backend())
        runs = RunManager(conv)
        run, created = runs.submit("agent:main:s", "main", "hi", "r1")
        assert created and run.status == "queued"
        outcome = await runs.wait("r1", 5000)
        assert outcome["status"] == "ok"
        events = conv.bus.chat("r1")
        assert [e["state"] for e in events][-1] == "final"
        assert events[-1]["message"]["content"][0]["text"] == "a b c"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        deltas = [e for e in events if e["state"] == "delta"]
        assert deltas and "".join(d["deltaText"] for d in deltas) in ("a b c", "a ", "a b ")
        # Deltas may be skipped by a slow socket; the final never.
        flags = {e["state"]: d for ev, e, d in conv.bus.events if ev == "chat"}
        assert flags["delta"] is True and flags["final"] is False
        roles = [m.role for m in conv.sessions.messages("agent:main:s")]
        assert roles == ["user", "assistant"]
        assert conv.sessions.run("r1").status == "ok"
    _go(main())


def test_the_asker_is_served_first_and_a_delta_pair_goes_out_corked():
    async def main():
        conv = Conv(Backend())
        runs = RunManager(conv)
        runs.submit("agent:main:s", "main", "hi", "r1", origin="conn-7")
        await runs.wait("r1", 5000)
        # Every event of the run names its asker as the connection served first.
        assert conv.bus.firsts and set(conv.bus.firsts) == {"conn-7"}
        # Each delta and its agent twin share one corked block (one write per socket);
        # so do the final and the run's closing events.
        assert ["chat", "agent"] in conv.bus.corks
        assert conv.bus.corks[-1][:2] == ["chat", "agent"]
        for block in conv.bus.corks[:-1]:  # (the lifecycle start may join the first)
            assert block[-2:] == ["chat", "agent"] and len(block) <= 3
    _go(main())


def test_the_same_key_never_starts_a_second_model_request():
    async def main():
        backend = Backend(pause=0.01)
        conv = Conv(backend)
        runs = RunManager(conv)
        first, _ = runs.submit("agent:main:s", "main", "hi", "k")
        again, created = runs.submit("agent:main:s", "main", "hi", "k")
        assert again is first and not created
        await runs.wait("k", 5000)
        runs.submit("agent:main:s", "main", "hi", "k")
        assert len(backend.requests) == 1
    _go(main())


def test_one_active_run_per_session_others_wait_in_order():
    async def main():
        backend = Backend(pause=0.01)
        conv = Conv(backend)
        runs = RunManager(conv)
        runs.submit("agent:main:s", "main", "one", "r1")
        second, _ = runs.submit("agent:main:s", "main", "two", "r2")
        other, _ = runs.submit("agent:main:t", "main", "elsewhere", "r3")
        await asyncio.sleep(0)
        assert second.status == "queued" and other.task is not None
        await runs.wait("r2", 5000)
        # r2's model request saw r1's whole turn first.
        last = backend.requests[-1] if backend.requests[-1].messages[-1].content == "two" else \
            next(r for r in backend.requests if r.messages[-1].content == "two")
        assert [m.content for m in last.messages] == ["one", "a b c", "two"]
    _go(main())


def test_session_events_follow_the_run_lifecycle_with_the_row_status_of_each_moment():
    async def main():
        conv = Conv(Backend())
        conv.runs = runs = RunManager(conv)
        runs.submit("agent:main:s", "main", "hi", "r1")
        await runs.wait("r1", 5000)
        # As the reference: created, a message sent, the run's start (running) and end
        # (done: the row is no longer "running" when its end is announced).
        assert conv.changed == [("create", None, None), ("send", None, "running"),
                                ("start", "r1", "running"), ("end", "r1", "done")]
        conv.changed.clear()
        conv.models.backend = Backend(fail=ProviderError("LLM request timed out.",
                                                         kind="timeout"))
        runs.submit("agent:main:s", "main", "again", "r2")
        await runs.wait("r2", 5000)
        assert conv.changed[-1] == ("error", "r2", "failed")
        conv.changed.clear()
        conv.models.backend = Backend(words=["w "] * 200, pause=0.01)
        runs.submit("agent:main:s", "main", "long", "r3")
        await asyncio.sleep(0.05)
        runs.abort("agent:main:s")
        await runs.wait("r3", 5000)
        assert conv.changed[-1] == ("end", "r3", "killed")
    _go(main())


def test_abort_cancels_the_stream_and_drops_queued_runs():
    async def main():
        backend = Backend(words=["w "] * 200, pause=0.01)
        conv = Conv(backend)
        runs = RunManager(conv)
        runs.submit("agent:main:s", "main", "long", "r1")
        runs.submit("agent:main:s", "main", "next", "r2")
        await asyncio.sleep(0.05)
        assert sorted(runs.abort("agent:main:s")) == ["r1", "r2"]
        assert (await runs.wait("r1", 5000))["status"] == "aborted"
        assert (await runs.wait("r2", 5000))["status"] == "aborted"
        assert backend.cancelled == 1 and len(backend.requests) == 1
        assert conv.bus.chat("r1")[-1]["state"] == "aborted"
        assert conv.bus.chat("r1")[-1]["stopReason"] == "rpc"
    _go(main())


@pytest.mark.parametrize("error, kind, said, kept", [
    # The reference's words (models/failure_copy.py): the event's, then the transcript's.
    (ProviderError("LLM request unauthorized.", kind="auth", status=401), None,
     "Authentication failed (provider returned HTTP 401). Your provider token may have "
     "expired — try the request again in a moment. If the failure persists, re-authenticate "
     "this provider.",
     "⚠️ LLM request failed (authentication failed, HTTP 401). Re-authenticate the provider "
     "and try again."),
    (ProviderError("LLM request rate limited.", kind="rate_limit", status=429), "rate_limit",
     "⚠️ API rate limit reached. Please try again later.",
     "⚠️ LLM request failed (rate limited, HTTP 429). This is usually temporary — try again "
     "shortly."),
    (ProviderError("LLM request timed out. (read)", kind="timeout"), "timeout",
     "LLM request timed out.",
     "⚠️ LLM request failed (request timed out). This is usually temporary — try again "
     "shortly."),
    (ProviderError("LLM request failed: provider returned an internal error. (HTTP 500)",
                   kind="provider", status=500), None,
     "⚠️ test/model request failed (provider internal error, HTTP 500). This is usually "
     "temporary — try again shortly.",
     "⚠️ LLM request failed (provider internal error, HTTP 500). This is usually temporary "
     "— try again shortly."),
    (ProviderError("LLM request failed: connection refused by the provider endpoint.",
                   kind="connection"), None,
     "LLM request failed: connection refused by the provider endpoint.", None),
])
def test_provider_errors_end_the_run_cleanly(error, kind, said, kept):
    async def main():
        conv = Conv(Backend(fail=error))
        runs = RunManager(conv)
        runs.submit("agent:main:s", "main", "hi", "r1")
        outcome = await runs.wait("r1", 5000)
        assert outcome["status"] == "error" and outcome["error"] == said
        last = conv.bus.chat("r1")[-1]
        assert last["state"] == "error" and last["errorMessage"] == said
        assert last.get("errorKind") == kind
        assert conv.sessions.run("r1").status == "error"
        # The failed turn stays in the transcript, its note then what the model had said
        # ("a b c"), and is not shown to the model again.
        failed = [m for m in conv.sessions.messages("agent:main:s") if m.role == "assistant"]
        text = f"{kept}\n\na b c" if kept else "a b c"
        assert failed[0].content == [{"type": "text", "text": text}]
        assert failed[0].stop_reason == "error"
        # The session takes the next run.
        conv.models.backend = Backend()
        runs.submit("agent:main:s", "main", "again", "r2")
        assert (await runs.wait("r2", 5000))["status"] == "ok"
        assert [m.content for m in conv.models.backend.requests[0].messages] == ["hi", "again"]
    _go(main())


def test_a_bug_in_a_backend_is_an_error_not_a_dead_gateway():
    async def main():
        conv = Conv(Backend(fail=ZeroDivisionError("bug")))
        runs = RunManager(conv)
        runs.submit("agent:main:s", "main", "hi", "r1")
        outcome = await runs.wait("r1", 5000)
        assert outcome["status"] == "error" and "internal error" in outcome["error"]
    _go(main())


def test_agent_wait_times_out_without_stopping_the_run_and_unknown_runs_time_out():
    async def main():
        conv = Conv(Backend(words=["w "] * 20, pause=0.01))
        runs = RunManager(conv)
        runs.submit("agent:main:s", "main", "hi", "r1")
        assert (await runs.wait("r1", 10))["status"] == "timeout"
        assert (await runs.wait("r1", 5000))["status"] == "ok"
        assert (await runs.wait("nope", 10)) == {"runId": "nope", "status": "timeout"}
    _go(main())


def test_shutdown_aborts_every_run():
    async def main():
        conv = Conv(Backend(words=["w "] * 200, pause=0.01))
        runs = RunManager(conv)
        runs.submit("agent:main:s", "main", "x", "r1")
        runs.submit("agent:main:s", "main", "y", "r2")
        await asyncio.sleep(0.03)
        await runs.shutdown()
        assert runs.get("r1").status == "aborted" and runs.get("r2").status == "aborted"
        assert not [t for t in runs.tasks if not t.done()]
        with pytest.raises(ProviderError):
            runs.submit("agent:main:s", "main", "z", "r3")
    _go(main())


def test_at_most_max_active_runs_stream_at_once():
    async def main():
        backend = Backend(words=["w "] * 5, pause=0.02)
        conv = Conv(backend)
        runs = RunManager(conv, max_active=2)
        for i in range(5):
            runs.submit(f"agent:main:s{i}", "main", "x", f"r{i}")
        await asyncio.sleep(0.03)
        assert sum(1 for r in runs.runs.values() if r.status == "running") == 2
        for i in range(5):
            assert (await runs.wait(f"r{i}", 5000))["status"] == "ok"
    _go(main())


class SlowTail(Backend):
    """Finishes, then takes `tail` seconds to end (an HTTP backend reading the rest of its
    stream so the connection is reused)."""

    def __init__(self, tail: float) -> None:
        super().__init__()
        self.tail = tail
        self.ended = False

    async def stream(self, request):
        async for event in super().stream(request):
            yield event
        await asyncio.sleep(self.tail)
        self.ended = True


def test_the_final_does_not_wait_for_the_end_of_the_model_stream():
    async def main():
        backend = SlowTail(tail=1.0)
        conv = Conv(backend)
        runs = RunManager(conv)
        runs.submit("agent:main:s", "main", "hi", "r1")
        loop = asyncio.get_running_loop()
        start = loop.time()
        outcome = await runs.wait("r1", 5000)
        assert outcome["status"] == "ok" and loop.time() - start < 0.5
        assert conv.bus.chat("r1")[-1]["state"] == "final" and not backend.ended
        for _ in range(100):  # the stream still runs to its end, in the background
            if backend.ended:
                break
            await asyncio.sleep(0.02)
        assert backend.ended
        await runs.shutdown()
    _go(main())


def test_shutdown_cancels_a_stream_still_ending_after_its_final():
    async def main():
        backend = SlowTail(tail=30.0)
        runs = RunManager(Conv(backend))
        runs.submit("agent:main:s", "main", "hi", "r1")
        assert (await runs.wait("r1", 5000))["status"] == "ok"
        await asyncio.wait_for(runs.shutdown(), 2)
        assert not backend.ended and not runs.tasks
    _go(main())


class Immediate(Backend):
    """Yields everything without ever awaiting (no loop turn before the first delta)."""

    async def stream(self, request):
        self.requests.append(request)
        for word in self.words:
            yield TextDelta(word)
        yield Finish("stop")


@pytest.mark.parametrize("backend", [Backend(), Immediate()], ids=["awaits", "immediate"])
def test_the_lifecycle_start_is_the_first_agent_event_of_a_run(backend):
    async def main():
        conv = Conv(backend)
        runs = RunManager(conv)
        runs.submit("agent:main:s", "main", "hi", "r1")
        assert (await runs.wait("r1", 5000))["status"] == "ok"
        agent = [p for e, p, _ in conv.bus.events if e == "agent" and p["runId"] == "r1"]
        assert agent[0]["stream"] == "lifecycle" and agent[0]["data"]["phase"] == "start"
        assert [p["data"].get("phase") for p in agent if p["stream"] == "lifecycle"] == ["start", "end"]
        assert [p["seq"] for p in agent] == list(range(1, len(agent) + 1))
        first_chat = next(i for i, (e, p, _) in enumerate(conv.bus.events) if e == "chat")
        start = next(i for i, (e, p, _) in enumerate(conv.bus.events) if e == "agent")
        assert start < first_chat
    _go(main())


def _paced(pause: float):
    """A manager over a backend that pauses `pause` s before each word: (backend, conv, runs)."""
    backend = Backend(pause=pause)
    conv = Conv(backend)
    return backend, conv, RunManager(conv)


def test_an_eager_launch_sends_the_model_request_before_it_returns():
    async def main():
        backend, conv, runs = _paced(0.01)
        run, _ = runs.submit("agent:main:s", "main", "hi", "e1", launch=False)
        # Submitted, not launched: nothing in the transcript, no model request yet.
        assert run.task is None and conv.sessions.messages("agent:main:s") == []
        runs.launch(run, eager=True)
        assert len(backend.requests) == 1  # in this turn, not the loop's next one
        assert [m.role for m in conv.sessions.messages("agent:main:s")] == ["user"]
        assert run.task is not None and not run.task.done()
        assert (await runs.wait("e1", 5000))["status"] == "ok"
        # A plain launch still starts on the loop's next turn.
        runs.submit("agent:main:t", "main", "hi", "e2")
        assert len(backend.requests) == 1
        await runs.wait("e2", 5000)
        assert len(backend.requests) == 2
    _go(main())


def test_an_eager_launch_behind_an_active_run_waits_its_turn():
    async def main():
        backend, _conv, runs = _paced(0.01)
        runs.submit("agent:main:s", "main", "one", "q1")
        second, _ = runs.submit("agent:main:s", "main", "two", "q2", launch=False)
        runs.launch(second, eager=True)
        assert second.status == "queued" and [r.run_id for r in runs.queued["agent:main:s"]] == ["q2"]
        assert (await runs.wait("q2", 5000))["status"] == "ok"
        assert [r.messages[-1].content for r in backend.requests] == ["one", "two"]
    _go(main())


def test_an_eager_run_aborted_in_the_same_turn_ends_aborted():
    async def main():
        backend, conv, runs = _paced(0.05)
        run, _ = runs.submit("agent:main:s", "main", "hi", "a1", launch=False)
        runs.launch(run, eager=True)
        assert runs.abort("agent:main:s") == ["a1"]  # before the task's first step
        assert (await runs.wait("a1", 5000))["status"] == "aborted"
        assert [e["state"] for e in conv.bus.chat("a1")] == ["aborted"]
        assert backend.cancelled == 1
    _go(main())


def test_the_model_request_carries_its_max_tokens_and_the_session_thinking_level():
    """The model's configured maxTokens caps the answer; a model that reasons gets the
    session's thinking level (else the reference's default, medium), one that does not
    gets none."""
    async def main():
        conv = Conv(Backend())
        runs = RunManager(conv)
        runs.submit("agent:main:plain", "main", "hi", "p1")
        await runs.wait("p1", 5000)
        conv.models.info = replace(conv.models.info, reasoning=True)
        runs.submit("agent:main:think", "main", "hi", "t1")
        await runs.wait("t1", 5000)
        conv.sessions.patch("agent:main:think", thinking_level="low")
        runs.submit("agent:main:think", "main", "again", "t2")
        await runs.wait("t2", 5000)
        return [(r.max_tokens, r.thinking) for r in conv.models.backend.requests]

    assert _go(main()) == [(512, None), (512, "medium"), (512, "low")]


def test_a_request_thinking_level_is_for_its_run_and_one_the_model_lacks_is_answered_locally():
    async def main():
        conv = Conv(Backend())
        conv.models.info = replace(conv.models.info, reasoning=True)
        runs = RunManager(conv)
        conv.sessions.ensure("agent:main:t", "main")
        conv.sessions.patch("agent:main:t", thinking_level="high")
        runs.submit("agent:main:t", "main", "hi", "t1", thinking=" Think-Hard ")
        await runs.wait("t1", 5000)
        runs.submit("agent:main:t", "main", "hi", "t2", thinking="bogus")  # not a level
        await runs.wait("t2", 5000)
        runs.submit("agent:main:t", "main", "hi", "t3", thinking="xhigh")
        await runs.wait("t3", 5000)
        return conv

    conv = _go(main())
    assert [r.thinking for r in conv.models.backend.requests] == ["low", "high"]
    assert conv.sessions.get("agent:main:t").settings["thinking_level"] == "high"
    events = conv.bus.chat("t3")
    assert [e["state"] for e in events] == ["final"]  # no model request, no delta
    assert events[0]["message"]["content"][0]["text"] == (
        'Thinking level "xhigh" is not supported for test/model. '
        "Use one of: off, minimal, low, medium, high.")
