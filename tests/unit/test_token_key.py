"""The device-token HMAC key file: atomic creation, never an empty or short key."""

from __future__ import annotations

import os
import stat

import pytest

from krabfast.store.devices import KEY_BYTES, _load_or_create_key


def test_created_atomically_with_mode_0600(tmp_path):
    path = tmp_path / "device-token.key"
    key = _load_or_create_key(path)
    assert len(key) == KEY_BYTES and path.read_bytes() == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["device-token.key"]  # no temp file left
    assert _load_or_create_key(path) == key  # stable across restarts


@pytest.mark.parametrize("content", [b"", b"short"], ids=["empty", "short"])
def test_empty_or_short_key_is_never_used(tmp_path, content, caplog):
    # What a crash between creating and writing the file left behind (older versions).
    path = tmp_path / "device-token.key"
    path.write_bytes(content)
    key = _load_or_create_key(path)
    assert len(key) == KEY_BYTES and key != content
    assert path.read_bytes() == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "not a usable key" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["device-token.key"]
