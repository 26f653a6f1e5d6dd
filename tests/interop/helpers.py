"""Helpers for the interop tests (Node 24 subprocesses, JSON-lines output)."""

from __future__ import annotations

import json
import subprocess

TOKEN = "interop-token"


def _both_gateways():
    import pytest

    # One test, two gateways: the reference's run (slow: it starts in ~30 s) first, then
    # krabfast's, compared with it.
    return pytest.mark.parametrize("target", [pytest.param("reference", marks=pytest.mark.slow),
                                              "krabfast"])


BOTH_GATEWAYS = _both_gateways()


def run_node(reference, args: list[str], *, cwd, home, timeout: float = 60.0,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the Node 24 binary with `args` (HOME set to `home`), capturing text output."""
    run_env = reference.env(HOME=str(home), NO_COLOR="1", FORCE_COLOR="0", CI="true",
                            **(env or {}))
    return subprocess.run([str(reference.node), *args], cwd=cwd, env=run_env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def reference_gateway(reference, tmp, config: dict):
    """Run the reference gateway with `config` as its openclaw.json (a generator for a
    fixture: yields the started ReferenceGateway, stops it after). ReferenceGateway runs
    with HOME=tmp/refgw-home, and the reference reads ~/.openclaw/openclaw.json."""
    from tests.integration.helpers import run
    from tests.interop.test_nodes_interop import ReferenceGateway

    path = tmp / "refgw-home" / ".openclaw" / "openclaw.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(config, indent=1))
    gw = ReferenceGateway(reference, tmp)
    try:
        run(gw.wait_ready(), timeout=70)
        yield gw
    finally:
        gw.stop()


def krabfast_gateway(gateway_server_module, tmp, config: dict):
    """A krabfast gateway (token auth) started with `config` as its openclaw.json."""
    from tests.integration.helpers import TOKEN as GATEWAY_TOKEN

    path = tmp / "openclaw.json"
    path.write_text(json.dumps(config, indent=1))
    return gateway_server_module("--token", GATEWAY_TOKEN, "--config", str(path))


def one_model_config(fake, model: dict | None = None) -> dict:
    """openclaw.json with one openai-completions provider "fake" (the fake at `fake`) and one
    model, its primary: "fake/m" with a 64k context window unless `model` says otherwise."""
    model = model or {"id": "m", "name": "M", "contextWindow": 64000}
    return {"models": {"providers": {"fake": {
        "baseUrl": fake.base_url, "apiKey": "fake-local-key", "api": "openai-completions",
        "models": [model]}}},
        "agents": {"defaults": {"model": {"primary": f"fake/{model['id']}"}}}}


def gateway_fixtures(name: str, config, **fake):
    """Module-scoped fixtures `<name>_fake` (a fake OpenAI-compatible provider, `fake` its
    behaviour), `ref_<name>_gateway` and `krabfast_<name>_gateway` (each configured with
    `config(fake)`), for a probe run against both gateways. Assign them in the test module:
    `a, b, c = gateway_fixtures(...)`."""
    import pytest

    def fake_server():
        from tests.fakes import start_fake_openai

        server = start_fake_openai(**fake)
        yield server
        server.stop()

    def ref_gateway(reference, request, tmp_path_factory):
        server = request.getfixturevalue(f"{name}_fake")
        yield from reference_gateway(reference, tmp_path_factory.mktemp(f"ref{name}"),
                                     config(server))

    def krabfast(gateway_server_module, request, tmp_path_factory):
        server = request.getfixturevalue(f"{name}_fake")
        return krabfast_gateway(gateway_server_module, tmp_path_factory.mktemp(f"kf{name}"),
                                config(server))

    return (pytest.fixture(scope="module", name=f"{name}_fake")(fake_server),
            pytest.fixture(scope="module", name=f"ref_{name}_gateway")(ref_gateway),
            pytest.fixture(scope="module", name=f"krabfast_{name}_gateway")(krabfast))


_PROBES: dict[tuple[str, str], dict] = {}


def probe_both(request, name: str, target: str, probe, *args) -> tuple[dict, dict | None]:
    """Run `probe(url, *args)` on `target`'s gateway (the fixtures of
    `gateway_fixtures(name, ...)`): (its answers, the reference's to compare them with, when
    this is krabfast's run and the reference's came first)."""
    from tests.integration.helpers import run

    side = "ref" if target == "reference" else "krabfast"
    gw = request.getfixturevalue(f"{side}_{name}_gateway")
    got = _PROBES[name, target] = run(probe(gw.url, *args), timeout=300)
    return got, (_PROBES.get((name, "reference")) if target == "krabfast" else None)


def assert_same_answers(reference: dict, got: dict) -> None:
    """Every case of the reference's probe answered the same by krabfast."""
    diff = {case: {"reference": reference[case], "krabfast": got.get(case)}
            for case in reference if reference[case] != got.get(case)}
    assert not diff, json.dumps(diff, indent=1, ensure_ascii=False)


def text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if part.get("type") == "text")


def session_turns(url: str, session_key: str) -> list[tuple[str, str]]:
    """(role, text) of each user and assistant message of `session_key`'s history."""
    from tests.integration.helpers import run
    from tests.integration.node_helpers import admin_ws

    async def history():
        ws = await admin_ws(url, scopes=["operator.read"])
        try:
            return await ws.call("chat.history", {"sessionKey": session_key}, timeout=30)
        finally:
            await ws.close()

    res = run(history(), timeout=60)
    assert res["ok"], res
    return [(m["role"], m["content"] if m["role"] == "user" else text_of(m))
            for m in res["payload"]["messages"] if m["role"] in ("user", "assistant")]
