"""gateway/eager.py: a task whose first step runs before `start_eager` returns. The
backport (`_start_eager_311`) is tested on every Python; `start_eager` on the running one
(3.12+: the standard library's eager start)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
import uvloop

from krabfast.gateway import eager
from krabfast.gateway.eager import start_eager

VAR = contextvars.ContextVar("eager_test", default="unset")

STARTERS = {
    "start_eager": lambda coro: start_eager(coro),
    "backport": lambda coro: eager._start_eager_311(asyncio.get_running_loop(), coro, None),
}


@pytest.fixture(params=sorted(STARTERS))
def starter(request):
    return STARTERS[request.param]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    if request.param == "uvloop":
        return uvloop.run
    return asyncio.run


def test_the_first_step_runs_before_it_returns_and_the_task_finishes_the_rest(starter, run):
    async def main():
        steps = []
        gate = asyncio.get_running_loop().create_future()

        async def body():
            steps.append("first")
            value = await gate
            steps.append(f"then {value}")
            return "done"

        task = starter(body())
        assert steps == ["first"] and not task.done()
        gate.set_result(7)
        assert await task == "done"
        assert steps == ["first", "then 7"]
    run(main())


def test_the_first_step_has_its_task_current_so_timeouts_work_in_it(starter, run):
    async def main():
        seen = {}

        async def body():
            seen["current"] = asyncio.current_task()
            async with asyncio.timeout(5):  # needs a current task
                await asyncio.sleep(0)
            return 1

        task = starter(body())
        assert seen["current"] is task
        assert asyncio.current_task() is not task  # the caller's is back
        assert await task == 1
    run(main())


def test_called_from_a_task_that_task_is_current_again_afterwards(starter, run):
    async def main():
        outer = asyncio.current_task()

        async def body():
            await asyncio.sleep(0)

        task = starter(body())
        assert asyncio.current_task() is outer
        await task
    run(main())


def test_context_changes_in_the_first_step_stay_in_the_task(starter, run):
    async def main():
        async def body():
            VAR.set("inside")
            await asyncio.sleep(0)
            return VAR.get()

        task = starter(body())
        assert VAR.get() == "unset"
        assert await task == "inside"
    run(main())


def test_a_coroutine_done_in_its_first_step_gives_its_result_or_exception(starter, run):
    async def main():
        async def returns():
            return 42

        async def raises():
            raise ValueError("boom")

        assert await starter(returns()) == 42
        failed = starter(raises())
        with pytest.raises(ValueError, match="boom"):
            await failed
    run(main())


def test_a_cancel_before_the_tasks_first_step_reaches_the_coroutine_where_it_waits(starter, run):
    async def main():
        log = []
        gate = asyncio.get_running_loop().create_future()

        async def body():
            try:
                await gate
            except asyncio.CancelledError:
                log.append("cancelled where it waited")
                raise
            finally:
                log.append("cleaned up")

        task = starter(body())
        task.cancel()  # same turn: the task has not taken its first step
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert log == ["cancelled where it waited", "cleaned up"]
    run(main())


def test_a_cancel_later_cancels_what_it_awaits(starter, run):
    async def main():
        gate = asyncio.get_running_loop().create_future()

        async def body():
            await gate

        task = starter(body())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gate.cancelled()  # the task waited on the coroutine's own future
    run(main())


def test_the_backport_starts_tasks_made_in_the_first_step_eagerly_and_restores_the_factory(run):
    async def main():
        loop = asyncio.get_running_loop()
        steps = []

        def factory(loop, coro, **kwargs):
            steps.append("own factory")
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)

        async def inner():
            steps.append("inner first step")
            await asyncio.sleep(0)

        async def body():
            child = asyncio.ensure_future(inner())  # aiohttp's body write, say
            steps.append("after create_task")
            await child

        task = eager._start_eager_311(loop, body(), None)
        assert steps == ["inner first step", "after create_task"]
        assert loop.get_task_factory() is factory
        await task
        asyncio.ensure_future(asyncio.sleep(0))
        assert steps[-1] == "own factory"
        loop.set_task_factory(None)
    run(main())
