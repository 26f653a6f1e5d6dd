"""Eager task start: a task whose first step runs now, in the caller's turn of the loop,
as Python 3.12's `asyncio.Task(..., eager_start=True)` does; a backport for 3.11.

Why: a chat run's first step writes the model request. Started the usual way it waits for
the loop's next turn, behind every callback queued before it (at 8 runs in flight, another
run's flush to 50 watchers is 0.3-0.5 ms of socket writes); and on 3.11 aiohttp writes the
request body in a task of its own, one more turn (on 3.12 it starts that task eagerly).

The 3.11 path: the coroutine takes its first step right here, with the new task set as the
loop's current task (so `asyncio.current_task()`, `asyncio.timeout()` and aiohttp's timers
work in it) and in the task's own context; tasks created during that step start eagerly
too (aiohttp's body write). The task then picks the coroutine up where it waits: its first
scheduled step hands the task the future the coroutine awaits (or the result, or the
exception, when the coroutine already finished). A cancel before that step reaches the
coroutine where it waits, as it would on a plain task.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import sys
from asyncio import tasks as _tasks

EAGER_NATIVE = sys.version_info >= (3, 12)

_WAITING, _RETURNED, _RAISED = 1, 2, 3


def start_eager(coro, *, loop: asyncio.AbstractEventLoop | None = None,
                context: contextvars.Context | None = None) -> asyncio.Task:
    """A task for `coro` whose first step has run by the time this returns."""
    if loop is None:
        loop = asyncio.get_running_loop()
    if EAGER_NATIVE:
        return asyncio.Task(coro, loop=loop, context=context, eager_start=True)
    return _start_eager_311(loop, coro, context)


class _Stepped(collections.abc.Coroutine):
    """`coro` after its first step, for a task to go on with (see the module docstring)."""

    __slots__ = ("coro", "state", "value")

    def __init__(self, coro) -> None:
        self.coro = coro
        self.state = 0  # 0: the task has taken over (or the first step has not run)
        self.value = None

    def first_step(self) -> None:
        try:
            self.value = self.coro.send(None)
            self.state = _WAITING
        except StopIteration as stop:
            self.value = stop.value
            self.state = _RETURNED
        except BaseException as exc:  # noqa: BLE001 - the task's first step raises it
            self.value = exc
            self.state = _RAISED

    def _handover(self):
        state, value = self.state, self.value
        self.state, self.value = 0, None
        if state == _RETURNED:
            raise StopIteration(value)
        if state == _RAISED:
            raise value
        return value  # what the coroutine waits on: the task waits on it now

    def send(self, value):
        if self.state:
            return self._handover()
        return self.coro.send(value)

    def throw(self, typ, val=None, tb=None):
        if self.state == _WAITING:
            self.state, self.value = 0, None  # cancelled before the task's first step
        elif self.state:
            return self._handover()  # it finished already: that is its outcome
        if val is None and tb is None:
            return self.coro.throw(typ)
        return self.coro.throw(typ, val, tb)

    def close(self) -> None:
        self.coro.close()

    def __await__(self):
        raise TypeError("an eagerly started coroutine belongs to its task")


def _start_eager_311(loop, coro, context) -> asyncio.Task:
    if context is None:
        context = contextvars.copy_context()
    stepped = _Stepped(coro)
    task = asyncio.Task(stepped, loop=loop, context=context)
    current = _tasks.current_task(loop)
    if current is not None:
        _tasks._leave_task(loop, current)
    _tasks._enter_task(loop, task)
    factory = loop.get_task_factory()
    loop.set_task_factory(_eager_factory)
    try:
        context.run(stepped.first_step)
    finally:
        loop.set_task_factory(factory)
        _tasks._leave_task(loop, task)
        if current is not None:
            _tasks._enter_task(loop, current)
    return task


def _eager_factory(loop, coro, **kwargs):
    return _start_eager_311(loop, coro, kwargs.get("context"))
