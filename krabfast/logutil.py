"""Log lines that clients can cause, throttled: at most one line per key per interval, with a
count of the lines suppressed in between, and a traceback only at debug level. One hostile
client must not be able to flood the log (or spend the gateway's CPU formatting it)."""

from __future__ import annotations

import logging
import time


class ThrottledLog:
    __slots__ = ("logger", "interval", "_clock", "_next", "_suppressed")

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock=time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}  # a few keys (format strings, kinds of failure)
        self._suppressed: dict[str, int] = {}

    def log(self, key: str, level: int, msg: str, *args, exc: BaseException | None = None) -> None:
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        now = self._clock()
        if now < self._next.get(key, 0.0):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._next[key] = now + self.interval
        if exc is not None:
            msg += " (%s: %s)"
            args += (type(exc).__name__, exc)
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar lines suppressed)"
            args += (suppressed,)
        logger.log(level, msg, *args,
                   exc_info=exc if exc is not None and logger.isEnabledFor(logging.DEBUG) else None)

    def reset(self) -> None:
        self._next.clear()
        self._suppressed.clear()
