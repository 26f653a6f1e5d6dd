"""`krabfast gateway --config FILE`: the reference's openclaw.json (JSON5) (no sockets)."""

from __future__ import annotations

import json

import pytest

from krabfast.cli import build_parser, main
from krabfast.cli.gateway import gateway_settings
from krabfast.gateway.config import GatewayConfig, RateLimitConfig
from krabfast.gateway.config_file import (ConfigFileError, find_config_path, load_config_file,
                                          parse_config, resolve_bind, substitute)

ENV_VARS = ("KRABKRAB_GATEWAY_TOKEN", "krabkrab_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_TOKEN",
            "KRABKRAB_GATEWAY_PASSWORD", "OPENCLAW_GATEWAY_PASSWORD", "KRABFAST_CONFIG",
            "OPENCLAW_CONFIG_PATH", "OPENCLAW_GATEWAY_PORT", "KRABFAST_HANDSHAKE_TIMEOUT_MS",
            "OPENCLAW_HANDSHAKE_TIMEOUT_MS", "KUBERNETES_SERVICE_HOST")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_serving(monkeypatch):
    """`krabfast gateway` up to the point where it would listen: the GatewayConfig it got."""
    import krabfast.gateway.server as server

    started = []
    monkeypatch.setattr(server, "run", started.append)
    return started


def write(tmp_path, text, name="openclaw.json") -> str:
    path = tmp_path / name
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    return str(path)


def config_for(argv, env=None) -> GatewayConfig:
    """The GatewayConfig `krabfast gateway ARGV` would run with."""
    args = build_parser().parse_args(["gateway", *argv])
    kw, _ = gateway_settings(args, {} if env is None else env)
    return GatewayConfig.resolve(auth=kw.pop("auth_mode", None), token=kw.pop("token", None),
                                 password=kw.pop("password", None), **kw)


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- each honoured key ------------------------------------------------------------------------

def test_port_bind_and_auth_from_the_file(tmp_path):
    path = write(tmp_path, {"gateway": {"port": 19001, "bind": "lan",
                                        "auth": {"mode": "token", "token": "file-tok"}}})
    cfg = config_for(["--config", path])
    assert (cfg.port, cfg.bind, cfg.auth_mode, cfg.token) == (19001, "0.0.0.0", "token", "file-tok")
    assert cfg.config_path == str((tmp_path / "openclaw.json").resolve())


def test_password_auth_from_the_file(tmp_path):
    path = write(tmp_path, {"gateway": {"auth": {"mode": "password", "password": "pw"}}})
    cfg = config_for(["--config", path])
    assert (cfg.auth_mode, cfg.password, cfg.token) == ("password", "pw", None)


def test_auth_mode_is_inferred_from_the_file_secret(tmp_path):
    cfg = config_for(["--config", write(tmp_path, {"gateway": {"auth": {"token": "t"}}})])
    assert (cfg.auth_mode, cfg.token) == ("token", "t")
    cfg = config_for(["--config", write(tmp_path, {"gateway": {"auth": {"mode": "none"}}})])
    assert cfg.auth_mode == "none"


@pytest.mark.parametrize("bind, expect", [
    ("loopback", "127.0.0.1"), ("lan", "0.0.0.0"), ("all", "0.0.0.0"),
    ("10.1.2.3", "10.1.2.3"), ("::1", "::1"), ("auto", "127.0.0.1"),
])
def test_bind_modes(bind, expect, monkeypatch):
    import krabfast.gateway.config_file as config_file

    monkeypatch.setattr(config_file, "_in_container", lambda: False)
    assert resolve_bind(bind) == expect


def test_bind_auto_in_a_container(monkeypatch):
    import krabfast.gateway.config_file as config_file

    monkeypatch.setattr(config_file, "_in_container", lambda: True)
    assert resolve_bind("auto") == "0.0.0.0"


def test_bind_custom_uses_custom_bind_host(tmp_path):
    path = write(tmp_path, {"gateway": {"bind": "custom", "customBindHost": "127.0.0.5"}})
    assert config_for(["--config", path]).bind == "127.0.0.5"
    # --bind custom takes the host from the file too
    path = write(tmp_path, {"gateway": {"customBindHost": "127.0.0.6"}})
    assert config_for(["--config", path, "--bind", "custom"]).bind == "127.0.0.6"


def test_flag_bind_accepts_the_reference_modes():
    assert config_for(["--bind", "loopback"]).bind == "127.0.0.1"
    assert config_for(["--bind", "lan", "--token", "t"]).bind == "0.0.0.0"


def test_non_loopback_bind_from_the_file_still_needs_auth(tmp_path):
    with pytest.raises(ValueError, match="without auth"):
        config_for(["--config", write(tmp_path, {"gateway": {"bind": "lan"}})])


def test_rate_limit_pairing_and_node_commands(tmp_path):
    path = write(tmp_path, {"gateway": {
        "auth": {"rateLimit": {"maxAttempts": 3, "windowMs": 1000, "lockoutMs": 0,
                               "exemptLoopback": False}},
        "nodes": {"pairing": {"autoApproveLocal": False},
                  "commands": {"allow": ["camera.snap"], "deny": ["system.run", " "]}}}})
    cfg = config_for(["--config", path])
    assert cfg.rate_limit == RateLimitConfig(max_attempts=3, window_ms=1000, lockout_ms=0,
                                             exempt_loopback=False)
    assert cfg.auto_approve_local is False
    assert (cfg.node_commands_allow, cfg.node_commands_deny) == ({"camera.snap"}, {"system.run"})


PROVIDERS = {"lmstudio": {
    "baseUrl": "http://127.0.0.1:1234/v1", "apiKey": "lmstudio", "api": "openai-responses",
    "timeoutSeconds": 30, "headers": {"X-Org": "krab"},
    "models": [{"id": "my-local-model", "name": "Local Model", "contextWindow": 196608}]}}


def test_models_providers_and_primary_model_pass_through(tmp_path):
    path = write(tmp_path, {"models": {"providers": PROVIDERS},
                            "agents": {"defaults": {"model": {"primary": "lmstudio/my-local-model"}}}})
    cfg = config_for(["--config", path])
    assert cfg.models_config == {"providers": PROVIDERS}
    assert cfg.primary_model == "lmstudio/my-local-model"


def test_primary_model_string_form(tmp_path):
    path = write(tmp_path, {"agents": {"defaults": {"model": "anthropic/claude-opus-4-6"}}})
    assert config_for(["--config", path]).primary_model == "anthropic/claude-opus-4-6"


def test_api_key_secret_ref_passes_through():
    ref = {"source": "env", "provider": "default", "id": "OPENAI_API_KEY"}
    s = parse_config({"models": {"providers": {"openai": {"apiKey": ref}}}}, "f", {})
    assert s.values["models_config"]["providers"]["openai"]["apiKey"] == ref


def test_no_file_is_the_embedded_defaults():
    cfg = config_for([])
    assert (cfg.port, cfg.bind, cfg.auth_mode, cfg.config_path) == (18789, "127.0.0.1", "none", None)
    assert (cfg.models_config, cfg.primary_model, cfg.auto_approve_local) == (None, None, True)


# -- precedence: flag > file > env / defaults -------------------------------------------------

def test_flags_override_the_file(tmp_path):
    path = write(tmp_path, {"gateway": {
        "port": 19001, "bind": "lan", "auth": {"mode": "token", "token": "file-tok"},
        "nodes": {"pairing": {"autoApproveLocal": True}, "commands": {"deny": ["a"]}}}})
    cfg = config_for(["--config", path, "--port", "19002", "--bind", "127.0.0.1",
                      "--token", "flag-tok", "--no-auto-approve-local",
                      "--node-commands-deny", "b"])
    assert (cfg.port, cfg.bind, cfg.token, cfg.auth_mode) == (19002, "127.0.0.1", "flag-tok", "token")
    assert (cfg.auto_approve_local, cfg.node_commands_deny) == (False, {"b"})
    cfg = config_for(["--config", path, "--auth", "password", "--password", "p"])
    assert (cfg.auth_mode, cfg.password) == ("password", "p")


def test_file_secret_overrides_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENCLAW_GATEWAY_TOKEN", "env-tok")
    path = write(tmp_path, {"gateway": {"auth": {"token": "file-tok"}}})
    assert config_for(["--config", path]).token == "file-tok"
    assert config_for(["--config", path, "--token", "flag-tok"]).token == "flag-tok"


def test_environment_secret_applies_when_the_file_has_none(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENCLAW_GATEWAY_TOKEN", "env-tok")
    path = write(tmp_path, {"gateway": {"port": 19005, "auth": {"mode": "token"}}})
    cfg = config_for(["--config", path])
    assert (cfg.port, cfg.auth_mode, cfg.token) == (19005, "token", "env-tok")


def test_port_precedence_follows_the_reference(tmp_path):
    # --port > $OPENCLAW_GATEWAY_PORT > gateway.port > 18789 (docs/gateway/config-gateway.md)
    path = write(tmp_path, {"gateway": {"port": 19001}})
    assert config_for(["--config", path], {"OPENCLAW_GATEWAY_PORT": "19003"}).port == 19003
    assert config_for(["--config", path, "--port", "19004"],
                      {"OPENCLAW_GATEWAY_PORT": "19003"}).port == 19004
    assert config_for(["--config", path]).port == 19001
    assert config_for([]).port == 18789


def test_both_secrets_without_a_mode_is_an_error(tmp_path):
    path = write(tmp_path, {"gateway": {"auth": {"token": "t", "password": "p"}}})
    with pytest.raises(ConfigFileError, match="gateway.auth: both token and password"):
        config_for(["--config", path])
    assert config_for(["--config", path, "--auth", "password"]).auth_mode == "password"


# -- discovery --------------------------------------------------------------------------------

def test_discovery_order(tmp_path):
    a, b, c = (write(tmp_path, {}, n) for n in ("a.json", "b.json", "c.json"))
    env = {"KRABFAST_CONFIG": b, "OPENCLAW_CONFIG_PATH": c}
    assert find_config_path(a, env) == (a, "--config")
    assert find_config_path(None, env) == (b, "$KRABFAST_CONFIG")
    assert find_config_path(None, {"OPENCLAW_CONFIG_PATH": c}) == (c, "$OPENCLAW_CONFIG_PATH")
    assert find_config_path(None, {}) == (None, None)


def test_openclaw_config_path_is_read(tmp_path, monkeypatch, no_serving):
    path = write(tmp_path, {"gateway": {"port": 19011}})
    monkeypatch.setenv("OPENCLAW_CONFIG_PATH", path)
    assert main(["gateway", "--state-dir", ":memory:"]) == 0
    assert no_serving[0].port == 19011
    assert no_serving[0].config_path == str((tmp_path / "openclaw.json").resolve())


def test_krabfast_config_wins_over_openclaw_config_path(tmp_path, monkeypatch, no_serving):
    monkeypatch.setenv("OPENCLAW_CONFIG_PATH", write(tmp_path, {"gateway": {"port": 19011}}, "o.json"))
    monkeypatch.setenv("KRABFAST_CONFIG", write(tmp_path, {"gateway": {"port": 19012}}, "k.json"))
    assert main(["gateway", "--state-dir", ":memory:"]) == 0
    flag = write(tmp_path, {"gateway": {"port": 19013}}, "f.json")
    assert main(["gateway", "--state-dir", ":memory:", "--config", flag]) == 0
    assert [cfg.port for cfg in no_serving] == [19012, 19013]


def test_missing_files(tmp_path, monkeypatch, capsys, no_serving):
    missing = str(tmp_path / "nope.json")
    assert main(["gateway", "--config", missing, "--state-dir", ":memory:"]) == 2
    line = error_line(capsys)
    assert line == f"krabfast gateway: error: config {missing}: no such file", line
    monkeypatch.setenv("KRABFAST_CONFIG", missing)
    assert main(["gateway", "--state-dir", ":memory:"]) == 2
    assert "no such file" in error_line(capsys)
    # the reference's variable naming a file not yet written: its defaults, as the reference
    monkeypatch.delenv("KRABFAST_CONFIG")
    monkeypatch.setenv("OPENCLAW_CONFIG_PATH", missing)
    assert main(["gateway", "--state-dir", ":memory:"]) == 0
    assert no_serving[0].config_path is None and no_serving[0].port == 18789


# -- JSON5 ------------------------------------------------------------------------------------

def test_json5_syntax(tmp_path):
    path = write(tmp_path, """
        // the reference's own format
        {
          gateway: {
            port: 19021,          /* unquoted keys */
            bind: 'loopback',     // single quotes
            auth: { mode: "token", token: "t", },  // trailing commas
          },
        }
    """)
    cfg = config_for(["--config", path])
    assert (cfg.port, cfg.bind, cfg.token) == (19021, "127.0.0.1", "t")


def test_syntax_error_names_file_line_and_column(tmp_path, capsys):
    path = write(tmp_path, "{\n  gateway: {\n    port: 1,,\n  },\n}\n")
    assert main(["gateway", "--config", path]) == 2
    line = error_line(capsys)
    assert line.startswith(f"krabfast gateway: error: config {path}: not valid JSON5: line 3, "
                           "column "), line


def test_top_level_must_be_an_object(tmp_path):
    with pytest.raises(ConfigFileError, match="expected an object at the top, got an array"):
        load_config_file(write(tmp_path, "[1, 2]"))


# -- unknown keys: one warning line -----------------------------------------------------------

def test_unknown_keys_are_listed_once(tmp_path, capsys, no_serving):
    path = write(tmp_path, {
        "channels": {"telegram": {"botToken": "x"}}, "meta": {"lastTouchedVersion": "1"},
        "gateway": {"port": 19031, "tls": {"autoGenerate": True, "enabled": False,
                                           "futureKey": 1},
                    "auth": {"allowTailscale": True}},
        "models": {"mode": "merge", "providers": {"p": {"baseUrl": "http://h/v1", "extra": 1}}},
        "agents": {"defaults": {"model": {"primary": "p/m", "fallbacks": ["q/n"]},
                                "workspace": "~/w"}}})
    assert main(["gateway", "--config", path, "--state-dir", ":memory:"]) == 0
    assert no_serving[0].port == 19031
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "ignoring keys" in line]
    assert len(lines) == 1 and err.count("ignoring keys") == 1, err
    keys = lines[0].split("ignoring keys krabfast does not use: ", 1)[1].split(", ")
    assert lines[0].startswith(f"krabfast gateway: warning: config {path}: ")
    assert sorted(keys) == sorted([
        "channels", "meta", "gateway.tls.futureKey", "gateway.auth.allowTailscale", "models.mode",
        "models.providers.p.extra", "agents.defaults.model.fallbacks",
        "agents.defaults.workspace"]), keys


def test_known_keys_only_no_warning(tmp_path, capsys, no_serving):
    path = write(tmp_path, {"gateway": {"port": 19032}, "models": {"providers": PROVIDERS}})
    assert main(["gateway", "--config", path, "--state-dir", ":memory:"]) == 0
    assert "warning" not in capsys.readouterr().err


# -- invalid values: one line naming the key --------------------------------------------------

@pytest.mark.parametrize("config, key, says", [
    ({"gateway": {"port": "abc"}}, "gateway.port", 'expected an integer 0-65535, got "abc"'),
    ({"gateway": {"port": 70000}}, "gateway.port", "expected an integer 0-65535, got 70000"),
    ({"gateway": {"port": True}}, "gateway.port", "expected an integer 0-65535, got true"),
    ({"gateway": {"port": 1.5}}, "gateway.port", "expected an integer 0-65535"),
    ({"gateway": []}, "gateway", "expected an object"),
    ({"gateway": {"bind": "moon"}}, "gateway.bind", 'got "moon"'),
    ({"gateway": {"bind": 5}}, "gateway.bind", "expected a non-empty string"),
    ({"gateway": {"bind": "custom"}}, "gateway.bind", "needs gateway.customBindHost"),
    ({"gateway": {"bind": "custom", "customBindHost": "example.com"}},
     "gateway.customBindHost", "expected an IPv4 address"),
    ({"gateway": {"bind": "tailnet"}}, "gateway.bind", "not supported"),
    ({"gateway": {"mode": "remote"}}, "gateway.mode", '"remote"'),
    ({"gateway": {"auth": {"mode": "oauth"}}}, "gateway.auth.mode", "one of none, token, password"),
    ({"gateway": {"auth": {"mode": "trusted-proxy"}}}, "gateway.auth.mode", "trusted-proxy is not supported"),
    ({"gateway": {"auth": "t"}}, "gateway.auth", "expected an object"),
    ({"gateway": {"auth": {"token": 123}}}, "gateway.auth.token", "expected a non-empty string"),
    ({"gateway": {"auth": {"password": ""}}}, "gateway.auth.password", "expected a non-empty string"),
    ({"gateway": {"auth": {"token": {"source": "file", "id": "/x"}}}},
     "gateway.auth.token", 'source "file" is not supported'),
    ({"gateway": {"auth": {"token": "${KRABFAST_TEST_UNSET}"}}},
     "gateway.auth.token", "${KRABFAST_TEST_UNSET} is not set"),
    ({"gateway": {"auth": {"rateLimit": {"maxAttempts": 0}}}},
     "gateway.auth.rateLimit.maxAttempts", "expected an integer >= 1"),
    ({"gateway": {"auth": {"rateLimit": {"exemptLoopback": "no"}}}},
     "gateway.auth.rateLimit.exemptLoopback", "expected true or false"),
    ({"gateway": {"nodes": {"pairing": {"autoApproveLocal": 1}}}},
     "gateway.nodes.pairing.autoApproveLocal", "expected true or false"),
    ({"gateway": {"nodes": {"commands": {"allow": "camera.snap"}}}},
     "gateway.nodes.commands.allow", "expected an array of strings"),
    ({"models": {"providers": []}}, "models.providers", "expected an object"),
    ({"models": {"providers": {"p": {"baseUrl": "ftp://h"}}}},
     "models.providers.p.baseUrl", "expected an http:// or https:// URL"),
    ({"models": {"providers": {"p": {"apiKey": 5}}}}, "models.providers.p.apiKey", "expected"),
    ({"models": {"providers": {"p": {"api": ""}}}}, "models.providers.p.api", "expected"),
    ({"models": {"providers": {"p": {"timeoutSeconds": 0}}}},
     "models.providers.p.timeoutSeconds", "expected a number of seconds > 0"),
    ({"models": {"providers": {"p": {"headers": {"X": 1}}}}}, "models.providers.p.headers.X",
     "expected a string"),
    ({"models": {"providers": {"p": {"models": {}}}}}, "models.providers.p.models", "expected an array"),
    ({"models": {"providers": {"p": {"models": [{"name": "n"}]}}}},
     "models.providers.p.models[0].id", "expected a non-empty string"),
    ({"agents": {"defaults": {"model": "no-slash"}}}, "agents.defaults.model", '"provider/model"'),
    ({"agents": {"defaults": {"model": {"primary": "p/"}}}}, "agents.defaults.model.primary",
     '"provider/model"'),
    ({"agents": {"defaults": {"model": 3}}}, "agents.defaults.model", "expected"),
    ({"agents": {"$include": "./agents.json5"}}, "agents.$include", "not supported"),
])
def test_invalid_values_name_their_key(tmp_path, capsys, no_serving, config, key, says):
    path = write(tmp_path, config)
    assert main(["gateway", "--config", path, "--state-dir", ":memory:"]) == 2
    assert no_serving == []
    line = error_line(capsys)
    assert line.startswith(f"krabfast gateway: error: config {path}: {key}: "), line
    assert says in line, line


def test_port_error_reads_as_documented(tmp_path, capsys):
    path = write(tmp_path, '{gateway: {port: "abc"}}')
    assert main(["gateway", "--config", path]) == 2
    assert error_line(capsys) == (f'krabfast gateway: error: config {path}: gateway.port: '
                                  'expected an integer 0-65535, got "abc"')


# -- ${VAR} substitution (docs/gateway/configuration/environment-variables.md) ----------------

def test_env_substitution():
    env = {"BASE": "https://api.example.com", "KEY": "k1"}
    missing: list[str] = []
    assert substitute("${BASE}/v1", env, missing) == "https://api.example.com/v1"
    assert substitute("$${BASE}", env, missing) == "${BASE}"  # escaped: literal
    assert substitute("${lower}", env, missing) == "${lower}"  # uppercase names only
    assert substitute({"a": ["${KEY}"]}, env, missing) == {"a": ["k1"]}
    assert missing == []
    assert substitute("${NOPE}-x", env, missing) == "${NOPE}-x" and missing == ["NOPE"]


def test_env_substitution_in_the_file(tmp_path, monkeypatch, capsys, no_serving):
    monkeypatch.setenv("KF_TEST_TOKEN", "from-env")
    monkeypatch.setenv("KF_TEST_BASE", "http://127.0.0.1:1234")
    path = write(tmp_path, {"gateway": {"auth": {"token": "${KF_TEST_TOKEN}"}},
                            "models": {"providers": {"p": {"baseUrl": "${KF_TEST_BASE}/v1",
                                                           "apiKey": "${KF_TEST_UNSET_KEY}"}}}})
    assert main(["gateway", "--config", path, "--state-dir", ":memory:"]) == 0
    cfg = no_serving[0]
    assert (cfg.auth_mode, cfg.token) == ("token", "from-env")
    provider = cfg.models_config["providers"]["p"]
    assert provider == {"baseUrl": "http://127.0.0.1:1234/v1", "apiKey": "${KF_TEST_UNSET_KEY}"}
    err = capsys.readouterr().err
    assert ("warning: config " + path + ": models.providers.p.apiKey: ${KF_TEST_UNSET_KEY} is not "
            "set in the environment") in err, err


def test_env_secret_ref_for_the_gateway_token(monkeypatch):
    s = parse_config({"gateway": {"auth": {"token": {"source": "env", "provider": "default",
                                                     "id": "GW_TOK"}}}}, "f", {"GW_TOK": "x"})
    assert s.values["token"] == "x"
    with pytest.raises(ConfigFileError, match="gateway.auth.token: SecretRef env GW_TOK is not set"):
        parse_config({"gateway": {"auth": {"token": {"source": "env", "id": "GW_TOK"}}}}, "f", {})


def test_unused_file_secret_warning_names_the_config(tmp_path, capsys, no_serving):
    path = write(tmp_path, {"gateway": {"auth": {"mode": "none", "token": "t"}}})
    assert main(["gateway", "--config", path, "--state-dir", ":memory:"]) == 0
    err = capsys.readouterr().err
    assert "the token from the config's gateway.auth.token is ignored" in err, err


def test_help_mentions_config(capsys):
    with pytest.raises(SystemExit):
        main(["gateway", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--config FILE" in out and "OPENCLAW_CONFIG_PATH" in out and "KRABFAST_CONFIG" in out
    assert "(default: 18789)" in out and "(default: 127.0.0.1)" in out
