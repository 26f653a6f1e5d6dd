"""Gateway settings and the CLI's argument handling (no sockets)."""

from __future__ import annotations

import pytest

from krabfast.cli import build_parser, main
from krabfast.gateway.config import GatewayConfig


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("KRABKRAB_GATEWAY_TOKEN", "krabkrab_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_TOKEN",
                 "KRABKRAB_GATEWAY_PASSWORD", "OPENCLAW_GATEWAY_PASSWORD",
                 "KRABFAST_HANDSHAKE_TIMEOUT_MS", "OPENCLAW_HANDSHAKE_TIMEOUT_MS"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_need_no_config():
    cfg = GatewayConfig.resolve()
    assert (cfg.bind, cfg.port, cfg.auth_mode, cfg.tick_interval_ms) == ("127.0.0.1", 18789, "none", 30000)
    assert (cfg.max_payload, cfg.max_buffered_bytes) == (26214400, 52428800)


@pytest.mark.parametrize("var", ["KRABKRAB_GATEWAY_TOKEN", "krabkrab_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_TOKEN"])
def test_token_from_environment_selects_token_auth(monkeypatch, var):
    monkeypatch.setenv(var, "s3cret")
    cfg = GatewayConfig.resolve()
    assert cfg.auth_mode == "token" and cfg.token == "s3cret"


def test_non_loopback_without_auth_is_refused():
    with pytest.raises(ValueError, match="without auth"):
        GatewayConfig.resolve(bind="0.0.0.0")
    assert GatewayConfig.resolve(bind="0.0.0.0", token="t").auth_mode == "token"
    assert GatewayConfig.resolve(bind="::1").auth_mode == "none"


def test_token_mode_needs_a_token():
    with pytest.raises(ValueError, match="needs a token"):
        GatewayConfig.resolve(auth="token")


def test_handshake_timeout_from_environment(monkeypatch):
    monkeypatch.setenv("OPENCLAW_HANDSHAKE_TIMEOUT_MS", "250")
    assert GatewayConfig.resolve().handshake_timeout_ms == 250


def test_gateway_command_reports_refusal(capsys):
    assert main(["gateway", "--bind", "0.0.0.0", "--port", "1"]) == 2
    assert "refusing to bind 0.0.0.0 without auth" in capsys.readouterr().err


def test_parser_knows_every_command():
    parser = build_parser()
    args = parser.parse_args(["gateway", "--port", "1", "--bind", "127.0.0.1", "--auth", "password",
                              "--password", "p", "--tick-interval-ms", "500"])
    assert (args.port, args.auth, args.password, args.tick_interval_ms) == (1, "password", "p", 500)
    args = parser.parse_args(["call", "system-event", "--params", '{"text":"x"}', "--json",
                              "--url", "ws://h:1", "--token", "t"])
    assert (args.method, args.json, args.url, args.token) == ("system-event", True, "ws://h:1", "t")
    assert parser.parse_args(["health"]).method == "health"
    assert parser.parse_args(["status"]).method == "status"


def test_call_rejects_bad_params_json(capsys):
    assert main(["call", "health", "--params", "{nope"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
