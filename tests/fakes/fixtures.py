"""Pytest fixtures for the fake providers: a fresh server per test, stopped afterwards.
Use with `from tests.fakes.fixtures import fake_openai  # noqa: F401`."""

from __future__ import annotations

import pytest

from tests.fakes import start_fake_anthropic, start_fake_ollama, start_fake_openai


@pytest.fixture
def fake_openai():
    server = start_fake_openai()
    yield server
    server.stop()


@pytest.fixture
def fake_anthropic():
    server = start_fake_anthropic()
    yield server
    server.stop()


@pytest.fixture
def fake_ollama():
    server = start_fake_ollama()
    yield server
    server.stop()
