"""Fixtures for the browser tests: Debian's Chromium (/usr/bin/chromium) driven by
Playwright for Python, krabfast's WebChat page, and screenshots kept as test artifacts.

- `chromium` (session): the browser. Skips the test when Playwright or Chromium is missing,
  or fails it when KRABFAST_REQUIRE_BROWSER=1 (.ci/run sets it and installs both).
- `page` (function): a fresh browser context (own storage, so a new device identity) and
  page; uncaught page errors fail the test; a screenshot is saved at teardown.
- `open_webchat(gw, fragment)`: loads the page the gateway `gw` serves, with `#fragment`.
- `artifacts`: the directory screenshots go to ($KRABFAST_ARTIFACTS, default artifacts/).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from pathlib import Path

import pytest

from tests.conftest import REPO

CHROMIUM = os.environ.get("KRABFAST_CHROMIUM", "/usr/bin/chromium")
# No network beyond loopback, no GPU, nothing that phones home or updates itself; shared
# memory in /tmp, as a container's /dev/shm can be too small for the renderer.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
WEBCHAT_DIR = REPO / "krabfast" / "web" / "webchat"


def _require_browser() -> bool:
    return os.environ.get("KRABFAST_REQUIRE_BROWSER", "") not in ("", "0")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    root = Path(os.environ.get("KRABFAST_ARTIFACTS") or REPO / "artifacts") / "browser"
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="package")
def chromium():
    # Package scope, not session: Playwright's sync API keeps an event loop running in this
    # thread while it is open, and every asyncio.run() in the tests after this package
    # (tests/integration, tests/interop) would fail with "cannot be called from a running
    # event loop".
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "Playwright for Python is not installed (.venv/bin/pip install playwright)"
    else:
        if not os.access(CHROMIUM, os.X_OK):
            missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if missing:
        if _require_browser():
            pytest.fail(f"KRABFAST_REQUIRE_BROWSER=1 but {missing}", pytrace=False)
        pytest.skip(missing)
    # launch() gives the browser a temporary profile directory of its own, removed on close.
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, artifacts, request):
    context = chromium.new_context(viewport={"width": 1100, "height": 720})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    try:
        page.screenshot(path=str(artifacts / f"{name}.png"))
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def static_origin():
    """The WebChat files on a throwaway loopback HTTP server: a page whose origin is not
    the gateway's (it finds the gateway through `#gateway=`)."""
    handler = functools.partial(_QuietHandler, directory=str(WEBCHAT_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def open_webchat(page, static_origin):
    """`open_webchat(gw, "token=T")`: the page as the gateway serves it at /webchat/ (same
    origin); with `cross_origin=True` from `static_origin`, pointed at it by `#gateway=`.
    `host` names the gateway in the page's URL (127.0.0.1 or localhost)."""

    def open_(gw, fragment: str = "", *, cross_origin: bool = False, host: str = "127.0.0.1"):
        params = [fragment] if fragment else []
        if cross_origin:
            base = static_origin
            params.insert(0, f"gateway={gw.url}/")
        else:
            base = f"http://{host}:{gw.port}/webchat/"
        page.goto(base + ("#" + "&".join(params) if params else ""))
        return page

    return open_
