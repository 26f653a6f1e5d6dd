"""krabfast/web/control_ui.py: the reference's Control UI served as the reference serves it
(docs/reference/web-facts.md sections 2-3), on a small fake build in a temp dir."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import time

import pytest

from krabfast.gateway.config import GatewayConfig
from krabfast.web import control_ui as cu
from krabfast.web.control_ui import ControlUi, control_ui_routes, normalize_base_path
from tests.unit.webreq import hdr, req
from krabfast.web.static import IMMUTABLE, http_date

BUILD = "2026.9.6-release-abc-2026-09-23T16-33-12.144Z-314f"
INLINE_1 = "\n      globalThis.x = 1;\n    "
INLINE_2 = "\n      (function () { var a = document.documentElement; })();\n    "
INDEX = f"""<!doctype html>
<html data-openclaw-control-ui-build-id="{BUILD}" lang="en">
  <head>
    <link rel="icon" type="image/svg+xml" href="./favicon.svg" />
    <link rel="manifest" href="./manifest.webmanifest" crossorigin="use-credentials" />
    <script data-cfasync="false">{INLINE_1}</script>
    <script data-cfasync="false" type="module" crossorigin src="./assets/index-DsEuFQRE.js"></script>
    <link rel="stylesheet" crossorigin href="./assets/core-2cJmD3kZ.css">
  </head>
  <body><openclaw-app></openclaw-app><script>{INLINE_2}</script>
  {"<!-- padding -->" * 40}
  </body>
</html>
"""
JS = b"console.log('control ui');\n" * 30


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "control-ui"
    (d / "assets").mkdir(parents=True)
    (d / "themes").mkdir()
    (d / "index.html").write_text(INDEX)
    (d / "assets" / "index-DsEuFQRE.js").write_bytes(JS)
    (d / "assets" / "index-DsEuFQRE.js.br").write_bytes(b"BR-BODY")
    (d / "assets" / "index-DsEuFQRE.js.gz").write_bytes(gzip.compress(JS))
    (d / "assets" / "core-2cJmD3kZ.css").write_text("body{color:red}" * 30)
    (d / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (d / "manifest.webmanifest").write_text("{}")
    (d / "themes" / "claw.css").write_text(":root{--a:1}")
    (tmp_path / "secret.txt").write_text("outside")
    return d


@pytest.fixture
def ui(root):
    return ControlUi(root, token_check=lambda t: t == "T", server_version="0.1.0",
                     assistant_name="krabfast")


def test_normalize_base_path():
    assert [normalize_base_path(v) for v in (None, "", " / ", "openclaw/", "/x", "/a/b/")] == \
        ["", "", "", "/openclaw", "/x", "/a/b"]


# --- index.html ------------------------------------------------------------------------

def test_index_rewritten_as_the_reference(ui):
    r = ui(req("/", host="127.0.0.1:18789"))
    assert r.status == 200 and r.content_type == "text/html; charset=utf-8"
    body = r.body.decode()
    html_tag = re.search(r"<html[^>]*>", body).group(0)
    assert html_tag == ('<html data-openclaw-control-ui-base-path="" '
                        'data-openclaw-terminal-enabled="false" '
                        f'data-openclaw-control-ui-build-id="{BUILD}" lang="en">')
    assert 'src="/assets/index-DsEuFQRE.js"' in body and 'href="/assets/core-2cJmD3kZ.css"' in body
    version = BUILD.replace(":", "%3A")
    assert f'href="/favicon.svg?v={version}"' in body
    assert f'href="/manifest.webmanifest?v={version}"' in body
    assert "./" not in body
    assert hdr(r, "Cache-Control") == "no-cache" and hdr(r, "Vary") == "Accept-Encoding"
    assert hdr(r, "ETag") is None and hdr(r, "Last-Modified") is None
    assert hdr(r, "X-Frame-Options") == "DENY" and hdr(r, "Referrer-Policy") == "no-referrer"
    assert hdr(r, "X-Content-Type-Options") == "nosniff"
    assert hdr(r, "Permissions-Policy") == \
        "camera=(self), microphone=*, geolocation=*, clipboard-write=*"


def test_index_csp_hashes_every_inline_script(ui):
    r = ui(req("/", host="127.0.0.1:18789"))
    csp = hdr(r, "Content-Security-Policy")
    want = [f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
            for s in (INLINE_1, INLINE_2)]
    directives = csp.split("; ")
    assert directives[5] == "script-src 'self' " + " ".join(want)
    assert [d.split(" ", 1)[0] for d in directives] == [
        "default-src", "base-uri", "object-src", "frame-ancestors", "frame-src", "script-src",
        "style-src", "img-src", "media-src", "font-src", "worker-src", "connect-src"]
    assert directives[-1].endswith("https://tweakcn.com http://127.0.0.1:* https://127.0.0.1:*")
    # Non-HTML answers get the policy without hashes or host.
    asset = hdr(ui(req("/assets/index-DsEuFQRE.js", host="127.0.0.1")), "Content-Security-Policy")
    assert "sha256-" not in asset and asset.endswith("https://tweakcn.com")


@pytest.mark.parametrize("host,suffix", [
    ("[::1]:18789", " http://[::1]:* https://[::1]:*"),
    ("gw.example", " http://gw.example:* https://gw.example:*"),
    ("x; script-src *", ""), ("", ""), ("a b:1", ""),
])
def test_csp_host_is_sanitised(host, suffix):
    assert cu.csp_header([], host).endswith("https://tweakcn.com" + suffix)


def test_index_gzip_and_never_304(ui):
    plain = ui(req("/"))
    r = ui(req("/", accept_encoding="gzip, br"))  # no brotli here: gzip
    assert hdr(r, "Content-Encoding") == "gzip" and gzip.decompress(r.body) == plain.body
    assert ui(req("/", accept_encoding="gzip")).body is r.body  # compressed once
    assert ui(req("/", if_modified_since=http_date(time.time()))).status == 200
    assert ui(req("/", if_none_match="*")).status == 200
    assert ui(req("/index.html")).body == plain.body


def test_index_reread_when_the_file_changes(ui, root):
    first = ui(req("/")).body
    (root / "index.html").write_text(INDEX.replace("globalThis.x = 1", "globalThis.x = 2"))
    later = time.time() + 5
    os.utime(root / "index.html", (later, later))
    r = ui(req("/"))
    assert r.body != first and b"globalThis.x = 2" in r.body


# --- the SPA fallback ------------------------------------------------------------------

@pytest.mark.parametrize("accept,status", [  # each as the reference answered it (live)
    (None, 200), ("", 200), ("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8", 200),
    ("application/xhtml+xml", 200), ("*/*", 200), ("text/*", 200),
    ("application/json, */*", 200), ("application/json;q=0.9, text/html;q=0.1", 200),
    ("application/json", 404), ("*/*;q=0", 404), ("text/plain", 404), ("image/png", 404),
    ("text/html;q=0", 404),
])
def test_deep_link_needs_html(ui, accept, status):
    headers = {} if accept is None else {"accept": accept}
    r = ui(req("/chat/deep/link", **headers))
    assert r.status == status
    if status == 200:
        assert r.body == ui(req("/")).body


@pytest.mark.parametrize("path", ["/assets/missing.js", "/nope.png", "/x.webmanifest",
                                  "/fonts/a.woff2", "/assets/index-DsEuFQRE.js.gz",
                                  "/assets/index-DsEuFQRE.js.br"])
def test_missing_static_file_is_404_even_for_html(ui, path):
    assert ui(req(path, accept="text/html")).status == 404


@pytest.mark.parametrize("path", ["/../secret.txt", "/assets/../../secret.txt", "/a\x00b",
                                  "/..\\secret.txt", "/themes/./claw.css"])
def test_traversal_is_404_not_the_spa(ui, path):
    r = ui(req(path, accept="text/html"))
    assert r.status == 404 and b"outside" not in r.body


def test_symlink_out_of_the_root_is_not_served(ui, root, tmp_path):
    os.symlink(tmp_path / "secret.txt", root / "assets" / "leak.txt")
    assert ui(req("/assets/leak.txt")).status == 404


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/health", "/startupz", "/api/x",
                                  "/v1/models", "/j/abc", "/webchat/", "/webchat",
                                  "/__openclaw__/worker/x", "/ui", "/ui/x"])
def test_paths_that_are_not_the_control_ui(ui, path):
    assert ui(req(path, accept="text/html")) is None


def test_non_get_is_not_the_control_ui(ui):
    assert ui(req("/", method="POST")) is None
    assert ui(req("/", method="HEAD")).status == 200


def test_probe_namespace_falls_to_the_spa(ui):
    assert ui(req("/healthz/x", accept="text/html")).status == 200


# --- files ----------------------------------------------------------------------------

def test_hashed_asset_sibling_by_accept_encoding(ui):
    r = ui(req("/assets/index-DsEuFQRE.js", accept_encoding="br, gzip"))
    assert (r.status, hdr(r, "Content-Encoding"), r.body) == (200, "br", b"BR-BODY")
    assert r.content_type == "application/javascript; charset=utf-8"  # the reference's
    assert hdr(r, "Cache-Control") == IMMUTABLE and hdr(r, "Vary") == "Accept-Encoding"
    assert hdr(r, "Last-Modified").endswith("GMT") and hdr(r, "ETag") is None
    r = ui(req("/assets/index-DsEuFQRE.js", accept_encoding="gzip"))
    assert hdr(r, "Content-Encoding") == "gzip" and gzip.decompress(r.body) == JS
    r = ui(req("/assets/index-DsEuFQRE.js"))
    assert hdr(r, "Content-Encoding") is None and r.body == JS
    # no sibling and identity refused: 406
    r = ui(req("/assets/core-2cJmD3kZ.css", accept_encoding="gzip, identity;q=0"))
    assert r.status == 406 and hdr(r, "Cache-Control") == "no-store"
    assert hdr(r, "Vary") == "Accept-Encoding"
    # without a shipped sibling nothing is compressed on the fly (as the reference)
    r = ui(req("/assets/core-2cJmD3kZ.css", accept_encoding="gzip"))
    assert r.status == 200 and hdr(r, "Content-Encoding") is None


def test_assets_under_a_deep_path(ui):
    r = ui(req("/chat/foo/assets/index-DsEuFQRE.js"))
    assert r.status == 200 and r.body == JS


def test_root_files_no_cache_unless_versioned(ui):
    r = ui(req("/favicon.svg"))
    assert r.content_type == "image/svg+xml" and hdr(r, "Cache-Control") == "no-cache"
    assert hdr(ui(req("/favicon.svg", query=f"v={BUILD}")), "Cache-Control") == IMMUTABLE
    assert hdr(ui(req("/favicon.svg", query="v=old")), "Cache-Control") == "no-cache"
    assert hdr(ui(req("/themes/claw.css", query=f"v={BUILD}")), "Cache-Control") == IMMUTABLE
    alias = ui(req("/__openclaw__/favicon.svg"))
    assert alias.status == 200 and alias.body == r.body
    assert ui(req("/__openclaw__/themes/claw.css", accept="application/json")).status == 404
    manifest = ui(req("/manifest.webmanifest"))
    assert manifest.content_type == "application/manifest+json; charset=utf-8"


def test_conditional_requests_follow_the_reference(ui):
    path = "/assets/index-DsEuFQRE.js"
    lm = hdr(ui(req(path)), "Last-Modified")
    r = ui(req(path, if_modified_since=lm))
    assert r.status == 304 and r.body == b""
    assert hdr(r, "Cache-Control") == IMMUTABLE and hdr(r, "Last-Modified") == lm
    assert hdr(r, "Vary") == "Accept-Encoding"
    assert ui(req("/favicon.svg", if_modified_since=lm)).status == 304
    assert ui(req(path, if_none_match="*")).status == 304
    # any other If-None-Match sends the body, even with a valid If-Modified-Since
    assert ui(req(path, if_none_match='"x"', if_modified_since=lm)).status == 200
    future = http_date(time.time() + 86400)
    assert ui(req(path, if_modified_since=future)).status == 200
    old = http_date(time.time() - 400 * 86400)
    assert ui(req(path, if_modified_since=old)).status == 200


def test_last_modified_capped_at_now(ui, root):
    later = time.time() + 7 * 86400
    os.utime(root / "favicon.svg", (later, later))
    lm = hdr(ui(req("/favicon.svg")), "Last-Modified")
    from krabfast.web.static import parse_http_date
    assert parse_http_date(lm) <= time.time() + 1


# --- control-ui-config.json ---------------------------------------------------------------

def test_config_json_needs_the_bearer_token(ui):
    for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "Basic T"},
                    {"authorization": "Bearer"}):
        r = ui(req("/control-ui-config.json", **headers))
        assert r.status == 401, headers
        assert json.loads(r.body) == {"error": {"message": "Unauthorized", "type": "unauthorized"}}
    r = ui(req("/control-ui-config.json", authorization="Bearer T"))
    assert r.status == 200 and r.content_type == "application/json; charset=utf-8"
    assert hdr(r, "Cache-Control") == "no-cache"
    body = json.loads(r.body)
    assert body == {
        "basePath": "", "assistantName": "krabfast", "assistantAvatar": "K",
        "assistantAvatarSource": None, "assistantAvatarStatus": None,
        "assistantAvatarReason": None, "assistantAgentId": "main", "serverVersion": "0.1.0",
        "embedSandbox": "scripts", "allowExternalEmbedUrls": False,
        "automaticallyFetchFavicons": True, "communityInvite": True, "terminalEnabled": False,
        "cliAgentsEnabled": False, "pluginAssetsRequireAuth": True, "pluginFrameGrants": []}
    for alias in ("/__openclaw/control-ui-config.json", "/__openclaw__/control-ui-config.json"):
        assert ui(req(alias, authorization="bearer T")).status == 200


def test_config_json_without_auth_mode(root):
    ui = ControlUi(root, auth_required=False)
    r = ui(req("/control-ui-config.json"))
    assert r.status == 200 and json.loads(r.body)["pluginAssetsRequireAuth"] is False


# --- basePath --------------------------------------------------------------------------

def test_base_path(root):
    ui = ControlUi(root, base_path="openclaw/", token_check=lambda t: t == "T")
    r = ui(req("/openclaw", query="a=1"))
    assert r.status == 302 and hdr(r, "Location") == "/openclaw/?a=1"
    assert ui(req("/", accept="text/html")) is None
    assert ui(req("/assets/index-DsEuFQRE.js")) is None
    page = ui(req("/openclaw/")).body.decode()
    assert 'data-openclaw-control-ui-base-path="/openclaw"' in page
    assert 'src="/openclaw/assets/index-DsEuFQRE.js"' in page
    assert '"/openclaw/favicon.svg?v=' in page
    assert ui(req("/openclaw/assets/index-DsEuFQRE.js")).body == JS
    assert ui(req("/openclaw/chat", accept="text/html")).status == 200
    r = ui(req("/openclaw/control-ui-config.json", authorization="Bearer T"))
    assert json.loads(r.body)["basePath"] == "/openclaw"
    assert ui(req("/openclaw/__openclaw/control-ui-config.json",
                  authorization="Bearer T")).status == 200
    assert ui(req("/__openclaw__/control-ui-config.json", authorization="Bearer T")) is None
    assert ui(req("/ui/x", accept="text/html")) is None


# --- no UI, missing assets -----------------------------------------------------------------

def test_without_a_ui_root_slash_links_to_webchat():
    ui = ControlUi(None, token_check=lambda t: True)
    r = ui(req("/"))
    assert r.status == 200 and b'href="/webchat/"' in r.body and b"--control-ui-root" in r.body
    assert ui(req("/chat", accept="text/html")) is None
    assert ui(req("/assets/x.js")) is None


def test_configured_root_without_index_is_503(tmp_path):
    ui = ControlUi(tmp_path)
    r = ui(req("/"))
    assert r.status == 503 and str(tmp_path).encode() in r.body
    assert hdr(r, "Cache-Control") == "no-store"


# --- finding the UI, and the config -------------------------------------------------------

def _install(base):
    d = base / "node_modules" / "openclaw" / "dist" / "control-ui"
    d.mkdir(parents=True)
    (d / "index.html").write_text(INDEX)
    return d


def test_find_root_in_order(tmp_path):
    work, ref, pkg = tmp_path / "work" / "sub", tmp_path / "ref", tmp_path / "pkg"
    work.mkdir(parents=True)
    pkg.mkdir()
    kw = dict(cwd=work, env={"KRABFAST_REFERENCE_DIR": str(ref)}, package_dir=pkg,
              global_dirs=())
    assert cu.find_control_ui_root(**kw) is None
    ref_ui = _install(ref)
    assert cu.find_control_ui_root(**kw) == ref_ui.resolve()
    pkg_ui = _install(pkg)
    assert cu.find_control_ui_root(**kw) == pkg_ui.resolve()
    parent_ui = _install(tmp_path / "work")  # a parent of the current directory
    assert cu.find_control_ui_root(**kw) == parent_ui.resolve()
    assert cu.find_control_ui_root(str(ref_ui), **kw) == ref_ui.resolve()  # configured wins


def test_routes_from_config(root):
    assert control_ui_routes(GatewayConfig(control_ui_enabled=False)) == []
    cfg = GatewayConfig(auth_mode="token", token="T", control_ui_root=str(root),
                        control_ui_base_path="/x")
    (route,) = control_ui_routes(cfg, token_check=lambda t: t == "T")
    assert route.root == root.resolve() and route.base_path == "/x"
    assert route(req("/x/control-ui-config.json")).status == 401
    assert route(req("/x/control-ui-config.json", authorization="Bearer T")).status == 200
    (open_route,) = control_ui_routes(GatewayConfig(control_ui_root=str(root)))
    assert open_route(req("/control-ui-config.json")).status == 200  # auth mode none


def test_config_validates_the_root(tmp_path, root):
    with pytest.raises(ValueError, match="no index.html"):
        GatewayConfig(control_ui_root=str(tmp_path)).validate()
    GatewayConfig(control_ui_root=str(root)).validate()


def test_config_file_keys(tmp_path):
    from krabfast.gateway.config_file import ConfigFileError, parse_config

    s = parse_config({"gateway": {"controlUi": {
        "enabled": False, "basePath": "openclaw/", "root": "ui/dist",
        "allowedOrigins": ["https://GW.example/", "*"], "embedSandbox": "strict"}}}, "f.json")
    assert s.values["control_ui_enabled"] is False
    assert s.values["control_ui_base_path"] == "openclaw/"
    assert s.values["control_ui_root"] == "ui/dist"
    assert s.values["control_ui_allowed_origins"] == frozenset({"https://gw.example", "*"})
    assert s.ignored == ["gateway.controlUi.embedSandbox"]
    for bad in ({"enabled": "yes"}, {"basePath": 3}, {"root": ""}, {"allowedOrigins": "*"}):
        with pytest.raises(ConfigFileError, match="gateway.controlUi"):
            parse_config({"gateway": {"controlUi": bad}}, "f.json")


def test_cli_flag(root):
    import argparse

    from krabfast.cli import gateway as cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["gateway", "--control-ui-root", str(root)])
    kw, _ = cli.gateway_settings(args, env={})
    assert kw["control_ui_root"] == str(root)


def test_config_json_accepts_a_device_token(root):
    ui = ControlUi(root, token_check=lambda t: t == "T", device_token_check=lambda t: t == "D")
    assert ui(req("/control-ui-config.json", authorization="Bearer D")).status == 200
    assert ui(req("/control-ui-config.json", authorization="Bearer E")).status == 401


def test_device_store_finds_a_token_by_its_value():
    from krabfast.store import Database, DeviceStore

    db = Database(":memory:")
    try:
        devices = DeviceStore(db)
        token = devices.issue_token("dev-1", "operator", ["operator.read"], 1000)
        held = devices.token_holder(token)
        assert (held.device_id, held.role) == ("dev-1", "operator")
        assert devices.token_holder("not-a-token") is None and devices.token_holder("") is None
        newer = devices.issue_token("dev-1", "operator", ["operator.read"], 2000)  # rotation
        assert devices.token_holder(token) is None and devices.token_holder(newer) is not None
        devices.revoke_token("dev-1", "operator")
        assert devices.token_holder(newer) is None
    finally:
        db.close()
