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


# -- the first five minutes: one-line errors, checks at start, help ---------------------------

import asyncio  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402

from krabfast.client import GatewayConnectError, RequestError, check_url  # noqa: E402


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("url, expect", [
    ("http://127.0.0.1:18789", "use ws://127.0.0.1:18789"),
    ("https://gw.example:443/x", "use wss://gw.example:443/x"),
    ("127.0.0.1:18789", "has no scheme: use ws://127.0.0.1:18789"),
    ("localhost:18789", "has no scheme: use ws://localhost:18789"),
    ("ftp://h", "scheme 'ftp'"),
    ("ws://127.0.0.1:99999", "invalid port"),
    ("ws://:1", "no host"),
])
def test_bad_urls_are_one_line_errors(url, expect, capsys):
    with pytest.raises(GatewayConnectError, match=re.escape(expect)):
        check_url(url)
    assert main(["health", "--url", url]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("krabfast health: ") and expect in line, line


def test_good_urls():
    assert check_url("ws://127.0.0.1:18789") == ("127.0.0.1", 18789, False)
    assert check_url("wss://gw.example/path") == ("gw.example", 443, True)
    assert check_url("ws://[::1]:5") == ("::1", 5, False)


def test_nothing_listening_is_one_line(capsys):
    port = _closed_port()
    assert main(["status", "--url", f"ws://127.0.0.1:{port}", "--timeout", "3"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("krabfast status: ") and "connection refused" in line, line


def test_call_errors_name_the_command(capsys):
    assert main(["health", "--url", "nope"]) == 1
    assert capsys.readouterr().err.startswith("krabfast health: ")
    assert main(["call", "system.echo", "--url", "nope"]) == 1
    assert capsys.readouterr().err.startswith("krabfast call system.echo: ")


def test_port_out_of_range_fails_at_start(capsys, no_serving):
    assert main(["gateway", "--port", "99999", "--state-dir", ":memory:"]) == 2
    assert no_serving == []
    line = _one_line(capsys.readouterr().err)
    assert "--port 99999" in line and "65535" in line, line
    with pytest.raises(ValueError, match="not a TCP port"):
        GatewayConfig.resolve(port=-1)
    assert GatewayConfig.resolve(port=0).port == 0  # any free port, on purpose


@pytest.fixture
def no_serving(monkeypatch):
    """`krabfast gateway` up to the point where it would listen (recorded, not run)."""
    import krabfast.gateway.server as server

    started = []
    monkeypatch.setattr(server, "run", started.append)
    return started


def test_unusable_state_dir_fails_at_start(capsys, no_serving):
    assert main(["gateway", "--state-dir", "/proc/nope"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "/proc/nope" in line and "--state-dir" in line, line
    assert no_serving == []


def test_state_dir_is_created_and_opened_at_start(tmp_path, capsys, no_serving):
    from krabfast.cli.gateway import check_state_dir

    state = tmp_path / "a" / "b"
    assert main(["gateway", "--state-dir", str(state)]) == 0
    assert (state / "gateway.sqlite3").exists() and len(no_serving) == 1
    assert check_state_dir(":memory:") is None
    assert main(["gateway", "--state-dir", ":memory:"]) == 0
    (tmp_path / "file").write_text("x")
    assert "cannot use state directory" in check_state_dir(str(tmp_path / "file"))


def test_unknown_log_level_is_one_line(capsys, no_serving):
    with pytest.raises(SystemExit) as exc:
        main(["gateway", "--log-level", "bogus"])
    assert exc.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert "unknown log level 'bogus'" in line and "debug" in line, line
    assert build_parser().parse_args(["gateway", "--log-level", "DEBUG"]).log_level == "debug"
    with pytest.raises(SystemExit):
        main(["node", "run", "--log-level", "loud"])
    _one_line(capsys.readouterr().err)


def test_token_ignored_by_auth_none_is_a_warning(capsys, no_serving, monkeypatch):
    assert main(["gateway", "--auth", "none", "--token", "x", "--state-dir", ":memory:"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "token from --token is ignored" in err, err
    assert no_serving[0].auth_mode == "none"
    monkeypatch.setenv("OPENCLAW_GATEWAY_PASSWORD", "p")
    assert main(["gateway", "--auth", "token", "--token", "x", "--state-dir", ":memory:"]) == 0
    err = capsys.readouterr().err
    assert "password from $OPENCLAW_GATEWAY_PASSWORD is ignored" in err, err
    monkeypatch.delenv("OPENCLAW_GATEWAY_PASSWORD")
    assert main(["gateway", "--token", "x", "--state-dir", ":memory:"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_gateway_help_has_description_and_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["gateway", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # whatever the terminal width
    assert "foreground" in out and "(default: 18789)" in out and "(default: 127.0.0.1)" in out
    assert "(default: 30000)" in out and "(default: None)" not in out
    with pytest.raises(SystemExit):
        main(["health", "--help"])
    out = capsys.readouterr().out
    for flag in ("--token TOKEN", "--password PASSWORD"):
        help_line = out.split(flag, 1)[1].split("\n", 1)[0]
        assert help_line.strip(), out  # each has a help text
    assert "KRABKRAB_GATEWAY_TOKEN" in out


def test_call_list_needs_no_gateway(capsys):
    assert main(["call", "--list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "operator.read" in rows["health"] and "operator.admin" in rows["system-event"]
    assert "node role" in rows["node.invoke.result"]
    from krabfast.methods import METHODS

    assert set(rows) == set(METHODS)
    assert main(["call", "--list", "--json"]) == 0
    import json

    listed = json.loads(capsys.readouterr().out)
    assert {"method": "device.pair.list", "scope": "operator.pairing"} in listed
    assert main(["call"]) == 2
    assert "--list" in capsys.readouterr().err


def _request_error(detail: str, message: str, **kw) -> RequestError:
    return RequestError("INVALID_REQUEST", message, {"code": detail, "authReason": "x"}, **kw)


def test_auth_errors_name_krabfast_flags():
    from krabfast.client.hints import explain_request_error

    text = explain_request_error(_request_error(
        "AUTH_TOKEN_MISMATCH", "unauthorized: gateway token mismatch (use this gateway's "
        "gateway.auth.token or pair the device)"))
    assert "gateway.auth" not in text and "--token" in text and "$KRABKRAB_GATEWAY_TOKEN" in text
    assert text.startswith("AUTH_TOKEN_MISMATCH: unauthorized: gateway token mismatch")
    text = explain_request_error(_request_error(
        "AUTH_PASSWORD_MISSING", "unauthorized: gateway password missing (set gateway.remote."
        "password to match gateway.auth.password)"))
    assert "gateway." not in text.replace("the gateway", "") and "--password" in text
    text = explain_request_error(RequestError("NOT_PAIRED", "device identity required",
                                              {"code": "DEVICE_IDENTITY_REQUIRED"}))
    assert "--token" in text and "--password" in text
    text = explain_request_error(_request_error("AUTH_RATE_LIMITED", "unauthorized: too many",
                                                retry_after_ms=30_000))
    assert "retry in 30 s" in text
    assert explain_request_error(RequestError("FORBIDDEN", "missing scope")) == \
        "FORBIDDEN: missing scope"


def test_node_run_takes_url_or_host_port(capsys):
    from krabfast.cli.nodes import node_url

    def url(*argv):
        return node_url(build_parser().parse_args(["node", "run", *argv]))

    assert url() == "ws://127.0.0.1:18789"
    assert url("--host", "gw", "--port", "1", "--tls") == "wss://gw:1"
    assert url("--host", "::1") == "ws://[::1]:18789"
    assert url("--url", "ws://gw:2") == "ws://gw:2"
    assert url("--url", "ws://gw:2", "--port", "3") is None
    assert "not both" in capsys.readouterr().err
    assert main(["node", "run", "--url", "gw:2"]) == 2
    assert "use ws://gw:2" in _one_line(capsys.readouterr().err)


def test_node_host_pairing_line_names_the_request():
    from krabfast.node.host import connect_failure

    err = RequestError("NOT_PAIRED", "pairing required: device is not approved yet",
                       {"code": "PAIRING_REQUIRED", "requestId": "req-42", "deviceId": "d"})
    line = connect_failure("ws://127.0.0.1:18789", err)
    assert "req-42" in line and "`krabfast devices approve req-42`" in line, line
    line = connect_failure("ws://gw:1", err)
    assert "`krabfast devices approve req-42 --url ws://gw:1`" in line, line
    line = connect_failure("ws://gw:1", _request_error("AUTH_TOKEN_MISMATCH", "unauthorized: x"))
    assert "--token" in line and line.startswith("cannot connect to ws://gw:1"), line
    assert "no answer" in connect_failure("ws://gw:1", asyncio.TimeoutError())
