"""The reference's config file (openclaw.json, JSON5) read into GatewayConfig settings.

`find_config_path` picks the file (--config, else $KRABFAST_CONFIG, else $OPENCLAW_CONFIG_PATH;
none: embedded defaults), `load_config_file` reads and checks it. The keys krabfast honours:

- gateway.port, gateway.bind (+ gateway.customBindHost), gateway.mode ("local" only)
- gateway.auth.{mode, token, password} and gateway.auth.rateLimit.*
- gateway.nodes.pairing.autoApproveLocal, gateway.nodes.commands.{allow, deny}
- gateway.controlUi.{enabled, basePath, root, allowedOrigins} (the reference's Control UI)
- gateway.tls.{enabled, autoGenerate, certPath, keyPath, caPath}
- gateway.trustedProxies (IPs or CIDRs), gateway.allowRealIpFallback
- models.providers.<id>.{baseUrl, apiKey, api, models, timeoutSeconds, headers} (passed through)
- agents.defaults.model ("provider/model", or {primary: "provider/model"})

Every other key is reported once (`FileSettings.ignored`), never fatal. An invalid value is a
`ConfigFileError` naming the file and the key. String values get the reference's `${VAR}`
substitution (uppercase names only; `$${VAR}` is a literal `${VAR}`; an unset variable stays
as written, with a warning, and fails closed for the gateway's own secrets).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from krabfast.gateway.config import RateLimitConfig

CONFIG_ENV_VARS = ("KRABFAST_CONFIG", "OPENCLAW_CONFIG_PATH")
BIND_MODES = ("loopback", "lan", "all", "auto", "custom", "tailnet")
AUTH_MODES = ("none", "token", "password")
PROVIDER_KEYS = ("baseUrl", "apiKey", "api", "models", "timeoutSeconds", "headers")
RATE_LIMIT_KEYS = {"maxAttempts": "max_attempts", "windowMs": "window_ms",
                   "lockoutMs": "lockout_ms", "exemptLoopback": "exempt_loopback"}
TLS_KEYS = {"enabled": "tls_enabled", "autoGenerate": "tls_auto_generate",
            "certPath": "tls_cert_path", "keyPath": "tls_key_path", "caPath": "tls_ca_path"}

# The tree of keys krabfast reads: a dict of children, "*" for any key (provider ids), or
# True for a leaf (its value is checked, not walked).
KNOWN_KEYS: dict = {
    "gateway": {
        "port": True, "bind": True, "customBindHost": True, "mode": True,
        "trustedProxies": True, "allowRealIpFallback": True,
        "auth": {"mode": True, "token": True, "password": True,
                 "rateLimit": {k: True for k in RATE_LIMIT_KEYS}},
        "tls": {k: True for k in TLS_KEYS},
        "nodes": {"pairing": {"autoApproveLocal": True},
                  "commands": {"allow": True, "deny": True}},
        "controlUi": {"enabled": True, "basePath": True, "root": True, "allowedOrigins": True},
    },
    "models": {"providers": {"*": {k: True for k in PROVIDER_KEYS}}},
    "agents": {"defaults": {"model": True}},
}

_VAR = re.compile(r"\$(\$?)\{([A-Z_][A-Z0-9_]*)\}")


class ConfigFileError(ValueError):
    """A config file that cannot be used; str() is one line naming the file (and the key)."""


@dataclass
class FileSettings:
    path: str
    # GatewayConfig keyword arguments the file sets (only those it sets).
    values: dict = field(default_factory=dict)
    custom_bind_host: str | None = None  # gateway.customBindHost (also for --bind custom)
    both_secrets: bool = False  # token and password, no mode: an error unless --auth picks one
    ignored: list[str] = field(default_factory=list)  # dotted keys krabfast does not use
    warnings: list[str] = field(default_factory=list)  # e.g. unset ${VAR}


def find_config_path(flag: str | None, env=None) -> tuple[str | None, str | None]:
    """(path, where it came from) or (None, None). An $OPENCLAW_CONFIG_PATH naming a missing
    file means no file, as in the reference (which then uses its defaults); a missing file
    named by --config or $KRABFAST_CONFIG is an error (`load_config_file`)."""
    env = os.environ if env is None else env
    if flag:
        return flag, "--config"
    if env.get("KRABFAST_CONFIG"):
        return env["KRABFAST_CONFIG"], "$KRABFAST_CONFIG"
    path = env.get("OPENCLAW_CONFIG_PATH")
    if path and Path(path).expanduser().exists():
        return path, "$OPENCLAW_CONFIG_PATH"
    return None, None


def _show(value) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _syntax_error(path: str, exc: Exception) -> ConfigFileError:
    text = str(exc).replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    m = re.search(r":(\d+) (.*) at column (\d+)", text)
    if m:
        return ConfigFileError(f"config {path}: not valid JSON5: line {m.group(1)}, "
                               f"column {m.group(3)}: {m.group(2)}")
    m = re.search(r"line (\d+) column (\d+)", text)
    if m:
        return ConfigFileError(f"config {path}: not valid JSON5: line {m.group(1)}, "
                               f"column {m.group(2)}: {text}")
    return ConfigFileError(f"config {path}: not valid JSON5: {text}")


def load_config_file(path: str, env=None) -> FileSettings:
    """Read and check the file; raises ConfigFileError."""
    import json5

    shown = str(path)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"config {shown}: no such file") from None
    except IsADirectoryError:
        raise ConfigFileError(f"config {shown}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"config {shown}: not UTF-8 text ({exc.reason} at byte "
                              f"{exc.start})") from None
    except OSError as exc:
        raise ConfigFileError(f"config {shown}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json5.loads(text)
    except ValueError as exc:
        raise _syntax_error(shown, exc) from None
    return parse_config(data, shown, env)


def substitute(value, env, unresolved: list[str]):
    """The reference's ${VAR} substitution in every string of value (names are recorded in
    unresolved when unset or empty; the text stays as written)."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def repl(m):
            if m.group(1):  # $${VAR}: a literal ${VAR}
                return "${" + m.group(2) + "}"
            got = env.get(m.group(2))
            if not got:
                unresolved.append(m.group(2))
                return m.group(0)
            return got
        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [substitute(v, env, unresolved) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, env, unresolved) for k, v in value.items()}
    return value


def _unknown(data: dict, known: dict, prefix: str, out: list[str]) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        spec = known.get(key, known.get("*"))
        if spec is None:
            out.append(dotted)
        elif isinstance(spec, dict) and isinstance(value, dict):
            _unknown(value, spec, dotted + ".", out)


def _includes(value, prefix: str = "") -> str | None:
    if isinstance(value, dict):
        for key, child in value.items():
            if key == "$include":
                return f"{prefix}{key}"
            found = _includes(child, f"{prefix}{key}.")
            if found:
                return found
    return None


class _Checker:
    def __init__(self, path: str, env):
        self.path, self.env = path, env
        self.warnings: list[str] = []

    def fail(self, key: str, problem: str) -> ConfigFileError:
        return ConfigFileError(f"config {self.path}: {key}: {problem}")

    def expect(self, key: str, what: str, value) -> ConfigFileError:
        return self.fail(key, f"expected {what}, got {_show(value)}")

    def obj(self, key: str, value) -> dict:
        if not isinstance(value, dict):
            raise self.expect(key, "an object", value)
        return value

    def string(self, key: str, value, *, empty=False) -> str:
        if not isinstance(value, str) or (not empty and not value.strip()):
            raise self.expect(key, "a non-empty string" if not empty else "a string", value)
        return self.sub(key, value)

    def sub(self, key: str, value, *, required=False):
        unresolved: list[str] = []
        out = substitute(value, self.env, unresolved)
        for name in dict.fromkeys(unresolved):
            if required:
                raise self.fail(key, f"${{{name}}} is not set in the environment")
            self.warnings.append(f"config {self.path}: {key}: ${{{name}}} is not set in the "
                                 "environment (left as written)")
        return out

    def integer(self, key: str, value, lo: int, hi: int | None = None) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and value >= lo and (hi is None or value <= hi):
            return value
        what = f"an integer {lo}-{hi}" if hi is not None else f"an integer >= {lo}"
        raise self.expect(key, what, value)

    def boolean(self, key: str, value) -> bool:
        if not isinstance(value, bool):
            raise self.expect(key, "true or false", value)
        return value

    def names(self, key: str, value) -> frozenset[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.expect(key, "an array of strings", value)
        return frozenset(self.sub(key, v).strip() for v in value if v.strip())

    def secret(self, key: str, value) -> str:
        """A gateway secret: a string (${VAR} must resolve) or an env SecretRef."""
        if isinstance(value, dict):
            source = value.get("source")
            if source != "env":
                raise self.fail(key, f"SecretRef source {_show(source)} is not supported by "
                                "krabfast (use source \"env\", a \"${VAR}\" string or the value)")
            name = value.get("id")
            if not isinstance(name, str) or not re.fullmatch(r"[A-Z][A-Z0-9_]{0,127}", name):
                raise self.expect(f"{key}.id", "an environment variable name", name)
            got = self.env.get(name)
            if not got:
                raise self.fail(key, f"SecretRef env {name} is not set in the environment")
            return got
        if not isinstance(value, str) or not value:
            raise self.expect(key, "a non-empty string or a SecretRef object", value)
        return self.sub(key, value, required=True)


def resolve_bind(mode: str, custom_host: str | None = None, *, key: str = "gateway.bind") -> str:
    """The address for the reference's bind mode (or an IP literal); ValueError naming key.
    loopback: 127.0.0.1; lan (or all): 0.0.0.0; auto: 0.0.0.0 in a container, else
    127.0.0.1; custom: gateway.customBindHost (an IPv4 address)."""
    if mode == "loopback":
        return "127.0.0.1"
    if mode in ("lan", "all"):
        return "0.0.0.0"
    if mode == "auto":
        return "0.0.0.0" if _in_container() else "127.0.0.1"
    if mode == "custom":
        host = (custom_host or "").strip()
        if not host:
            raise ValueError(f"{key}: \"custom\" needs gateway.customBindHost (an IPv4 address)")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"gateway.customBindHost: expected an IPv4 address, got {_show(host)}")
        return host
    if mode == "tailnet":
        raise ValueError(f"{key}: \"tailnet\" is not supported by krabfast (use loopback, lan, "
                         "auto, custom or an IP address)")
    try:
        return str(ipaddress.ip_address(mode))
    except ValueError:
        raise ValueError(f"{key}: expected one of {', '.join(BIND_MODES)} or an IP address, "
                         f"got {_show(mode)}") from None


def _in_container() -> bool:
    """As the reference's `auto` bind: Docker, Podman or Kubernetes."""
    return (os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
            or bool(os.environ.get("KUBERNETES_SERVICE_HOST")))


def _model_ref(c: _Checker, key: str, value) -> str:
    ref = c.string(key, value)
    provider, _, model = ref.partition("/")
    if not provider.strip() or not model.strip():
        raise c.expect(key, "\"provider/model\"", value)
    return ref


def _providers(c: _Checker, providers) -> dict:
    out = {}
    for pid, spec in c.obj("models.providers", providers).items():
        key = f"models.providers.{pid}"
        spec = c.obj(key, spec)
        entry = {}
        for name in PROVIDER_KEYS:
            if name not in spec:
                continue
            value, k = spec[name], f"{key}.{name}"
            if name in ("baseUrl", "api"):
                entry[name] = c.string(k, value)
                if name == "baseUrl" and not re.match(r"https?://", entry[name]):
                    raise c.expect(k, "an http:// or https:// URL", value)
            elif name == "apiKey":
                if isinstance(value, dict):
                    if "source" not in value or "id" not in value:
                        raise c.expect(k, "a string or a SecretRef {source, id}", value)
                    entry[name] = dict(value)
                else:
                    entry[name] = c.string(k, value)
            elif name == "timeoutSeconds":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise c.expect(k, "a number of seconds > 0", value)
                entry[name] = value
            elif name == "headers":
                headers = c.obj(k, value)
                for h, v in headers.items():
                    if not isinstance(v, str):
                        raise c.expect(f"{k}.{h}", "a string", v)
                entry[name] = {h: c.sub(f"{k}.{h}", v) for h, v in headers.items()}
            else:  # models
                if not isinstance(value, list):
                    raise c.expect(k, "an array of model objects", value)
                models = []
                for i, m in enumerate(value):
                    m = c.obj(f"{k}[{i}]", m)
                    if not isinstance(m.get("id"), str) or not m["id"].strip():
                        raise c.expect(f"{k}[{i}].id", "a non-empty string", m.get("id"))
                    models.append(c.sub(f"{k}[{i}]", m))
                entry[name] = models
        out[pid] = entry
    return out


def parse_config(data, path: str, env=None) -> FileSettings:
    """Check an already parsed file; raises ConfigFileError."""
    env = os.environ if env is None else env
    c = _Checker(path, env)
    if not isinstance(data, dict):
        raise ConfigFileError(f"config {path}: expected an object at the top, got {_kind(data)}")
    inc = _includes(data)
    if inc:
        raise c.fail(inc, "$include is not supported by krabfast (put the included keys in "
                          "this file)")
    settings = FileSettings(path=path)
    _unknown(data, KNOWN_KEYS, "", settings.ignored)
    v = settings.values

    gw = c.obj("gateway", data.get("gateway", {}))
    if "mode" in gw:
        mode = c.string("gateway.mode", gw["mode"])
        if mode != "local":
            raise c.fail("gateway.mode", f"{_show(mode)}: krabfast runs a gateway only with "
                                         "\"local\" (\"remote\" configures a client)")
    if "port" in gw:
        v["port"] = c.integer("gateway.port", gw["port"], 0, 65535)
    custom = c.string("gateway.customBindHost", gw["customBindHost"]) \
        if "customBindHost" in gw else None
    if "bind" in gw:
        mode = c.string("gateway.bind", gw["bind"])
        try:
            v["bind"] = resolve_bind(mode, custom)
        except ValueError as exc:
            raise ConfigFileError(f"config {path}: {exc}") from None
    settings.custom_bind_host = custom

    auth = c.obj("gateway.auth", gw.get("auth", {}))
    if "mode" in auth:
        mode = c.string("gateway.auth.mode", auth["mode"])
        if mode not in AUTH_MODES:
            more = " (trusted-proxy is not supported by krabfast)" \
                if mode == "trusted-proxy" else ""
            raise c.expect("gateway.auth.mode", "one of none, token, password" + more, mode)
        v["auth_mode"] = mode
    for name in ("token", "password"):
        if name in auth:
            v[name] = c.secret(f"gateway.auth.{name}", auth[name])
    if "token" in v and "password" in v and "auth_mode" not in v:
        settings.both_secrets = True
    if "rateLimit" in auth:
        rl = c.obj("gateway.auth.rateLimit", auth["rateLimit"])
        limit = RateLimitConfig()
        for name, attr in RATE_LIMIT_KEYS.items():
            if name in rl:
                k = f"gateway.auth.rateLimit.{name}"
                setattr(limit, attr, c.boolean(k, rl[name]) if attr == "exempt_loopback"
                        else c.integer(k, rl[name], 1 if attr == "max_attempts" else 0))
        v["rate_limit"] = limit

    if "trustedProxies" in gw:
        key = "gateway.trustedProxies"
        entries = sorted(c.names(key, gw["trustedProxies"]))
        try:
            from krabfast.gateway.proxies import parse_trusted

            parse_trusted(entries)
        except ValueError as exc:
            raise c.fail(key, str(exc)) from None
        v["trusted_proxies"] = tuple(entries)
    if "allowRealIpFallback" in gw:
        v["allow_real_ip_fallback"] = c.boolean("gateway.allowRealIpFallback",
                                                gw["allowRealIpFallback"])

    tls = c.obj("gateway.tls", gw.get("tls", {}))
    for name, attr in TLS_KEYS.items():
        if name in tls:
            k = f"gateway.tls.{name}"
            # Blank paths are refused, as the reference's schema does.
            v[attr] = c.boolean(k, tls[name]) if name in ("enabled", "autoGenerate") \
                else c.string(k, tls[name])

    nodes = c.obj("gateway.nodes", gw.get("nodes", {}))
    pairing = c.obj("gateway.nodes.pairing", nodes.get("pairing", {}))
    if "autoApproveLocal" in pairing:
        v["auto_approve_local"] = c.boolean("gateway.nodes.pairing.autoApproveLocal",
                                            pairing["autoApproveLocal"])
    commands = c.obj("gateway.nodes.commands", nodes.get("commands", {}))
    for name in ("allow", "deny"):
        if name in commands:
            v[f"node_commands_{name}"] = c.names(f"gateway.nodes.commands.{name}",
                                                 commands[name])

    ui = c.obj("gateway.controlUi", gw.get("controlUi", {}))
    if "enabled" in ui:
        v["control_ui_enabled"] = c.boolean("gateway.controlUi.enabled", ui["enabled"])
    if "basePath" in ui:
        v["control_ui_base_path"] = c.string("gateway.controlUi.basePath", ui["basePath"],
                                             empty=True).strip()
    if "root" in ui:
        # A relative root is taken from the current directory, as the reference's Node does.
        v["control_ui_root"] = c.string("gateway.controlUi.root", ui["root"]).strip()
    if "allowedOrigins" in ui:
        v["control_ui_allowed_origins"] = frozenset(
            o.lower().rstrip("/") for o in c.names("gateway.controlUi.allowedOrigins",
                                                   ui["allowedOrigins"]))

    models = c.obj("models", data.get("models", {}))
    if "providers" in models:
        v["models_config"] = {"providers": _providers(c, models["providers"])}

    agents = c.obj("agents", data.get("agents", {}))
    defaults = c.obj("agents.defaults", agents.get("defaults", {}))
    if "model" in defaults:
        model = defaults["model"]
        if isinstance(model, dict):
            if "primary" in model:
                v["primary_model"] = _model_ref(c, "agents.defaults.model.primary",
                                                model["primary"])
            settings.ignored.extend(f"agents.defaults.model.{k}" for k in model if k != "primary")
        elif isinstance(model, str):
            v["primary_model"] = _model_ref(c, "agents.defaults.model", model)
        else:
            raise c.expect("agents.defaults.model", "\"provider/model\" or {primary: ...}", model)
    settings.warnings = c.warnings
    return settings
