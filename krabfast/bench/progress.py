"""Progress lines on stderr, only once a run has lasted a few seconds."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, enabled: bool = True, stream=None, after_s: float = 3.0,
                 every_s: float = 2.0) -> None:
        self.enabled = enabled
        self.stream = stream
        self.after_s = after_s
        self.every_s = every_s
        self.label = ""
        self.t0 = time.monotonic()
        self.last = 0.0
        self.workers: dict[int, dict] = {}

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        print(text, file=stream, flush=True)

    def start(self, label: str) -> None:
        self.label = label
        self.t0 = time.monotonic()
        self.last = 0.0
        self.workers = {}

    def note(self, text: str) -> None:
        """A phase message (starting a server, ...): always shown when enabled."""
        if self.enabled:
            self._write(f"[bench] {text}")

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.t0 < self.after_s or now - self.last < self.every_s:
            return
        self.last = now
        prefix = f"[{self.label} {now - self.t0:.0f}s]" if self.label else f"[{now - self.t0:.0f}s]"
        self._write(f"{prefix} {text}")

    def from_worker(self, index: int, msg: dict) -> None:
        """Pool callback: sum the workers' latest progress counters into one line."""
        if any(m.get("cmd") != msg.get("cmd") for m in self.workers.values()):
            self.workers = {}  # a new command: forget the previous one's counters
        self.workers[index] = msg
        totals: dict[str, int] = {}
        for m in self.workers.values():
            for key, value in m.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
        if "done" in totals and "of" in totals:
            self.update(f"{totals['done']:,}/{totals['of']:,}")
        elif totals:
            self.update(", ".join(f"{k} {v:,}" for k, v in totals.items()))
