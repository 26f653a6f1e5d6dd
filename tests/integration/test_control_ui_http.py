"""The Control UI over a real gateway socket: `--control-ui-root` on a small fake build, the
route order (probes and WebChat first, the UI's SPA fallback last), Last-Modified 304s,
HEAD, the bearer on control-ui-config.json, basePath and enabled from the config file, and
a DIR without index.html refused at start."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.integration.helpers import TOKEN
from tests.integration.test_http import _get

INDEX = """<!doctype html>
<html data-openclaw-control-ui-build-id="build-1" lang="en"><head>
<script>globalThis.boot = 1;</script>
<script type="module" src="./assets/index-AbCd1234.js"></script>
</head><body><openclaw-app></openclaw-app></body></html>
"""
JS = b"export const app = 'fake control ui';\n" * 20


@pytest.fixture(scope="module")
def ui_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("control-ui")
    (root / "assets").mkdir()
    (root / "index.html").write_text(INDEX)
    (root / "assets" / "index-AbCd1234.js").write_bytes(JS)
    (root / "assets" / "index-AbCd1234.js.gz").write_bytes(gzip.compress(JS))
    (root / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    return root


@pytest.fixture(scope="module")
def ui_gw(gateway_server_module, ui_root):
    return gateway_server_module("--token", TOKEN, "--control-ui-root", str(ui_root))


def test_index_and_deep_links(ui_gw):
    status, headers, body = _get(ui_gw.port, "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b'data-openclaw-control-ui-base-path=""' in body and b'src="/assets/index-AbCd1234.js"' in body
    assert "'sha256-" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-cache"
    assert headers["permissions-policy"].startswith("camera=(self)")  # the UI's, not the baseline
    assert _get(ui_gw.port, "/chat/main", "Accept: text/html")[2] == body
    assert _get(ui_gw.port, "/chat/main", "Accept: application/json")[0] == 404
    status, headers, _ = _get(ui_gw.port, "/", "Accept-Encoding: gzip")
    assert headers["content-encoding"] == "gzip"
    status, headers, head_body = _get(ui_gw.port, "/", method="HEAD")
    assert status == 200 and head_body == b"" and headers["content-length"] == str(len(body))
    assert _get(ui_gw.port, "/", method="POST")[0] == 404


def test_other_routes_come_first(ui_gw):
    status, _, body = _get(ui_gw.port, "/healthz", "Accept: text/html")
    assert status == 200 and json.loads(body)["status"] == "live"
    status, _, body = _get(ui_gw.port, "/webchat/", "Accept: text/html")
    assert status == 200 and b"openclaw-app" not in body


def test_assets_validators_and_siblings(ui_gw):
    status, headers, body = _get(ui_gw.port, "/assets/index-AbCd1234.js", "Accept-Encoding: gzip")
    assert status == 200 and headers["content-encoding"] == "gzip" and gzip.decompress(body) == JS
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "etag" not in headers
    status, again, body = _get(ui_gw.port, "/assets/index-AbCd1234.js",
                               f"If-Modified-Since: {headers['last-modified']}")
    assert status == 304 and body == b"" and again["last-modified"] == headers["last-modified"]
    assert _get(ui_gw.port, "/assets/index-AbCd1234.js.gz")[0] == 404
    assert _get(ui_gw.port, "/assets/../../etc/passwd", "Accept: text/html")[0] == 404
    assert _get(ui_gw.port, "/assets/%2e%2e/%2e%2e/etc/passwd", "Accept: text/html")[0] == 404


def test_config_json_needs_the_token(ui_gw):
    status, _, body = _get(ui_gw.port, "/control-ui-config.json")
    assert status == 401 and json.loads(body)["error"]["type"] == "unauthorized"
    status, headers, body = _get(ui_gw.port, "/control-ui-config.json",
                                 f"Authorization: Bearer {TOKEN}")
    assert status == 200 and json.loads(body)["basePath"] == ""
    assert headers["cache-control"] == "no-cache"


def test_base_path_and_disabled_from_the_config_file(gateway_server, ui_root, tmp_path):
    config = tmp_path / "openclaw.json"
    config.write_text(json.dumps({"gateway": {"controlUi": {
        "basePath": "openclaw/", "root": str(ui_root)}}}))
    gw = gateway_server("--config", str(config))
    status, headers, _ = _get(gw.port, "/openclaw?x=1")
    assert status == 302 and headers["location"] == "/openclaw/?x=1"
    assert b'data-openclaw-control-ui-base-path="/openclaw"' in _get(gw.port, "/openclaw/")[2]
    assert _get(gw.port, "/", "Accept: text/html")[0] == 404
    config.write_text(json.dumps({"gateway": {"controlUi": {"enabled": False,
                                                            "root": str(ui_root)}}}))
    off = gateway_server("--config", str(config))
    assert _get(off.port, "/", "Accept: text/html")[0] == 404
    assert _get(off.port, "/healthz")[0] == 200


def test_a_root_without_index_fails_at_start(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "krabfast", "gateway", "--port", "0",
                           "--state-dir", ":memory:", "--control-ui-root", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "no index.html" in proc.stderr, proc.stderr
