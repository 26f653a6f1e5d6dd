"""The reference's own Control UI (the `openclaw` npm package the interop tests install),
served by krabfast and opened in headless Chromium: it connects with the token from the URL
fragment, pairs its device silently on loopback, and completes a chat turn with krabfast's
offline model. Every WebSocket frame is recorded: each request the UI makes gets an answer,
the methods krabfast does not serve answer with a clean error (listed in
docs/reference/web-facts.md section 8), the socket stays open and the page throws nothing.
The frame log and a screenshot are kept under $KRABFAST_ARTIFACTS/browser/."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the `chromium` fixture skips (fails under KRABFAST_REQUIRE_BROWSER=1)
    expect = None

TOKEN = "control-ui-test-token"
OFFLINE_REPLY = 'you said "hello krab"'


@pytest.fixture
def control_ui_root(reference):
    root = reference.node_modules / "openclaw" / "dist" / "control-ui"
    if not (root / "index.html").is_file():
        pytest.fail(f"the reference package has no Control UI build at {root}", pytrace=False)
    return root


class FrameLog:
    """Every frame of every WebSocket the page opens, and what they add up to."""

    def __init__(self, page) -> None:
        self.frames: list[dict] = []
        self.sockets: list = []
        self.closed: list[str] = []
        page.on("websocket", self._socket)

    def _socket(self, ws) -> None:
        self.sockets.append(ws)
        ws.on("framesent", lambda payload: self._frame("sent", payload))
        ws.on("framereceived", lambda payload: self._frame("received", payload))
        ws.on("close", lambda _ws: self.closed.append(ws.url))

    def _frame(self, direction: str, payload) -> None:
        try:
            frame = json.loads(payload)
        except (TypeError, ValueError):
            frame = {"unparsed": str(payload)[:200]}
        self.frames.append({"dir": direction, "t": time.monotonic(), **frame})

    def requests(self) -> dict[str, str]:
        return {f["id"]: f["method"] for f in self.frames
                if f["dir"] == "sent" and f.get("type") == "req"}

    def responses(self) -> dict[str, dict]:
        return {f["id"]: f for f in self.frames
                if f["dir"] == "received" and f.get("type") == "res"}

    def summary(self, grace_s: float = 2.0) -> dict[str, dict]:
        """method -> {"calls": n, "ok": n, "errors": {code: message}} in first-call order;
        "unanswered" counts requests older than `grace_s` with no answer yet."""
        out: dict[str, dict] = {}
        answers = self.responses()
        sent_at = {f["id"]: f["t"] for f in self.frames
                   if f["dir"] == "sent" and f.get("type") == "req"}
        for rid, method in self.requests().items():
            entry = out.setdefault(method, {"calls": 0, "ok": 0, "errors": {}})
            entry["calls"] += 1
            res = answers.get(rid)
            if res is None and time.monotonic() - sent_at[rid] < grace_s:
                continue  # still in flight
            if res is None:
                entry.setdefault("unanswered", 0)
                entry["unanswered"] += 1
            elif res.get("ok"):
                entry["ok"] += 1
            else:
                err = res.get("error") or {}
                entry["errors"][str(err.get("code"))] = str(err.get("message"))[:160]
        return out

    def hello(self) -> dict | None:
        for f in self.frames:
            if f.get("type") == "res" and f.get("ok") and \
                    (f.get("payload") or {}).get("type") == "hello-ok":
                return f["payload"]
        return None

    def events(self) -> list[str]:
        return sorted({f["event"] for f in self.frames
                       if f["dir"] == "received" and f.get("type") == "event"})


def _save_record(artifacts, log: FrameLog, summary: dict) -> None:
    record = {"methods": summary, "events": log.events(),
              "closed_sockets": log.closed, "frames": len(log.frames)}
    (artifacts / "control-ui-frames.json").write_text(json.dumps(record, indent=1) + "\n")


def _composer(page):
    return page.get_by_role("textbox", name="Chat composer")


def test_reference_control_ui_chats_through_krabfast(gateway_server, control_ui_root, page,
                                                     artifacts):
    gw = gateway_server("--token", TOKEN, "--control-ui-root", str(control_ui_root))
    base = f"http://127.0.0.1:{gw.port}/"
    with urllib.request.urlopen(base, timeout=5) as res:  # served by krabfast, rewritten
        assert b'data-openclaw-control-ui-base-path=""' in res.read()
        assert "sha256-" in res.headers["Content-Security-Policy"]
    log = FrameLog(page)
    page.goto(base + f"#token={TOKEN}")

    # Connected: hello-ok came back on the UI's socket, and the token left the address bar.
    page.wait_for_function("() => !location.hash.includes('token=')", timeout=15_000)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and log.hello() is None:
        page.wait_for_timeout(200)
    connects = [f for f in log.frames if f["dir"] == "sent" and f.get("method") == "connect"]
    assert connects, "the UI never sent connect"
    params = connects[0]["params"]
    assert params["client"]["id"] == "openclaw-control-ui" and params["auth"]["token"] == TOKEN
    assert params.get("device"), "the UI connected without its device identity"
    hello = log.hello()
    assert hello, f"no hello-ok: {[f for f in log.frames if f.get('type') == 'res'][:3]}\n" \
                  f"{gw.output()}"
    # Paired silently on loopback: the device got its token in hello-ok.
    assert (hello.get("auth") or {}).get("deviceToken"), hello.get("auth")

    composer = _composer(page)
    expect(composer).to_be_editable(timeout=20_000)
    composer.fill("hello krab")
    composer.press("Enter")
    expect(page.get_by_text(OFFLINE_REPLY).first).to_be_visible(timeout=20_000)
    page.wait_for_timeout(1500)  # let the follow-up calls after the turn (history, ...) land
    # One turn on screen once history, events and the UI's own pending message are merged
    # (the UI tells them apart by __openclaw.id and idempotencyKey "<runId>:user").
    expect(page.get_by_text(OFFLINE_REPLY)).to_have_count(1)
    expect(page.get_by_text("hello krab", exact=True)).to_have_count(1)
    assert TOKEN not in page.url
    page.screenshot(path=str(artifacts / "control-ui-chat.png"))

    summary = log.summary()
    _save_record(artifacts, log, summary)

    sends = [f for f in log.frames if f["dir"] == "sent" and f.get("method") == "chat.send"]
    assert sends and sends[0]["params"]["message"] == "hello krab"
    assert summary["chat.send"]["ok"] >= 1, summary["chat.send"]
    finals = [f for f in log.frames if f.get("type") == "event" and f.get("event") == "chat"
              and (f.get("payload") or {}).get("state") == "final"]
    assert finals, "no chat final event reached the UI"
    # Degrading cleanly: every request answered, every refusal a well-formed error, the
    # socket never closed under the UI, and the UI's own fallback panel never shown.
    unanswered = {m: s for m, s in summary.items() if s.get("unanswered")}
    assert not unanswered, unanswered
    for method, entry in summary.items():
        for code, message in entry["errors"].items():
            assert code in ("INVALID_REQUEST", "FORBIDDEN", "UNAVAILABLE", "NOT_FOUND"), \
                (method, code, message)
    assert not log.closed, f"the UI's socket closed: {log.closed}\n{gw.output()}"
    expect(page.locator("#openclaw-mount-fallback")).to_be_hidden()

    # A reload of the deep link the UI moved to (/chat/...) is the SPA fallback, and the UI
    # reconnects with the token it kept for this tab: the turn is there, once.
    assert page.url.startswith(base) and page.url != base, page.url
    page.reload()
    expect(page.get_by_text(OFFLINE_REPLY)).to_have_count(1, timeout=20_000)
    expect(page.get_by_text("hello krab", exact=True)).to_have_count(1)
    assert len([f for f in log.frames if f["dir"] == "sent"
                and f.get("method") == "connect"]) == 2
    page.wait_for_timeout(1500)
    summary = log.summary()
    _save_record(artifacts, log, summary)  # both page loads: what docs/reference lists
    assert not {m: s for m, s in summary.items() if s.get("unanswered")}
