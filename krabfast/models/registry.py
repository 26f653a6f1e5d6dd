"""The model catalog: configured providers/models, the default model, and backends.

Built from the reference's config shape (`models.providers.<id>` and
`agents.defaults.model.primary`). Backends are created on first use, one per provider.

Plugins: a distribution can add an api with an entry point in the group
`krabfast.model_backends`; its name is the api name (as used in
`models.providers.<id>.api`) and it names a factory
`factory(provider_id: str, provider_config: dict) -> Backend`. Built-in api names win.
Example (pyproject.toml):

    [project.entry-points."krabfast.model_backends"]
    my-api = "my_package.backend:make_backend"
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable
from urllib.parse import urlsplit

from krabfast.models import offline
from krabfast.models.base import Backend, ProviderError
from krabfast.models.thinking import ThinkingProfile, thinking_profile
from krabfast.models.usage import parse_cost

ENTRY_POINT_GROUP = "krabfast.model_backends"
BUILTIN_APIS: dict[str, str] = {
    "openai-completions": "krabfast.models.openai:OpenAIBackend",
    "anthropic-messages": "krabfast.models.anthropic:AnthropicBackend",
    "ollama": "krabfast.models.ollama:OllamaBackend",
}
DEFAULT_MAX_TOKENS = 8192
OFFLINE_CONTEXT_WINDOW = 8192
OFFLINE_MAX_TOKENS = 1024
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "[::1]"}
_DEFAULT_APIS = {"anthropic": "anthropic-messages", "ollama": "ollama"}
_DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1"}

BackendFactory = Callable[[str, dict], Backend]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model. `id` is "provider/model"; `model_id` the provider's own id."""

    id: str
    provider: str
    name: str
    context_window: int | None = None  # as configured (shown only then)
    max_tokens: int = DEFAULT_MAX_TOKENS
    input: list[str] = field(default_factory=lambda: ["text"])
    local: bool = False
    available: bool = True
    tags: list[str] = field(default_factory=list)
    model_id: str = ""
    api: str = ""
    # The config's `reasoning`: a model that does not say so does not reason (thinking
    # level "off" only), as on the reference.
    reasoning: bool = False
    # The config's `cost` (USD per million tokens, models/usage.py), None when not given.
    cost: dict[str, float] | None = None

    @property
    def own_id(self) -> str:
        """The provider's id of the model (no "provider/" prefix)."""
        return self.model_id or self.id.partition("/")[2] or self.id

    @property
    def ref(self) -> str:
        """The model as "provider/model", the reference's name for it in its messages."""
        return f"{self.provider}/{self.own_id}"

    @property
    def answered_by(self) -> dict[str, str]:
        """What a transcript message it wrote says answered it: api, provider, model."""
        return {k: v for k, v in (("api", self.api), ("provider", self.provider),
                                  ("model", self.own_id)) if v}

    @property
    def thinking(self) -> ThinkingProfile:
        """The thinking levels the model offers, and its default."""
        return thinking_profile(self.provider, self.reasoning)

    def as_dict(self, *, details: bool = False) -> dict[str, Any]:
        """The model's `models.list` row, as the reference shows it: its own id (no
        provider prefix), the context window only when configured, what thinking levels
        it offers; `details` (includeDetails) adds `local` and `input`."""
        row: dict[str, Any] = {"id": self.own_id,
                               "name": self.name, "provider": self.provider}
        if self.context_window is not None:
            row["contextWindow"] = self.context_window
        if details:
            row["local"] = self.local
            row["input"] = list(self.input)
        row["reasoning"] = self.reasoning
        if "default" in self.tags:  # the reference tags only the default model
            row["tags"] = ["default"]
        thinking = self.thinking.wire_fields()  # (models.list rows have no thinkingOptions)
        row["thinkingLevels"] = thinking["thinkingLevels"]
        row["thinkingDefault"] = thinking["thinkingDefault"]
        row["available"] = self.available
        return row


OFFLINE_MODEL = ModelInfo(
    id=offline.MODEL_REF,
    provider=offline.PROVIDER_ID,
    name=offline.MODEL_NAME,
    context_window=OFFLINE_CONTEXT_WINDOW,
    max_tokens=OFFLINE_MAX_TOKENS,
    input=["text"],
    local=True,
    available=True,
    tags=["offline"],
    model_id=offline.MODEL_ID,
    api=offline.API,
)


def plugin_entry_points() -> dict[str, Any]:
    """Entry points of the `krabfast.model_backends` group, by name."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_builtin(api: str) -> BackendFactory:
    module, _, attr = BUILTIN_APIS[api].partition(":")
    return getattr(importlib.import_module(module), attr)


def _positive_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or value != int(value):
        raise ValueError(f"{path}: expected a positive integer, got {value!r}")
    return int(value)


def _is_local(api: str, base_url: str | None) -> bool:
    if api == "ollama" and not base_url:
        return True
    host = (urlsplit(base_url).hostname or "") if base_url else ""
    return host in _LOOPBACK or host.startswith("127.") or host.endswith(".local")


@dataclass(slots=True)
class _Provider:
    id: str
    api: str
    config: dict[str, Any]
    models: list[ModelInfo]
    local: bool


def _secret(value: Any, path: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("source") == "env" and isinstance(value.get("id"), str):
        return "${" + value["id"] + "}"
    raise ValueError(f"{path}: expected a string or {{source: \"env\", id}}")


def _parse_provider(pid: str, raw: Any, plugins: Callable[[], dict[str, Any]]) -> _Provider:
    path = f"models.providers.{pid}"
    if not pid or "/" in pid:
        raise ValueError(f"{path}: a provider id must be non-empty and have no '/'")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected an object")
    cfg = dict(raw)
    base = cfg.get("baseUrl", cfg.get("baseURL"))
    if base is not None:
        if not isinstance(base, str) or urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc:
            raise ValueError(f"{path}.baseUrl: expected an http(s) URL, got {base!r}")
        cfg["baseUrl"] = base
    api = cfg.get("api")
    if api is None:
        api = "openai-completions" if base else _DEFAULT_APIS.get(pid, "openai-completions")
    if not isinstance(api, str) or (api not in BUILTIN_APIS and api not in plugins()):
        names = ", ".join([*BUILTIN_APIS, *sorted(set(plugins()) - set(BUILTIN_APIS))])
        raise ValueError(f'{path}.api: unknown api "{api}" (use {names})')
    cfg["api"] = api
    if not base and api == "openai-completions":
        if pid not in _DEFAULT_BASE_URLS:
            raise ValueError(f"{path}.baseUrl: required for api openai-completions")
        cfg["baseUrl"] = _DEFAULT_BASE_URLS[pid]
    cfg["apiKey"] = _secret(cfg.get("apiKey"), f"{path}.apiKey")
    headers = cfg.get("headers")
    if headers is not None:
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
            for k, v in headers.items()
        ):
            raise ValueError(f"{path}.headers: expected an object of header name -> string")
        cfg["headers"] = {k: str(v) for k, v in headers.items()}
    timeout = cfg.get("timeoutSeconds")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ValueError(f"{path}.timeoutSeconds: expected a positive number, got {timeout!r}")
    local = _is_local(api, cfg.get("baseUrl"))
    entries = cfg.get("models", [])
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise ValueError(f"{path}.models: expected a list")
    models: list[ModelInfo] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        mpath = f"{path}.models[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{mpath}: expected an object")
        mid = entry.get("id")
        if not isinstance(mid, str) or not mid.strip():
            raise ValueError(f"{mpath}.id: required (the provider's model id)")
        if mid in seen:
            raise ValueError(f'{mpath}.id: duplicate model id "{mid}"')
        seen.add(mid)
        name = entry.get("name", mid)
        if not isinstance(name, str):
            raise ValueError(f"{mpath}.name: expected a string")
        ctx = entry.get("contextWindow")
        mx = entry.get("maxTokens")
        inp = entry.get("input", ["text"])
        if not isinstance(inp, list) or not all(isinstance(x, str) for x in inp):
            raise ValueError(f"{mpath}.input: expected a list of strings (e.g. [\"text\"])")
        cost = parse_cost(entry.get("cost"), f"{mpath}.cost")
        reasoning = entry.get("reasoning", False)
        if not isinstance(reasoning, bool):
            raise ValueError(f"{mpath}.reasoning: expected true or false")
        models.append(
            ModelInfo(
                id=f"{pid}/{mid}",
                provider=pid,
                name=name or mid,
                context_window=None if ctx is None else _positive_int(ctx, f"{mpath}.contextWindow"),
                max_tokens=DEFAULT_MAX_TOKENS if mx is None else _positive_int(mx, f"{mpath}.maxTokens"),
                input=list(inp),
                local=local,
                tags=["configured"],
                model_id=mid,
                api=api,
                reasoning=reasoning,
                cost=cost,
            )
        )
    return _Provider(pid, api, cfg, models, local)


class ModelCatalog:
    """Configured models and their backends (see module docstring)."""

    def __init__(
        self,
        providers: dict[str, _Provider],
        primary: str | None = None,
        *,
        offline_delay: float = offline.DEFAULT_DELAY,
        plugins: dict[str, Any] | None = None,
    ) -> None:
        self._providers = providers
        self._plugins = plugins
        self._backends: dict[str, Backend] = {}
        self._offline_delay = offline_delay
        self.warnings: list[str] = []
        """Config problems that did not stop loading (e.g. a primary model that is gone)."""
        models = [m for p in providers.values() for m in p.models]
        default: ModelInfo | None = None
        if primary:
            try:
                default = self._lookup(primary)
            except ProviderError as exc:
                self.warnings.append(f"agents.defaults.model.primary: {exc.message}")
        if default is None and models:
            default = models[0]
        if default is not None and default.provider in providers and default not in models:
            models.append(default)  # a primary on a provider without a model list
        self._models = models
        self._default = self._tag_default(default or OFFLINE_MODEL)
        self._models = [self._default if m.id == self._default.id else m for m in models]

    @classmethod
    def from_config(
        cls,
        models: dict | None,
        primary: str | None = None,
        *,
        offline_delay: float = offline.DEFAULT_DELAY,
    ) -> "ModelCatalog":
        """`models`: the config's `models` object; `primary`: `agents.defaults.model.primary`.
        Raises ValueError naming the key path of an invalid entry."""
        if models is None:
            models = {}
        if not isinstance(models, dict):
            raise ValueError("models: expected an object")
        raw = models.get("providers")
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ValueError("models.providers: expected an object")
        if primary is not None and (not isinstance(primary, str) or not primary.strip()):
            raise ValueError('agents.defaults.model.primary: expected "provider/model"')
        cache: dict[str, dict[str, Any]] = {}

        def plugins() -> dict[str, Any]:
            if "eps" not in cache:
                cache["eps"] = plugin_entry_points()
            return cache["eps"]

        providers = {pid: _parse_provider(pid, cfg, plugins) for pid, cfg in raw.items()}
        return cls(providers, primary, offline_delay=offline_delay, plugins=cache.get("eps"))

    @staticmethod
    def _tag_default(info: ModelInfo) -> ModelInfo:
        return info if "default" in info.tags else replace(info, tags=[*info.tags, "default"])

    @property
    def default(self) -> ModelInfo:
        return self._default

    @property
    def configured(self) -> bool:
        """False when only the offline model exists."""
        return bool(self._models)

    def list(self) -> list[ModelInfo]:
        """Configured models, or just the offline model when nothing is configured."""
        return list(self._models) if self._models else [self._default]

    def _lookup(self, ref: str) -> ModelInfo:
        ref = ref.strip()
        pid, sep, mid = ref.partition("/")
        if sep:
            provider = self._providers.get(pid)
            if provider is not None and mid:
                if not provider.models:
                    return ModelInfo(
                        id=ref, provider=pid, name=mid, local=provider.local,
                        tags=["configured"], model_id=mid, api=provider.api,
                    )
                for m in provider.models:
                    if m.model_id == mid:
                        return m
            elif ref == offline.MODEL_REF:
                return OFFLINE_MODEL
        else:
            matches = [m for p in self._providers.values() for m in p.models if m.model_id == ref]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ProviderError(
                    f"Ambiguous model: {ref}. Use provider/model: " + ", ".join(m.id for m in matches),
                    kind="provider",
                )
            if ref == offline.MODEL_ID and offline.PROVIDER_ID not in self._providers:
                return OFFLINE_MODEL
        known = [m.id for p in self._providers.values() for m in p.models]
        hint = (
            f"Configured models: {', '.join(known)}." if known
            else f"No models are configured (models.providers); the built-in one is {offline.MODEL_REF}."
        )
        raise ProviderError(f"Unknown model: {ref}. {hint}", kind="provider")

    def info(self, ref: str | None = None) -> ModelInfo:
        """The model `ref` names (see resolve), without starting its backend."""
        return self._default if ref is None or not ref.strip() else self._lookup(ref)

    def resolve(self, ref: str | None = None) -> tuple[Backend, ModelInfo]:
        """The backend and model for `ref` ("provider/model", a unique model id, or None for
        the default). Raises ProviderError(kind="provider") for an unknown model."""
        info = self._default if ref is None or not ref.strip() else self._lookup(ref)
        if info.id == self._default.id:
            info = self._default
        return self._backend(info), info

    def _backend(self, info: ModelInfo) -> Backend:
        key = info.provider if info.provider in self._providers else offline.PROVIDER_ID
        backend = self._backends.get(key)
        if backend is not None:
            return backend
        provider = self._providers.get(info.provider)
        if provider is None:
            backend = offline.OfflineBackend(self._offline_delay)
        else:
            backend = self._make(provider)
        self._backends[key] = backend
        return backend

    def _make(self, provider: _Provider) -> Backend:
        if provider.api in BUILTIN_APIS:
            factory = _load_builtin(provider.api)
        else:
            eps = self._plugins if self._plugins is not None else plugin_entry_points()
            try:
                factory = eps[provider.api].load()
            except Exception as exc:
                raise ProviderError(
                    f'LLM request failed: model backend plugin "{provider.api}" did not load ({exc})',
                    kind="provider", provider=provider.id,
                ) from exc
        try:
            backend = factory(provider.id, dict(provider.config))
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(
                f'LLM request failed: backend "{provider.api}" for provider {provider.id} failed to start ({exc})',
                kind="provider", provider=provider.id,
            ) from exc
        if not getattr(backend, "api", None):
            try:
                backend.api = provider.api
            except AttributeError:
                pass
        return backend

    async def aclose(self) -> None:
        """Close every backend created so far."""
        backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            await backend.aclose()
