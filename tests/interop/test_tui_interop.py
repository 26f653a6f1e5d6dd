"""The reference's terminal UI (`openclaw tui --url ... --token ...`) chatting with a gateway.

The TUI runs in a pseudo-terminal, as a user runs it: `--message` sends the first turn once
it is connected, and a second turn is typed at its prompt. The screen (ANSI stripped) must
show each reply, streamed, and the TUI must go back to idle with no error line; the turns
must then be in the session's history. Run against krabfast and against the reference, both
on the fake OpenAI-compatible provider of test_chat_interop (the same answer for both), so
the reference's screen proves what the test expects.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time
import uuid

import pytest

from tests.integration.helpers import TOKEN

from .helpers import BOTH_GATEWAYS, session_turns
from .test_chat_interop import (  # noqa: F401 - fixtures used by name
    PROBE_TEXT,
    gw,
    krabfast_chat_gateway,
    probe_fake,
    ref_chat_gateway,
)

pytestmark = pytest.mark.interop

COLUMNS, ROWS = 200, 40
# What the TUI says at start against krabfast, which serves no question or plugin-approval
# queue (docs/reference/differences.md): it asks for both and reports the unknown methods.
KRABFAST_KNOWN_LINES = (
    "question refresh failed; reconnect or use /question to retry",
    "plugin approval refresh failed: unknown method: plugin.approval.list",
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>]")


def screen_text(raw: bytes) -> str:
    """What the TUI wrote, escape sequences removed and whitespace runs collapsed (its
    redraws put the streamed text on one line)."""
    return " ".join(_ANSI.sub(" ", raw.decode("utf-8", "replace")).split())


class Tui:
    """`openclaw tui` in a pseudo-terminal of COLUMNS x ROWS."""

    def __init__(self, reference, home, args: list[str]) -> None:
        env = reference.env(HOME=str(home), TERM="xterm-256color", COLUMNS=str(COLUMNS),
                            LINES=str(ROWS))
        env.pop("CI", None)
        self.raw = b""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the TUI
            try:
                os.chdir(home)
                os.execve(str(reference.node), [str(reference.node), str(reference.openclaw_mjs),
                                                "tui", *args], env)
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))

    def read_until(self, predicate, timeout: float) -> bool:
        """Read the terminal until `predicate(screen_text)` holds (True) or `timeout` (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(screen_text(self.raw)):
                return True
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # the TUI exited
                    return predicate(screen_text(self.raw))
                if not data:
                    return predicate(screen_text(self.raw))
                self.raw += data
        return predicate(screen_text(self.raw))

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode() + b"\r")

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)

    def describe(self, gateway) -> str:
        return (f"--- screen (ANSI stripped, last 3000)\n{screen_text(self.raw)[-3000:]}\n"
                f"--- gateway log\n{gateway.output()[-3000:]}")


def answered(screen: str, message: str) -> bool:
    """`message` (what the user sent) shows, then the fake's whole answer and the idle
    status (in either order: the TUI may go idle at the final, then redraw the reply)."""
    at = screen.rfind(message)
    return at >= 0 and PROBE_TEXT in screen[at:] and "idle" in screen[at:]


@BOTH_GATEWAYS
def test_tui_chats_with_the_gateway(target, gw, reference, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    name = "tui-" + uuid.uuid4().hex[:8]
    session_key = f"agent:main:{name}"
    first, second = f"first turn {name}", f"second turn {name}"
    tui = Tui(reference, home, ["--url", gw.url, "--token", TOKEN, "--session", session_key,
                                "--message", first])
    try:
        # The first turn streams in, and the TUI goes back to idle after it.
        shown = tui.read_until(lambda s: answered(s, first), 90)
        assert shown, tui.describe(gw)
        tui.type(second)
        shown = tui.read_until(lambda s: answered(s, second), 60)
        assert shown, tui.describe(gw)
        screen = screen_text(tui.raw)
        if target == "krabfast":
            for line in KRABFAST_KNOWN_LINES:
                screen = screen.replace(line, "")
        for bad in ("error", "disconnected", "failed", "unauthorized", "unknown method"):
            assert bad not in screen.lower(), (bad, tui.describe(gw))
        # The footer counts the session's tokens against its model's context window.
        assert re.search(r"tokens \d[\d.]*k?/131k", screen), tui.describe(gw)
    finally:
        tui.stop()

    turns = session_turns(gw.url, session_key)
    assert turns == [("user", first), ("assistant", PROBE_TEXT),
                     ("user", second), ("assistant", PROBE_TEXT)], turns

