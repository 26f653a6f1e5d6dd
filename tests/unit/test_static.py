"""krabfast/web/static.py: safe paths, the file cache, negotiation, validators, and the
StaticDirectory route (temp dirs, no sockets)."""

from __future__ import annotations

import gzip
import os
import time

import pytest

from krabfast.web import static
from tests.unit.webreq import hdr, req
from krabfast.web.static import FileCache, StaticDirectory, resolve_inside

JS = b"export const x = 1;\n" * 40  # compressible and above GZIP_MIN_BYTES


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>x</title>" + "<p>hi</p>" * 50)
    (root / "app.js").write_bytes(JS)
    (root / "assets" / "index-DsEuFQRE.js").write_bytes(JS)
    (root / "assets" / "index-DsEuFQRE.js.br").write_bytes(b"BROTLI")
    (root / "logo.png").write_bytes(b"\x89PNG" + b"\0" * 600)
    (root / "tiny.css").write_text("a{}")
    (tmp_path / "secret.txt").write_text("outside")
    return root


# --- paths -----------------------------------------------------------------------------

@pytest.mark.parametrize("rel", [
    "../secret.txt", "assets/../../secret.txt", "./index.html", "assets//x.js", "/etc/passwd",
    "index.html\x00.png", "assets\\..\\..\\secret.txt", "", "assets", "assets/",
])
def test_resolve_refuses_escapes_and_non_files(site, rel):
    assert resolve_inside(site, rel) is None


def test_resolve_refuses_symlink_escape_but_allows_inner_symlink(site, tmp_path):
    os.symlink(tmp_path / "secret.txt", site / "leak.txt")
    os.symlink(tmp_path, site / "up")
    os.symlink(site / "app.js", site / "alias.js")
    assert resolve_inside(site, "leak.txt") is None
    assert resolve_inside(site, "up/secret.txt") is None
    assert resolve_inside(site, "alias.js") == (site / "app.js").resolve()


def test_resolve_inside_root_that_is_a_symlink(site, tmp_path):
    link = tmp_path / "link"
    os.symlink(site, link)
    assert resolve_inside(link, "app.js") == (site / "app.js").resolve()
    assert resolve_inside(link, "../secret.txt") is None


# --- the cache -------------------------------------------------------------------------

def test_cache_reads_once_and_notices_changes(site, monkeypatch):
    cache = FileCache()
    reads = []
    real_open = open

    def counting_open(path, *a, **kw):
        reads.append(path)
        return real_open(path, *a, **kw)

    monkeypatch.setattr("builtins.open", counting_open)
    path = resolve_inside(site, "app.js")
    first = cache.get(path)
    assert cache.get(path) is first and len(reads) == 1  # the second get is a stat only
    (site / "app.js").write_bytes(b"changed")
    later = time.time() + 5
    os.utime(site / "app.js", (later, later))
    second = cache.get(path)
    assert second.data == b"changed" and second.etag != first.etag and len(reads) == 2


def test_cache_is_bounded(site):
    cache = FileCache(max_bytes=1000, max_file_bytes=700)
    for name in ("app.js", "logo.png", "index.html"):
        assert cache.get(resolve_inside(site, name)) is not None
    assert cache._bytes <= 1000 and len(cache) < 3
    big = site / "big.bin"
    big.write_bytes(b"x" * 800)  # above max_file_bytes: served, never kept
    assert cache.get(big).data == b"x" * 800
    assert str(big) not in cache._entries


def test_cache_missing_and_directories(site):
    cache = FileCache()
    assert cache.get(site / "nope") is None
    assert cache.get(site / "assets") is None


# --- negotiation and validators ----------------------------------------------------------

@pytest.mark.parametrize("header,available,want", [
    ("", ["br", "gzip", "identity"], "identity"),
    ("gzip", ["br", "gzip", "identity"], "gzip"),
    ("br, gzip", ["br", "gzip", "identity"], "br"),
    ("gzip;q=1, br;q=0.5", ["br", "gzip", "identity"], "gzip"),
    ("br;q=0", ["br", "identity"], "identity"),
    ("*", ["br", "gzip", "identity"], "br"),
    ("identity;q=0", ["identity"], None),
    ("*;q=0", ["gzip", "identity"], None),
    ("deflate", ["gzip", "identity"], "identity"),
    ("GZIP", ["gzip", "identity"], "gzip"),
])
def test_choose_encoding(header, available, want):
    assert static.choose_encoding(header, available) == want


def test_etag_matches():
    assert static.etag_matches('"a"', '"a"')
    assert static.etag_matches('W/"a"', '"a"')
    assert static.etag_matches('"b", "a"', '"a"')
    assert static.etag_matches("*", '"a"')
    assert not static.etag_matches('"b"', '"a"')
    assert not static.etag_matches('"a-gz"', '"a"')


def test_modified_since():
    lm = 1_700_000_000.0
    assert not static.modified_since(static.http_date(lm), lm)
    assert not static.modified_since(static.http_date(lm + 10), lm)
    assert static.modified_since(static.http_date(lm - 1), lm)
    assert static.modified_since("garbage", lm)
    assert static.modified_since(static.http_date(time.time() + 3600), lm)  # future: ignored


@pytest.mark.parametrize("name,ctype", [
    ("a.js", "text/javascript; charset=utf-8"), ("a.mjs", "text/javascript; charset=utf-8"),
    ("a.css", "text/css; charset=utf-8"), ("a.html", "text/html; charset=utf-8"),
    ("a.svg", "image/svg+xml"), ("a.woff2", "font/woff2"), ("a.wasm", "application/wasm"),
    ("m.webmanifest", "application/manifest+json"), ("a.JSON", "application/json; charset=utf-8"),
    ("noext", "application/octet-stream"),
])
def test_content_type(name, ctype):
    assert static.content_type(name) == ctype


# --- the route -------------------------------------------------------------------------

def test_route_index_and_types(site):
    route = StaticDirectory(site, "/webchat/")
    r = route(req("/webchat/"))
    assert r.status == 200 and r.content_type == "text/html; charset=utf-8"
    assert r.body == (site / "index.html").read_bytes()
    assert hdr(r, "Cache-Control") == "no-cache" and hdr(r, "Vary") == "Accept-Encoding"
    assert hdr(r, "ETag").startswith('"') and hdr(r, "Last-Modified").endswith("GMT")
    png = route(req("/webchat/logo.png", accept_encoding="gzip"))
    assert png.content_type == "image/png" and hdr(png, "Content-Encoding") is None
    assert hdr(png, "Vary") is None


def test_route_claims_only_its_prefix(site):
    route = StaticDirectory(site, "/webchat/")
    assert route(req("/other")) is None and route(req("/webchatx/app.js")) is None
    r = route(req("/webchat", query="a=1"))
    assert r.status == 302 and hdr(r, "Location") == "/webchat/?a=1"


@pytest.mark.parametrize("path", [
    "/webchat/../secret.txt", "/webchat/missing.js", "/webchat/assets/",
    "/webchat/assets/index-DsEuFQRE.js.br", "/webchat/a\x00b", "/webchat/..\\secret.txt",
])
def test_route_404(site, path):
    r = StaticDirectory(site, "/webchat/")(req(path))
    assert r.status == 404 and r.body == b"Not Found"


def test_route_methods(site):
    route = StaticDirectory(site, "/webchat/")
    r = route(req("/webchat/app.js", method="POST"))
    assert r.status == 405 and hdr(r, "Allow") == "GET, HEAD"
    head, get = route(req("/webchat/app.js", method="HEAD")), route(req("/webchat/app.js"))
    assert head.status == 200 and head.body == get.body  # the protocol strips HEAD's body


def test_route_gzip_made_once(site):
    route = StaticDirectory(site, "/webchat/")
    a = route(req("/webchat/app.js", accept_encoding="gzip, deflate"))
    assert hdr(a, "Content-Encoding") == "gzip" and gzip.decompress(a.body) == JS
    b = route(req("/webchat/app.js", accept_encoding="gzip"))
    assert b.body is a.body  # cached, not compressed again
    assert hdr(a, "ETag") != hdr(route(req("/webchat/app.js")), "ETag")
    tiny = route(req("/webchat/tiny.css", accept_encoding="gzip"))
    assert hdr(tiny, "Content-Encoding") is None and tiny.body == b"a{}"


def test_route_prefers_shipped_sibling(site):
    route = StaticDirectory(site, "/s/")
    r = route(req("/s/assets/index-DsEuFQRE.js", accept_encoding="gzip, br"))
    assert hdr(r, "Content-Encoding") == "br" and r.body == b"BROTLI"
    assert hdr(r, "Cache-Control") == static.IMMUTABLE
    r = route(req("/s/assets/index-DsEuFQRE.js", accept_encoding="gzip"))
    assert hdr(r, "Content-Encoding") == "gzip" and gzip.decompress(r.body) == JS
    r = route(req("/s/assets/index-DsEuFQRE.js", accept_encoding="identity;q=0"))
    assert r.status == 406
    assert route(req("/s/app.js", accept_encoding="br;q=1, identity;q=0")).status == 406


def test_route_sibling_symlink_outside_is_ignored(site, tmp_path):
    (tmp_path / "evil.br").write_bytes(b"OUTSIDE")
    os.symlink(tmp_path / "evil.br", site / "app.js.br")
    r = StaticDirectory(site, "/s/")(req("/s/app.js", accept_encoding="br"))
    assert r.body != b"OUTSIDE" and hdr(r, "Content-Encoding") is None


def test_route_conditional_requests(site):
    route = StaticDirectory(site, "/s/")
    first = route(req("/s/app.js"))
    etag, lm = hdr(first, "ETag"), hdr(first, "Last-Modified")
    r = route(req("/s/app.js", if_none_match=etag))
    assert r.status == 304 and r.body == b"" and hdr(r, "ETag") == etag
    assert hdr(r, "Cache-Control") == "no-cache"
    assert route(req("/s/app.js", if_none_match='"other"')).status == 200
    assert route(req("/s/app.js", if_modified_since=lm)).status == 304
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
    assert route(req("/s/app.js", if_none_match='"other"', if_modified_since=lm)).status == 200
    old = static.http_date(time.time() - 10 * 86400)
    assert route(req("/s/app.js", if_modified_since=old)).status == 200
    gz = route(req("/s/app.js", accept_encoding="gzip"))
    assert route(req("/s/app.js", accept_encoding="gzip",
                     if_none_match=hdr(gz, "ETag"))).status == 304
    assert route(req("/s/app.js", accept_encoding="gzip", if_none_match=etag)).status == 200


def test_route_extra_headers_on_every_answer(site):
    route = StaticDirectory(site, "/s/", headers=[("X-Frame-Options", "DENY")])
    for r in (route(req("/s/app.js")), route(req("/s/nope")), route(req("/s")),
              route(req("/s/app.js", method="PUT"))):
        assert hdr(r, "X-Frame-Options") == "DENY", r.status


def test_route_rejects_bad_prefix(site):
    with pytest.raises(ValueError):
        StaticDirectory(site, "/webchat")


@pytest.mark.parametrize("name,hashed", [
    ("index-DsEuFQRE.js", True), ("control-ui-core-2cJmD3kZ.css", True), ("app.js", False),
    ("index.html", False), ("chat-view.js", False), ("vendor.0a1b2c3d4e.js", True),
    ("atkinson-hyperlegible.css", False), ("chat-messages.js", False), ("a-LOUDNAME.js", False),
])
def test_is_hashed_name(name, hashed):
    assert static.is_hashed_name(name) is hashed


def test_static_routes(site):
    (route,) = static.static_routes(site, "/webchat/", headers=[("X-A", "1")])
    r = route(req("/webchat/app.js"))
    assert r.status == 200 and r.body == JS and hdr(r, "X-A") == "1"
