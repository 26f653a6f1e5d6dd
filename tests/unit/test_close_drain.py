"""After a close the gateway lets a peer that is still reading its backlog finish it (the
close frame is queued behind it), and drops one that is not reading (issue 8, item 6).

`_drop_socket` runs `_CLOSE_GRACE_S` after `_Sink.close`, with the write buffer's size at
the close; here the grace is shortened and the transport faked.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from krabfast.gateway import server


class _Raw:
    def __init__(self, sizes) -> None:
        self.sizes = iter(sizes)  # what get_write_buffer_size returns at each look
        self.last = 0

    def get_write_buffer_size(self) -> int:
        self.last = next(self.sizes, self.last)  # the last one repeats
        return self.last


class _Transport:
    def __init__(self, sizes) -> None:
        self.underlying_transport = _Raw(sizes)
        self.is_disconnected = False
        self.graceful: bool | None = None
        self.looks = 0
        self.done = asyncio.Event()

    def disconnect(self, graceful: bool = True) -> None:
        self.graceful = graceful
        self.is_disconnected = True
        self.done.set()


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    monkeypatch.setattr(server, "_CLOSE_GRACE_S", 0.01)


def _drop(sizes, queued: int, drain_max_s: float = 5.0) -> tuple[bool, int]:
    """Run `_drop_socket` as `_Sink.close` schedules it; (graceful, how many looks it took)."""

    async def go():
        loop = asyncio.get_running_loop()
        transport = _Transport(sizes)
        raw = transport.underlying_transport
        real = raw.get_write_buffer_size

        def counted() -> int:
            transport.looks += 1
            return real()

        raw.get_write_buffer_size = counted
        loop.call_later(server._CLOSE_GRACE_S, server._drop_socket, transport, queued,
                        loop.time() + drain_max_s)
        await asyncio.wait_for(transport.done.wait(), 10)
        return transport.graceful, transport.looks

    return asyncio.run(go())


def test_a_peer_that_read_everything_gets_a_graceful_close():
    assert _drop([0], queued=5_000_000) == (True, 1)


def test_a_peer_that_does_not_read_is_dropped_after_the_grace():
    assert _drop([5_000_000], queued=5_000_000) == (False, 1)


def test_a_peer_still_reading_its_backlog_gets_to_finish_it_and_the_close_frame():
    """The flaky slow-consumer test's root cause: it resumed reading a ~20 MB backlog after
    the close, and was aborted 0.5 s later, close frame unsent, while still reading."""
    assert _drop([4_000_000, 3_000_000, 1_000, 0], queued=5_000_000) == (True, 4)


def test_a_peer_that_stops_reading_midway_is_dropped():
    assert _drop([4_000_000, 3_000_000, 3_000_000], queued=5_000_000) == (False, 3)


def test_a_trickling_peer_is_dropped_at_the_drain_deadline():
    # One byte read per look: never done.
    graceful, looks = _drop(itertools.count(5_000_000, -1), queued=5_000_001, drain_max_s=0.2)
    assert graceful is False and 5 <= looks < 1000


def test_already_disconnected_is_left_alone():
    async def go():
        transport = _Transport([123])
        transport.is_disconnected = True
        server._drop_socket(transport, 123, asyncio.get_running_loop().time() + 5)
        await asyncio.sleep(0.05)
        return transport.graceful

    assert asyncio.run(go()) is None
