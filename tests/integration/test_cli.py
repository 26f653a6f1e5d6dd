"""The krabfast command line against real gateways (and things that are not gateways):
one-line errors, checks at start, the client log, `call --list`, node hints."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from krabfast.gateway.config import PASSWORD_ENV_VARS, TOKEN_ENV_VARS
from tests.conftest import REPO, free_port
from tests.integration.helpers import TOKEN


def krabfast(*args: str, timeout: float = 30.0, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "krabfast", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          stdin=subprocess.DEVNULL)


def one_line_error(proc: subprocess.CompletedProcess, rc: int = 1) -> str:
    described = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == rc, described
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, described
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr, described
    return lines[0]


def timed(*args: str, **kw) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = krabfast(*args, **kw)
    return proc, time.monotonic() - t0


# -- transport errors ------------------------------------------------------------------------------

def test_wss_to_a_plain_gateway_fails_fast(gw):
    proc, took = timed("health", "--url", f"wss://127.0.0.1:{gw.port}", "--token", TOKEN)
    line = one_line_error(proc)
    assert line.startswith("krabfast health: ") and "plain WebSocket, not TLS" in line, line
    assert f"use ws://127.0.0.1:{gw.port}" in line, line
    assert took < 6, took  # it used to wait for the 10 s timeout


class _Http10(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<html>not a gateway</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Http11(_Http10):
    protocol_version = "HTTP/1.1"


@pytest.fixture(params=[_Http10, _Http11], ids=["http1.0", "http1.1"])
def http_server(request):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_plain_http_server_is_not_a_gateway(http_server):
    proc, took = timed("health", "--url", f"ws://127.0.0.1:{http_server}")
    line = one_line_error(proc)
    assert line.startswith(f"krabfast health: ws://127.0.0.1:{http_server} "), line
    assert re.search(r"is not a WebSocket gateway|instead of a WebSocket upgrade", line), line
    assert "200" in line and took < 6, (line, took)
    # TLS to it fails on the spot too, with the same kind of line.
    line = one_line_error(krabfast("status", "--url", f"wss://127.0.0.1:{http_server}"))
    assert line.startswith("krabfast status: TLS handshake with") and "use ws://" in line, line


def test_nothing_listening_and_bad_urls(gw):
    port = free_port()
    line = one_line_error(krabfast("health", "--url", f"ws://127.0.0.1:{port}"))
    assert "connection refused (is the gateway running?)" in line, line
    line = one_line_error(krabfast("health", "--url", f"127.0.0.1:{gw.port}"))
    assert f"use ws://127.0.0.1:{gw.port}" in line, line
    line = one_line_error(krabfast("devices", "list", "--url", f"http://127.0.0.1:{gw.port}"))
    assert line.startswith("krabfast devices list: ") and f"use ws://127.0.0.1:{gw.port}" in line


# -- auth hints ------------------------------------------------------------------------------------

def test_auth_failures_name_krabfast_flags(gw):
    line = one_line_error(krabfast("health", "--url", gw.url, "--token", "wrong"))
    assert line.startswith("krabfast health: AUTH_TOKEN_MISMATCH: unauthorized: gateway token "
                           "mismatch"), line
    assert "gateway.auth" not in line and "--token" in line and "KRABKRAB_GATEWAY_TOKEN" in line
    # No secret at all (blank variables count as unset).
    no_secrets = dict.fromkeys(TOKEN_ENV_VARS + PASSWORD_ENV_VARS, "")
    line = one_line_error(krabfast("status", "--url", gw.url, env=no_secrets))
    assert line.startswith("krabfast status: ") and "--token" in line, line


# -- call --list -----------------------------------------------------------------------------------

def test_call_list_asks_the_gateway_with_url(gw):
    proc = krabfast("call", "--list", "--url", gw.url, "--token", TOKEN)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert "operator.read" in rows["health"] and "operator.admin" in rows["system-event"], rows
    assert "node.invoke" in rows, rows


# -- nodes -----------------------------------------------------------------------------------------

def test_invoke_on_an_unknown_node_says_so(gw):
    line = one_line_error(krabfast("nodes", "invoke", "--node", "no-such-node", "--command",
                                   "system.which", "--url", gw.url, "--token", TOKEN))
    assert line.startswith("krabfast nodes invoke: unknown node 'no-such-node'"), line
    assert "pairing changed" not in line, line


def test_node_host_waiting_for_pairing_names_the_approval(gateway_server, tmp_path):
    gw = gateway_server("--token", TOKEN, "--no-auto-approve-local")
    log = tmp_path / "node.log"
    with open(log, "wb") as out:
        node = subprocess.Popen([sys.executable, "-m", "krabfast", "node", "run", "--url", gw.url,
                                 "--token", TOKEN, "--state-dir", str(tmp_path / "node")],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 20
        while True:
            match = re.search(r"`krabfast devices approve (\S+) --url (\S+)`", log.read_text())
            if match:
                break
            assert node.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert match.group(2) == gw.url
        text = log.read_text()
        assert "pairing required" in text and f"requestId {match.group(1)}" in text, text
        proc = krabfast("devices", "approve", match.group(1), "--url", gw.url, "--token", TOKEN)
        assert proc.returncode == 0, proc.stderr
        while "connected to" not in log.read_text():  # its next retry is let in
            assert node.poll() is None and time.monotonic() < deadline + 20, log.read_text()
            time.sleep(0.1)
    finally:
        node.terminate()
        node.wait(10)
    assert "Traceback" not in log.read_text()


# -- the gateway -----------------------------------------------------------------------------------

def test_gateway_refuses_bad_settings_at_start(tmp_path):
    for args, expect in ((["--port", "99999"], "--port 99999"),
                         (["--state-dir", "/proc/nope"], "/proc/nope"),
                         (["--log-level", "bogus"], "unknown log level 'bogus'")):
        proc, took = timed("gateway", "--port", str(free_port()), *args, timeout=20,
                           env={"KRABFAST_STATE_DIR": str(tmp_path)})
        line = one_line_error(proc, rc=2)
        assert expect in line and took < 10, (line, took)
        assert "listening" not in proc.stdout, proc.stdout


def test_gateway_logs_client_connects_refusals_and_disconnects(gateway_server):
    gw = gateway_server("--token", TOKEN, "--log-level", "debug")
    assert krabfast("health", "--url", gw.url, "--token", TOKEN).returncode == 0
    assert krabfast("health", "--url", gw.url, "--token", "wrong").returncode == 1
    deadline = time.monotonic() + 5
    while "client refused" not in gw.output() or "client disconnected" not in gw.output():
        assert time.monotonic() < deadline, gw.output()
        time.sleep(0.05)
    out = gw.output()
    assert re.search(r"client connected: cli/cli \S+ role=operator scopes=operator\.admin "
                     r"addr=127\.0\.0\.1 auth=token", out), out
    assert re.search(r"client disconnected: cli/cli role=operator addr=127\.0\.0\.1 conn=\S+ "
                     r"after [0-9.]+ s", out), out
    assert re.search(r"client refused: cli/cli role=operator addr=127\.0\.0\.1 "
                     r"code=AUTH_TOKEN_MISMATCH: ", out), out


def test_gateway_warns_when_auth_none_ignores_a_token(gateway_server):
    gw = gateway_server("--auth", "none", "--token", "x")
    assert "warning: --auth none: the token from --token is ignored" in gw.output(), gw.output()
