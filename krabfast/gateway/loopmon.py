"""Event-loop delay and utilization sampling for the health snapshot."""

from __future__ import annotations

import os
import time

from krabfast.protocol.handshake import EventLoopHealth

_DELAY_DEGRADED_MS = 200.0
_UTILIZATION_DEGRADED = 0.95


class LoopMonitor:
    """Schedules a callback every `interval` and records how late it runs."""

    def __init__(self, loop, interval: float = 0.5, keep: int = 120) -> None:
        self.loop = loop
        self.interval = interval
        self.keep = keep
        self.delays: list[float] = []
        self._handle = None
        self._expected = 0.0
        self._cpu0 = 0.0
        self._wall0 = 0.0
        self.degraded_since_ms: int | None = None

    def start(self) -> None:
        self._cpu0 = _cpu()
        self._wall0 = time.monotonic()
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        self._expected = time.monotonic() + self.interval
        self._handle = self.loop.call_later(self.interval, self._sample)

    def _sample(self) -> None:
        self.delays.append(max(0.0, (time.monotonic() - self._expected) * 1000))
        if len(self.delays) > self.keep:
            del self.delays[: len(self.delays) - self.keep]
        self._schedule()

    def snapshot(self) -> EventLoopHealth:
        cpu, wall = _cpu(), time.monotonic()
        spent = max(wall - self._wall0, 1e-9)
        ratio = max(0.0, (cpu - self._cpu0) / spent)
        self._cpu0, self._wall0 = cpu, wall
        ordered = sorted(self.delays) or [0.0]
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        reasons = []
        if p99 > _DELAY_DEGRADED_MS:
            reasons.append("event_loop_delay")
        if ratio > _UTILIZATION_DEGRADED:
            reasons.append("cpu")
        degraded = bool(reasons)
        if degraded and self.degraded_since_ms is None:
            self.degraded_since_ms = time.time_ns() // 1_000_000
        elif not degraded:
            self.degraded_since_ms = None
        return EventLoopHealth(
            degraded=degraded, reasons=reasons, interval_ms=self.interval * 1000,
            delay_p99_ms=round(p99, 3), delay_max_ms=round(ordered[-1], 3),
            utilization=round(min(ratio, 1.0), 4), cpu_core_ratio=round(ratio, 4),
            degraded_since_ms=self.degraded_since_ms)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system
