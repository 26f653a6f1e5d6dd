"""Fake model provider servers for tests and benchmarks (tests/fakes/_server.py has the
shared HTTP/1.1 server and the `Behaviour` modes).

    from tests.fakes import start_fake_openai
    server = start_fake_openai(text="hello", chunks=3, delay=0.01)
    ... server.base_url, server.requests, server.set_behaviour(mode="status", status=401)
    server.stop()

Pytest fixtures in tests/fakes/fixtures.py (import them into a test module): `fake_openai`,
`fake_anthropic`, `fake_ollama` (a fresh server per test, stopped afterwards). This package
does not import pytest.
"""

from __future__ import annotations

from tests.fakes._server import MODES, Behaviour, FakeServer, RecordedRequest, StreamRecord

__all__ = [
    "MODES", "Behaviour", "FakeServer", "RecordedRequest", "StreamRecord",
    "start_fake_openai", "start_fake_anthropic", "start_fake_ollama",
]

_STARTERS = {
    "start_fake_openai": "tests.fakes.openai_server",
    "start_fake_anthropic": "tests.fakes.anthropic_server",
    "start_fake_ollama": "tests.fakes.ollama_server",
}


def __getattr__(name: str):
    # Lazy, so `python -m tests.fakes.openai_server` does not import itself twice.
    if name in _STARTERS:
        import importlib

        return getattr(importlib.import_module(_STARTERS[name]), name)
    raise AttributeError(name)
