"""Plain HTTP on the gateway's WebSocket port: probes, keep-alive, HEAD, bad and hostile
requests (none of which may disturb an open WebSocket client), and trusted proxies."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from tests.devicekeys import DeviceKey
from tests.integration.helpers import TOKEN, RawWS, run
from tests.integration.test_devices import NOT_APPROVED, device_params, rejected


@pytest.fixture(scope="module")
def web_gw(gateway_server_module):
    return gateway_server_module("--token", TOKEN, env={"KRABFAST_HTTP_HEADER_TIMEOUT_MS": "700"})


def _read_response(sock: socket.socket, buf: bytearray, head_only: bool = False):
    """One HTTP response off `sock` (`buf` holds bytes already read): (status, headers,
    body). Bodies are Content-Length framed."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {bytes(buf)!r}")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head_only or status == 304 else int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    buf[:] = rest[length:]
    return status, headers, rest[:length]


def _request(port: int, raw: bytes, *, head_only: bool = False, timeout: float = 5.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        return _read_response(sock, bytearray(), head_only)


def _get(port: int, path: str, *extra: str, method: str = "GET"):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *extra]
    return _request(port, ("\r\n".join(lines) + "\r\n\r\n").encode(), head_only=method == "HEAD")


def _closed_by_peer(sock: socket.socket, timeout: float) -> bytes:
    """Read until the server closes; returns what it sent (fails after `timeout`)."""
    sock.settimeout(timeout)
    got = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return got
        got += chunk


# -- probes --------------------------------------------------------------------------------------

def test_liveness_and_readiness_in_the_reference_shape(web_gw):
    status, headers, body = _get(web_gw.port, "/healthz")
    assert status == 200 and json.loads(body) == {"ok": True, "status": "live"}
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert _get(web_gw.port, "/health")[2] == body
    status, _, body = _get(web_gw.port, "/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["ready"] is True and ready["failing"] == []
    assert isinstance(ready["uptimeMs"], int) and ready["uptimeMs"] >= 0
    assert "eventLoop" in ready  # details: the caller is local
    status, _, body = _get(web_gw.port, "/startupz")
    started = json.loads(body)
    assert status == 200 and started["ok"] is True and started["status"] == "started"


def test_head_has_the_get_headers_and_no_body(web_gw):
    status, get_headers, body = _get(web_gw.port, "/healthz")
    status_h, head_headers, head_body = _get(web_gw.port, "/healthz", method="HEAD")
    assert status_h == 200 and head_body == b""
    assert head_headers["content-length"] == get_headers["content-length"] == str(len(body))


def test_other_methods_on_probes_are_405_and_unknown_paths_404(web_gw):
    status, headers, body = _get(web_gw.port, "/healthz", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD" and body == b"Method Not Allowed"
    status, headers, body = _get(web_gw.port, "/no/such/page", "Accept: application/json")
    assert status == 404 and body == b"Not Found"
    assert headers["content-type"] == "text/plain; charset=utf-8"


def test_keep_alive_serves_several_requests_on_one_connection(web_gw):
    with socket.create_connection(("127.0.0.1", web_gw.port), timeout=5) as sock:
        buf = bytearray()
        # Pipelined: both requests in one write, answered in order.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        s1, h1, b1 = _read_response(sock, buf)
        s2, h2, b2 = _read_response(sock, buf)
        assert (s1, json.loads(b1)["status"]) == (200, "live")
        assert s2 == 200 and json.loads(b2)["ready"] is True
        assert h1["connection"] == "keep-alive" and h1["keep-alive"] == "timeout=5"
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s3, h3, b3 = _read_response(sock, buf, head_only=True)
        assert s3 == 200 and h3["connection"] == "close"
        assert _closed_by_peer(sock, 5) == b""


def test_bad_request_line_is_400_and_closed(web_gw):
    with socket.create_connection(("127.0.0.1", web_gw.port), timeout=5) as sock:
        sock.sendall(b"GARBAGE\x01 / HTTP/9\r\n\r\n")
        got = _closed_by_peer(sock, 5)
    assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close" in got


def test_oversized_headers_are_431_and_a_large_body_413(web_gw):
    big = "X-Big: " + "a" * 17000
    status, headers, _ = _get(web_gw.port, "/healthz", big)
    assert status == 431 and headers["connection"] == "close"
    # Just under the reference's 16 KiB passes.
    assert _get(web_gw.port, "/healthz", "X-Big: " + "a" * 15000)[0] == 200
    status, _, _ = _request(web_gw.port, b"POST /healthz HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 5000000\r\n\r\n")
    assert status == 413


def test_a_slow_sender_is_cut_off_by_the_header_timeout(web_gw):
    # A first request whose head never completes (the port cannot yet tell HTTP from a
    # WebSocket upgrade): dropped at the header timeout.
    with socket.create_connection(("127.0.0.1", web_gw.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert _closed_by_peer(sock, 5) == b""
        took = time.monotonic() - started
    assert 0.4 < took < 4.0, took  # the gateway above uses a 700 ms header timeout
    # A later request on a keep-alive HTTP connection that trickles in: answered 408.
    with socket.create_connection(("127.0.0.1", web_gw.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock, bytearray())[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        started = time.monotonic()
        got = _closed_by_peer(sock, 5)
        took = time.monotonic() - started
    assert got.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), got
    assert 0.4 < took < 4.0, took


def test_an_idle_keep_alive_connection_is_closed(web_gw):
    with socket.create_connection(("127.0.0.1", web_gw.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock, bytearray())[0] == 200
        started = time.monotonic()
        assert _closed_by_peer(sock, 10) == b""
        assert 3.0 < time.monotonic() - started < 9.0  # the 5 s keep-alive timeout


def test_an_upgrade_inside_a_keep_alive_connection_is_refused(web_gw):
    with socket.create_connection(("127.0.0.1", web_gw.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock, bytearray())[0] == 200
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert _closed_by_peer(sock, 5).startswith(b"HTTP/1.1 400 ")


def test_hostile_http_does_not_disturb_open_websocket_clients(web_gw):
    async def body():
        ws = await RawWS.connected(web_gw.url)
        before = len(ws.frames)
        loop = asyncio.get_running_loop()

        def abuse() -> None:
            _get(web_gw.port, "/healthz", "X-Big: " + "b" * 20000)
            with socket.create_connection(("127.0.0.1", web_gw.port), timeout=5) as sock:
                sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
                _closed_by_peer(sock, 5)
            slow = socket.create_connection(("127.0.0.1", web_gw.port), timeout=5)
            slow.sendall(b"GET /readyz HTTP/1.1\r\n")
            for _ in range(20):
                _get(web_gw.port, "/readyz")
            slow.close()

        await loop.run_in_executor(None, abuse)
        res = await ws.call("health")
        assert res["ok"] is True
        # Nothing but the answer (and perhaps a tick/presence event) arrived meanwhile.
        assert all(f.get("type") in ("res", "event") for f in ws.frames[before:])
        assert not any(f.get("type") == "event" and f.get("event") == "shutdown"
                       for f in ws.frames)
        await ws.close()
    run(body())


# -- trusted proxies -------------------------------------------------------------------------------

def _config(tmp_path, trusted):
    path = tmp_path / "openclaw.json"
    path.write_text(json.dumps({"gateway": {"auth": {"mode": "token", "token": TOKEN},
                                            "trustedProxies": trusted}}))
    return str(path)


def test_forwarded_requests_from_an_untrusted_peer_are_refused(web_gw):
    status, _, body = _get(web_gw.port, "/readyz", "X-Forwarded-For: 203.0.113.7")
    assert status == 403
    assert json.loads(body)["error"]["type"] == "proxy_attribution_required"
    # Liveness still answers (as the reference).
    assert _get(web_gw.port, "/healthz", "X-Forwarded-For: 203.0.113.7")[0] == 200

    async def upgrade():
        with pytest.raises(Exception):
            await RawWS.open(web_gw.url, extra_headers={"X-Forwarded-For": "203.0.113.7"})
        # A plain local client is still served.
        ws = await RawWS.connected(web_gw.url)
        await ws.close()
    run(upgrade())


def test_a_client_behind_a_trusted_proxy_is_remote_and_waits_for_pairing(gateway_server,
                                                                         tmp_path):
    gw = gateway_server("--config", _config(tmp_path, ["127.0.0.1"]))
    # The proxy's own forwarding of a loopback client is not local either: a forwarded
    # request never is.
    status, _, body = _get(gw.port, "/readyz", "X-Forwarded-For: 203.0.113.7")
    assert status == 200 and json.loads(body) == {"ready": True}  # no details: not local
    status, _, body = _get(gw.port, "/readyz")
    assert "uptimeMs" in json.loads(body)  # direct from loopback: local

    async def body_():
        key = DeviceKey()
        ws = await RawWS.open(gw.url, extra_headers={"X-Forwarded-For": "198.51.100.20, 10.0.0.1"})
        params = device_params(key, ws.challenge)
        res = await ws.call("connect", params)
        err = await rejected(ws, res)
        assert err["code"] == "NOT_PAIRED" and err["message"] == NOT_APPROVED
        # The same device straight from loopback pairs silently (the reference's local rule).
        ws2 = await RawWS.open(gw.url)
        res2 = await ws2.call("connect", device_params(key, ws2.challenge))
        assert res2["ok"] is True, res2
        await ws2.close()
    run(body_())


def test_a_bad_trusted_proxies_entry_is_a_clear_error(gateway_server, tmp_path):
    with pytest.raises(Exception):
        gateway_server("--config", _config(tmp_path, ["not-an-ip"]), ready_timeout=3)
    logs = sorted(tmp_path.glob("gateway-*.log"))
    assert logs and "gateway.trustedProxies" in logs[-1].read_text()
    assert "not an IP address or CIDR: 'not-an-ip'" in logs[-1].read_text()


def test_the_webchat_page_is_served_and_may_not_be_framed(web_gw):
    status, headers, body = _get(web_gw.port, "/webchat/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script type="module" src="app.js"></script>' in body
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    status, headers, _ = _get(web_gw.port, "/webchat/app.js")
    assert status == 200 and "javascript" in headers["content-type"]
    # A validator, and 304 on a conditional request that matches it.
    etag = headers.get("etag")
    if etag:
        assert _get(web_gw.port, "/webchat/app.js", f"If-None-Match: {etag}")[0] == 304
    else:
        modified = headers["last-modified"]
        assert _get(web_gw.port, "/webchat/app.js", f"If-Modified-Since: {modified}")[0] == 304
    status, headers, body = _get(web_gw.port, "/webchat/app.js", "Accept-Encoding: gzip")
    assert status == 200 and headers.get("content-encoding") == "gzip"
    import gzip
    assert b"import" in gzip.decompress(body)
