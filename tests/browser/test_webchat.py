"""krabfast's WebChat page (/webchat/ on the gateway's port) in headless Chromium against
real gateways: a chat turn with the offline model and with a fake OpenAI-compatible model
(drawn as it streams), stop in the middle of a reply, the token taken from the fragment and
stripped from the address bar, silent pairing on loopback (and waiting for approval when
that is off), the device token in a new tab, refusals said in words, sessions, no-auth and
TLS gateways, a copy of the page served elsewhere (#gateway=), a reply that goes on across
a reconnect, and reconnecting by itself after the gateway restarts. Screenshots go to $KRABFAST_ARTIFACTS/browser/."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time

from krabfast.client import GatewayClient
from tests.conftest import REPO, _port_open, _stop
from tests.fakes import start_fake_openai

try:
    from playwright.sync_api import expect
except ImportError:  # the `chromium` fixture skips (fails under KRABFAST_REQUIRE_BROWSER=1)
    expect = None

TOKEN = "webchat-test-token"
OFFLINE_REPLY = 'you said "hello krab"'


def _connected(page, timeout: float = 15_000) -> None:
    expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=timeout)
    expect(page.locator("#input")).to_be_enabled()


def _send(page, text: str) -> None:
    page.locator("#input").fill(text)
    page.locator("#input").press("Enter")


def _replies(page):
    return page.locator('.msg[data-role="assistant"]')


def _body(page, index: int = -1) -> str:
    return _replies(page).nth(index).locator(".body").inner_text()


def _config(tmp_path, base_url: str) -> str:
    path = tmp_path / "openclaw.json"
    path.write_text(json.dumps({
        "gateway": {"auth": {"mode": "token", "token": TOKEN}},
        "models": {"providers": {"fake": {
            "baseUrl": base_url, "apiKey": "sk-test", "api": "openai-completions",
            "models": [{"id": "fake-1", "name": "Fake One"}]}}},
        "agents": {"defaults": {"model": {"primary": "fake/fake-1"}}},
    }))
    return str(path)


def _admin_call(url: str, method: str, params: dict) -> dict:
    async def main():
        async with GatewayClient(url, token=TOKEN, scopes=["operator.admin"]) as gw:
            return await gw.request(method, params)
    # Playwright's sync API keeps an event loop running in this thread: use another.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=30)


def _paired_devices(url: str) -> list[dict]:
    return _admin_call(url, "device.pair.list", {})["paired"]


def test_offline_model_turn_with_the_token_from_the_fragment(gateway_server, open_webchat,
                                                             artifacts):
    gw = gateway_server("--token", TOKEN)
    page = open_webchat(gw, f"token={TOKEN}")
    _connected(page)
    # The token left the address bar (and history) but is kept for this tab's reconnects.
    assert TOKEN not in page.url and "#" not in page.url
    assert TOKEN in page.evaluate("JSON.stringify(Object.values(sessionStorage))")
    # No model configured: the page says the offline model answers.
    expect(page.locator("#model-note")).to_contain_text("offline model")

    _send(page, "hello krab")
    expect(page.locator('.msg[data-role="user"] .body')).to_have_text("hello krab")
    expect(_replies(page).last).to_have_attribute("data-state", "done")
    assert OFFLINE_REPLY in _body(page)
    expect(page.locator("#input")).to_have_value("")
    page.screenshot(path=str(artifacts / "webchat-offline.png"))

    # The browser paired silently on loopback, with the id the gateway derives from its key.
    device_id = page.locator("#device-line").get_attribute("data-device-id")
    assert re.fullmatch(r"[0-9a-f]{64}", device_id)
    [device] = [d for d in _paired_devices(gw.url) if d["deviceId"] == device_id]
    assert (device["clientId"], device["clientMode"], device["approvedVia"]) == \
        ("webchat", "webchat", "silent")
    assert sorted(device["scopes"]) == ["operator.read", "operator.write"]

    # A reload (no fragment now) reconnects with the kept token and shows the history.
    page.reload()
    _connected(page)
    expect(page.locator(".msg")).to_have_count(2)
    assert OFFLINE_REPLY in _body(page)
    # The URL with the token was replaced, not pushed: one step back is the blank tab.
    page.go_back()
    assert page.url == "about:blank"


def test_a_new_tab_signs_in_with_the_device_token(gateway_server, open_webchat):
    gw = gateway_server("--token", TOKEN)
    page = open_webchat(gw, f"token={TOKEN}")
    _connected(page)
    device_id = page.locator("#device-line").get_attribute("data-device-id")
    # A second tab has no token (sessionStorage is per tab) but the same device and its token.
    tab = page.context.new_page()
    tab.goto(f"http://127.0.0.1:{gw.port}/webchat/")
    _connected(tab)
    assert TOKEN not in tab.evaluate("JSON.stringify(Object.values(sessionStorage))")
    assert tab.locator("#device-line").get_attribute("data-device-id") == device_id

    # Revoked: the gateway closes the device's sockets; the saved device token no longer
    # works, so the tab asks for the gateway token, and pairs again with it. (The first tab
    # goes away first: it would re-pair with its own token, and the tabs share the new
    # device token through localStorage.)
    page.goto("about:blank")
    _admin_call(gw.url, "device.token.revoke", {"deviceId": device_id, "role": "operator"})
    expect(tab.locator("#status")).to_have_attribute("data-state", "needs-credential")
    expect(tab.locator("#notice-text")).to_contain_text("needs its access token")
    tab.locator("#credential-input").fill(TOKEN)
    tab.locator("#credential-form button").click()
    _connected(tab)
    _send(tab, "hello krab")
    expect(_replies(tab).last).to_have_attribute("data-state", "done")


def test_waits_for_approval_and_connects_once_approved(gateway_server, open_webchat):
    # As a browser on another machine sees it (here: local auto-approval turned off).
    gw = gateway_server("--token", TOKEN, "--no-auto-approve-local")
    page = open_webchat(gw, f"token={TOKEN}")
    expect(page.locator("#status")).to_have_attribute("data-state", "pairing")
    expect(page.locator("#notice-text")).to_contain_text("waiting to be approved")
    [request] = _admin_call(gw.url, "device.pair.list", {})["pending"]
    device_id = page.locator("#device-line").get_attribute("data-device-id")
    assert request["deviceId"] == device_id and request["clientId"] == "webchat"
    # The notice names the command with this request's id.
    expect(page.locator("#notice-text")).to_contain_text(
        f"krabfast devices approve {request['requestId']}")
    _admin_call(gw.url, "device.pair.approve", {"requestId": request["requestId"]})
    _connected(page, timeout=20_000)  # by itself: it asks again every few seconds
    _send(page, "hello krab")
    expect(_replies(page).last).to_have_attribute("data-state", "done")


def test_sessions_new_chat_and_switching(gateway_server, open_webchat):
    gw = gateway_server("--token", TOKEN)
    page = open_webchat(gw, f"token={TOKEN}")
    _connected(page)
    _send(page, "hello krab")
    expect(_replies(page).last).to_have_attribute("data-state", "done")

    page.locator("#new-chat").click()
    _send(page, "second chat")  # at once: the page must not send it to the previous chat
    expect(page.locator(".msg")).to_have_count(2)
    expect(_replies(page).last).to_have_attribute("data-state", "done")
    assert 'you said "second chat"' in _body(page)
    sessions = page.locator("#session-list button")
    expect(sessions).to_have_count(2)
    # The new chat is named after its first message (a session label every client sees).
    current = page.locator('#session-list button[aria-current="true"]')
    expect(current.locator(".title")).to_have_text("second chat")
    # Under it, the preview of its newest message (sessions.list's includeLastMessage).
    expect(current.locator(".preview")).to_contain_text('you said "second chat"')
    expect(page.locator("#chat-title")).to_have_text("second chat")

    # Back to the main chat: its own history.
    page.locator('#session-list button[data-key="agent:main:main"]').click()
    # The other chat also shows two messages: wait for this one's history, not a count.
    expect(_replies(page).last.locator(".body")).to_contain_text(OFFLINE_REPLY)
    expect(page.locator(".msg")).to_have_count(2)
    expect(page.locator('#session-list button[data-key="agent:main:main"]')) \
        .to_have_attribute("aria-current", "true")


def test_fake_model_reply_renders_as_it_streams(gateway_server, open_webchat, tmp_path,
                                                artifacts):
    text = ("A gateway keeps every socket in step: the reply you are reading arrived in "
            "twelve pieces, each drawn as soon as it came.")
    fake = start_fake_openai(text=text, chunks=12, delay=0.15)
    try:
        gw = gateway_server("--config", _config(tmp_path, fake.base_url))
        page = open_webchat(gw, f"token={TOKEN}")
        _connected(page)
        expect(page.locator("#model-note")).to_be_hidden()
        _send(page, "How does streaming look?")
        reply = _replies(page).last
        # Part of the reply is on screen while the model is still sending the rest.
        page.wait_for_function(
            """(full) => {
                const el = [...document.querySelectorAll('.msg[data-role="assistant"]')].pop();
                const t = el && el.querySelector('.body').textContent;
                return el && el.dataset.state === 'streaming' && t.length > 0 && t.length < full.length;
            }""", arg=text)
        partial = _body(page)
        assert text.startswith(partial) and partial != text
        expect(reply).to_have_attribute("data-state", "done")
        assert _body(page) == text
        # One model request for the one message, carrying it as the user turn.
        assert len(fake.requests) == 1
        assert fake.requests[0].body["messages"][-1] == {"role": "user",
                                                         "content": "How does streaming look?"}
        page.screenshot(path=str(artifacts / "webchat-fake-model.png"))
    finally:
        fake.stop()


def test_stop_button_aborts_mid_stream(gateway_server, open_webchat, tmp_path):
    text = " ".join(f"word{i}" for i in range(80))
    fake = start_fake_openai(text=text, chunks=80, delay=0.15)  # about 12 s in full
    try:
        gw = gateway_server("--config", _config(tmp_path, fake.base_url))
        page = open_webchat(gw, f"token={TOKEN}")
        _connected(page)
        expect(page.locator("#stop")).to_be_disabled()
        _send(page, "talk for a while")
        page.wait_for_function(
            """() => {
                const el = [...document.querySelectorAll('.msg[data-role="assistant"]')].pop();
                return el && el.querySelector('.body').textContent.includes('word3');
            }""")
        expect(page.locator("#stop")).to_be_enabled()
        started = time.monotonic()
        page.locator("#stop").click()
        reply = _replies(page).last
        expect(reply).to_have_attribute("data-state", "stopped", timeout=5_000)
        assert time.monotonic() - started < 5
        expect(reply.locator(".note")).to_have_text("Stopped.")
        expect(page.locator("#stop")).to_be_disabled()
        partial = _body(page)
        assert text.startswith(partial) and 0 < len(partial) < len(text) // 2
        # The gateway closed the model stream, and nothing more is drawn afterwards.
        assert fake.wait_disconnect(timeout=5)
        page.wait_for_timeout(600)
        assert _body(page) == partial
        # The session is usable again at once.
        fake.set_behaviour(text="after the stop", chunks=2, delay=0)
        _send(page, "again")
        expect(_replies(page).last.locator(".body")).to_have_text("after the stop")
    finally:
        fake.stop()


def test_a_reply_in_progress_goes_on_after_a_reconnect(gateway_server, open_webchat, tmp_path):
    text = " ".join(f"word{i}" for i in range(60))
    fake = start_fake_openai(text=text, chunks=60, delay=0.1)  # about 6 s in full
    try:
        gw = gateway_server("--config", _config(tmp_path, fake.base_url))
        page = open_webchat(gw, f"token={TOKEN}")
        _connected(page)
        _send(page, "a long answer, please")
        page.wait_for_function(
            """() => {
                const el = [...document.querySelectorAll('.msg[data-role="assistant"]')].pop();
                return el && el.querySelector('.body').textContent.includes('word3');
            }""")
        # Removing the device closes its socket (4001); the run belongs to the gateway and
        # goes on. The page says why, pairs again with its token, and picks the reply up.
        device_id = page.locator("#device-line").get_attribute("data-device-id")
        _admin_call(gw.url, "device.pair.remove", {"deviceId": device_id})
        expect(page.locator("#notice-text")).to_contain_text("removed from the gateway's devices")
        _connected(page)
        expect(_replies(page).last).to_have_attribute("data-state", "done", timeout=20_000)
        assert _body(page) == text
        expect(page.locator(".msg")).to_have_count(2)  # one question, one answer
        assert len(fake.requests) == 1
    finally:
        fake.stop()


def test_missing_or_wrong_token_is_explained_and_can_be_entered(gateway_server, open_webchat):
    gw = gateway_server("--token", TOKEN)
    page = open_webchat(gw)  # no token at all
    expect(page.locator("#status")).to_have_attribute("data-state", "needs-credential")
    expect(page.locator("#notice-text")).to_contain_text("needs its access token")
    expect(page.locator("#input")).to_be_disabled()

    page.locator("#credential-input").fill("not-the-token")
    page.locator("#credential-form button").click()
    expect(page.locator("#notice-text")).to_contain_text("did not accept this token")
    expect(page.locator("#notice-code")).to_contain_text("AUTH_TOKEN_MISMATCH")

    page.locator("#credential-input").fill(TOKEN)
    page.locator("#credential-form button").click()
    _connected(page)
    expect(page.locator("#notice")).to_be_hidden()
    _send(page, "hello krab")
    expect(_replies(page).last).to_have_attribute("data-state", "done")


def test_gateway_without_auth_needs_no_token(gateway_server, open_webchat):
    # `krabfast gateway` as the README starts it: loopback, auth none; the page at localhost.
    gw = gateway_server()
    page = open_webchat(gw, host="localhost")
    _connected(page)
    expect(page.locator("#notice")).to_be_hidden()
    _send(page, "hello krab")
    expect(_replies(page).last).to_have_attribute("data-state", "done")
    assert OFFLINE_REPLY in _body(page)


def test_over_tls_with_the_generated_certificate(gateway_server, chromium, artifacts):
    gw = gateway_server("--tls", "--token", TOKEN)
    # The self-signed certificate is what a person accepts once in the browser.
    context = chromium.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(f"https://127.0.0.1:{gw.port}/webchat/#token={TOKEN}")
        _connected(page)
        expect(page.locator("#device-line")).to_contain_text(f"wss://127.0.0.1:{gw.port}/")
        _send(page, "hello krab")
        expect(_replies(page).last).to_have_attribute("data-state", "done")
        assert OFFLINE_REPLY in _body(page)
        page.screenshot(path=str(artifacts / "webchat-tls.png"))
    finally:
        context.close()


def test_page_on_another_loopback_origin_finds_the_gateway_in_the_fragment(gateway_server,
                                                                          open_webchat):
    gw = gateway_server("--token", TOKEN)
    page = open_webchat(gw, f"token={TOKEN}", cross_origin=True)
    _connected(page)
    assert not page.url.startswith(f"http://127.0.0.1:{gw.port}/")
    assert "gateway=" not in page.url and TOKEN not in page.url
    expect(page.locator("#device-line")).to_contain_text(gw.url)
    _send(page, "hello krab")
    expect(_replies(page).last).to_have_attribute("data-state", "done")
    assert OFFLINE_REPLY in _body(page)


def test_reconnects_by_itself_after_the_gateway_restarts(gateway_server, open_webchat,
                                                         tmp_path, artifacts):
    state = tmp_path / "kept-state"
    gw = gateway_server("--token", TOKEN, "--state-dir", str(state))
    page = open_webchat(gw, f"token={TOKEN}")
    _connected(page)
    _send(page, "hello krab")
    expect(_replies(page).last).to_have_attribute("data-state", "done")

    gw.process.terminate()
    gw.process.wait(10)
    expect(page.locator("#status")).to_have_attribute("data-state", "retrying")
    expect(page.locator("#status-text")).to_contain_text("retrying")
    expect(page.locator("#notice-text")).to_have_text(
        re.compile(r"The gateway (is restarting|stopped)|Can't reach the gateway"))
    expect(page.locator("#input")).to_be_disabled()
    page.screenshot(path=str(artifacts / "webchat-offline-retrying.png"))

    # The same port and state again (the device stays paired, the transcript stays).
    again = _start_on_port(gw.port, tmp_path / "restarted.log", "--token", TOKEN,
                           "--state-dir", str(state))
    try:
        _connected(page, timeout=30_000)
        expect(page.locator(".msg")).to_have_count(2)
        _send(page, "hello again")
        expect(_replies(page)).to_have_count(2)
        expect(_replies(page).last).to_have_attribute("data-state", "done")
        assert 'you said "hello again"' in _body(page)
    finally:
        _stop(again)


def _start_on_port(port: int, log, *args: str) -> subprocess.Popen:
    """A gateway on a given port (the factory picks a new free one each time)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "krabfast", "gateway", "--port", str(port),
             "--bind", "127.0.0.1", *args],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    deadline = time.monotonic() + 15
    while not _port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"restarted gateway not listening:\n{log.read_text()}")
        time.sleep(0.05)
    return proc
