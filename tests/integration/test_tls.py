"""TLS on the gateway port: the generated certificate (first start, reuse, file modes, the
fingerprint in the start-up log), wss with krabfast's client and CLI (pin right, wrong,
absent), a certificate of one's own (--tls-cert/--tls-key), https probes, and refusals."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from krabfast.client import GatewayConnectError
from tests.conftest import REPO
from tests.integration.helpers import TOKEN, gateway_client, run

FINGERPRINT = re.compile(r"fingerprint ([0-9a-f]{64})\b")


def wait_log(gw, pattern: str, timeout: float = 10.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, gw.output())
        if m:
            return m
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in the gateway log:\n{gw.output()}")


def start(gateway_server, *args: str, **kw):
    """A TLS gateway: (process, wss URL, fingerprint from its start-up log)."""
    gw = gateway_server("--token", TOKEN, *args, **kw)
    wait_log(gw, rf"listening on wss://127\.0\.0\.1:{gw.port} ")
    return gw, f"wss://127.0.0.1:{gw.port}", FINGERPRINT.search(gw.output()).group(1)


def served_der(port: int) -> bytes:
    """The certificate the port presents (no verification: we compare it ourselves)."""
    return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port)))


def file_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def colons(fp: str) -> str:
    return ":".join(fp[i:i + 2] for i in range(0, 64, 2)).upper()


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "krabfast", *args], cwd=REPO,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


async def health(url: str, **kw) -> dict:
    async with gateway_client(url, **kw) as client:
        assert client.hello is not None
        return await client.request("health")


# -- the generated certificate ---------------------------------------------------------------

def test_certificate_generated_on_first_start_and_reused(gateway_server, tmp_path):
    state = tmp_path / "state"
    gw, url, fp = start(gateway_server, "--tls", "--state-dir", str(state))
    base = state / "gateway" / "tls"
    cert, key = base / "gateway-cert.pem", base / "gateway-key.pem"
    assert f"gateway tls: generated self-signed cert at {cert}" in gw.output()
    for path in (cert, key):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    # The log's fingerprint is the served certificate's, which is the file's.
    assert fp == sha256(served_der(gw.port)) == sha256(file_der(cert))
    assert run(health(url, tls_fingerprint=fp))["ok"] is True
    gw.process.terminate()
    gw.process.wait(10)

    # Second start, TLS from the config file this time: same pair, nothing generated.
    config = tmp_path / "openclaw.json"
    config.write_text('{gateway: {tls: {enabled: true}}}')
    again, url2, fp2 = start(gateway_server, "--config", str(config), "--state-dir", str(state))
    assert fp2 == fp == sha256(served_der(again.port))
    assert run(health(url2, tls_fingerprint=fp))["ok"] is True
    assert "generated self-signed" not in again.output()


# -- krabfast's client and CLI over wss ------------------------------------------------------

@pytest.fixture(scope="module")
def tls_gw(gateway_server_module):
    gw = gateway_server_module("--token", TOKEN, "--tls")
    wait_log(gw, rf"listening on wss://127\.0\.0\.1:{gw.port} ")
    return gw, f"wss://127.0.0.1:{gw.port}", FINGERPRINT.search(gw.output()).group(1)


def test_wss_method_call_with_the_pin(tls_gw):
    _gw, url, fp = tls_gw
    for pin in (fp, colons(fp), f"sha256:{fp.upper()}"):
        assert run(health(url, tls_fingerprint=pin))["ok"] is True


def test_wrong_pin_is_refused(tls_gw):
    _gw, url, fp = tls_gw
    wrong = ("0" if fp[0] != "0" else "1") + fp[1:]
    with pytest.raises(GatewayConnectError) as err:
        run(health(url, tls_fingerprint=wrong))
    assert str(err.value).startswith("gateway tls fingerprint mismatch"), err.value
    assert fp in str(err.value)  # what the gateway presented, to compare with the log


def test_no_pin_a_self_signed_certificate_is_not_trusted(tls_gw):
    _gw, url, _fp = tls_gw
    with pytest.raises(GatewayConnectError, match=r"not trusted \(self-signed certificate\).*"
                                                  r"--tls-fingerprint"):
        run(health(url))


def test_pin_on_a_plain_url_is_refused(tls_gw):
    gw, _url, fp = tls_gw
    with pytest.raises(GatewayConnectError, match="requires wss:// gateway url"):
        run(health(f"ws://127.0.0.1:{gw.port}", tls_fingerprint=fp))


def test_plain_ws_to_the_tls_port_says_use_wss(tls_gw):
    gw, _url, _fp = tls_gw
    with pytest.raises(GatewayConnectError, match=f"use wss://127.0.0.1:{gw.port}"):
        run(health(f"ws://127.0.0.1:{gw.port}"))


def test_cli_pin_right_and_wrong(tls_gw):
    _gw, url, fp = tls_gw
    ok = cli("health", "--url", url, "--token", TOKEN, "--tls-fingerprint", colons(fp), "--json")
    assert ok.returncode == 0 and '"ok": true' in ok.stdout, ok.stderr
    wrong = fp[::-1]
    bad = cli("health", "--url", url, "--token", TOKEN, "--tls-fingerprint", wrong)
    assert bad.returncode == 1 and "gateway tls fingerprint mismatch" in bad.stderr, bad.stderr
    invalid = cli("health", "--url", url, "--token", TOKEN, "--tls-fingerprint", fp[:40])
    assert invalid.returncode == 1
    assert "Invalid TLS fingerprint; expected a SHA-256 certificate fingerprint." in invalid.stderr


def test_wrong_pin_sends_nothing(tls_gw, tmp_path):
    """Against a recording TLS server holding the gateway's own certificate: with the right
    pin the upgrade request arrives, with a wrong one not a byte of it."""
    gw, _url, fp = tls_gw
    cert_dir = _state_dir_of(gw) / "gateway" / "tls"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_dir / "gateway-cert.pem", cert_dir / "gateway-key.pem")

    async def attempt(pin: str) -> bytes:
        got = bytearray()

        class Recorder(asyncio.Protocol):
            def data_received(self, data):
                got.extend(data)

        server = await asyncio.get_running_loop().create_server(Recorder, "127.0.0.1", 0,
                                                                 ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(GatewayConnectError) as err:
                await health(f"wss://127.0.0.1:{port}", tls_fingerprint=pin, timeout=1.0)
            await asyncio.sleep(0.3)  # anything written before the refusal has arrived
        finally:
            server.close()
        return bytes(got), str(err.value)

    sent, why = run(attempt(fp))  # the recorder never answers the upgrade: a timeout
    assert sent.startswith(b"GET / HTTP/1.1\r\n") and b"Upgrade: websocket" in sent, (sent, why)
    sent, why = run(attempt(fp[::-1]))
    assert sent == b"" and why.startswith("gateway tls fingerprint mismatch"), (sent, why)


def _state_dir_of(gw) -> Path:
    """The state dir GatewayFactory gave this process (KRABFAST_STATE_DIR in its env)."""
    m = re.search(r"generated self-signed cert at (\S+)/gateway/tls/gateway-cert\.pem",
                  gw.output())
    assert m, gw.output()
    return Path(m.group(1))


# -- https and what TLS refuses ---------------------------------------------------------------

def _unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_https_probe(tls_gw):
    gw, _url, fp = tls_gw
    conn = http.client.HTTPSConnection("127.0.0.1", gw.port, context=_unverified(), timeout=5)
    try:
        conn.request("GET", "/healthz")
        res = conn.getresponse()
        body = res.read()
        if res.status == 404:
            pytest.skip("/healthz is not served yet (HTTP on the gateway port, issue 11)")
        assert res.status == 200 and b'"ok":true' in body.replace(b" ", b""), (res.status, body)
        assert sha256(conn.sock.getpeercert(binary_form=True)) == fp
    finally:
        conn.close()


def test_tls_1_2_and_plain_http_get_no_answer(tls_gw):
    gw, url, fp = tls_gw
    old = _unverified()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            old.wrap_socket(raw, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            answer = raw.recv(1000)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/"), answer
    # The gateway is still serving.
    assert run(health(url, tls_fingerprint=fp))["ok"] is True


# -- a certificate of one's own ---------------------------------------------------------------

def _issue(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A test CA and a leaf for 127.0.0.1 signed by it: (ca.pem, leaf.pem, leaf-key.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject, issuer, pub, signer, *, ca: bool, san=None):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "krabfast test CA")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    leaf = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name,
                 leaf_key.public_key(), ca_key, ca=False,
                 san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    paths = tmp_path / "ca.pem", tmp_path / "leaf.pem", tmp_path / "leaf-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return paths


def test_own_certificate_with_tls_cert_and_key(gateway_server, tmp_path):
    ca, leaf, key = _issue(tmp_path)
    state = tmp_path / "state"
    gw, url, fp = start(gateway_server, "--tls-cert", str(leaf), "--tls-key", str(key),
                        "--state-dir", str(state))
    assert fp == sha256(file_der(leaf)) == sha256(served_der(gw.port))
    assert not (state / "gateway" / "tls").exists()  # nothing generated
    # Verified the ordinary way (CA and name), no pin: by the client and by the CLI.
    trusted = ssl.create_default_context(cafile=str(ca))
    assert run(health(url, ssl_context=trusted))["ok"] is True
    ok = cli("health", "--url", url, "--token", TOKEN, "--json", env={"SSL_CERT_FILE": str(ca)})
    assert ok.returncode == 0, ok.stderr
    # The pin works too, and the system CAs alone do not trust it.
    assert run(health(url, tls_fingerprint=fp))["ok"] is True
    with pytest.raises(GatewayConnectError, match="not trusted"):
        run(health(url))


@pytest.mark.parametrize("make_args, message", [
    (lambda d: ["--tls-cert", str(d / "missing.pem"), "--tls-key", str(d / "missing-key.pem")],
     "gateway tls: cert/key missing"),
    (lambda d: ["--tls-cert", str(d / "leaf.pem"), "--tls-key", str(d / "ca.pem")],
     "gateway tls: failed to load cert"),
    (lambda d: ["--tls", "--state-dir", ":memory:"],
     "gateway tls: --state-dir :memory: has nowhere"),
])
def test_tls_that_cannot_start_exits_with_one_line(tmp_path, make_args, message):
    _issue(tmp_path)
    proc = cli("gateway", "--port", "0", *make_args(tmp_path),
               env={"KRABFAST_STATE_DIR": str(tmp_path / "s")})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1].startswith(f"krabfast gateway: {message}"), proc.stderr


def test_node_host_over_wss_with_the_pin(tls_gw, tmp_path):
    gw, url, fp = tls_gw
    bad = cli("node", "run", "--url", f"ws://127.0.0.1:{gw.port}", "--tls-fingerprint", fp)
    assert bad.returncode == 2 and "requires wss:// gateway url" in bad.stderr, bad.stderr
    log = tmp_path / "node.log"
    with open(log, "wb") as out:
        node = subprocess.Popen([sys.executable, "-m", "krabfast", "node", "run", "--url", url,
                                 "--tls-fingerprint", colons(fp), "--token", TOKEN,
                                 "--state-dir", str(tmp_path / "node")],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while f"connected to {url}" not in log.read_text():
            assert node.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        node.terminate()
        node.wait(10)
    assert "Traceback" not in log.read_text()
