"""The reference CLI (Node 24) against krabfast over wss, pinned from its own config.

`openclaw gateway call health --json` with no --url reads gateway.remote.{url, token,
tlsFingerprint} from an openclaw.json (OPENCLAW_CONFIG_PATH, under a fresh HOME): with
gateway.mode "remote" the pin applies (docs/reference/web-facts.md, 5.). The right pin
connects, a wrong one fails with the reference's `gateway tls fingerprint mismatch`.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from .helpers import TOKEN, run_node

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def tls_gateway(gateway_server_module):
    gw = gateway_server_module("--token", TOKEN, "--tls")
    deadline = time.monotonic() + 10
    while "listening on wss://" not in gw.output():
        assert time.monotonic() < deadline and gw.process.poll() is None, gw.output()
        time.sleep(0.05)
    fp = re.search(r"fingerprint ([0-9a-f]{64})\b", gw.output()).group(1)
    return gw, f"wss://127.0.0.1:{gw.port}", fp


def call_health(reference, tmp_path, url: str, pin: str):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    config = home / "openclaw.json"
    config.write_text(json.dumps({"gateway": {"mode": "remote", "remote": {
        "url": url, "token": TOKEN, "tlsFingerprint": pin}}}))
    proc = run_node(reference, [str(reference.openclaw_mjs), "gateway", "call", "health",
                                "--json"], cwd=home, home=home,
                    env={"OPENCLAW_CONFIG_PATH": str(config)}, timeout=90)
    proc.describe = (f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n"
                     f"{proc.stderr[-3000:]}")
    return proc


def test_reference_cli_over_wss_with_its_pin(reference, tls_gateway, tmp_path):
    gw, url, fp = tls_gateway
    colon_upper = ":".join(fp[i:i + 2] for i in range(0, 64, 2)).upper()
    proc = call_health(reference, tmp_path, url, colon_upper)
    assert proc.returncode == 0, proc.describe + "\n--- gateway\n" + gw.output()[-2000:]
    health = json.loads(proc.stdout)
    assert health["ok"] is True and isinstance(health["ts"], int)


def test_reference_cli_refuses_a_wrong_pin(reference, tls_gateway, tmp_path):
    gw, url, fp = tls_gateway
    proc = call_health(reference, tmp_path, url, fp[::-1])
    assert proc.returncode != 0, proc.describe
    assert "gateway tls fingerprint mismatch" in proc.stdout + proc.stderr, proc.describe
