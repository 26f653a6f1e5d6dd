"""The listener's UTF-8 check, compiled and uncompiled, agrees with Python's strict decoder."""

from __future__ import annotations

import random

import pytest

import krabfast._core as core
from krabfast._core import listener

SOURCE = core.load_sources().listener


def _reference(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


CASES = [b"", b"plain ascii json {}", "héllo wörld €𝄞".encode(), b"\xff", b"\xc0\x80",
         b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf0\x9f\x98", b"abc\x80",
         b"12345678\xc3", b"1234567\xc3\xa9", "€".encode() * 100 + b"\xe2\x82"]


@pytest.mark.parametrize("impl", [listener, SOURCE], ids=["loaded", "source"])
def test_valid_utf8_matches_python(impl):
    for data in CASES:
        assert impl.valid_utf8(data) == _reference(data), data
    rng = random.Random(7)
    alphabet = [b"a", b"\x00", b"\x7f", b"\x80", b"\xbf", b"\xc2", b"\xdf", b"\xe0", b"\xed",
                b"\xef", b"\xf0", b"\xf4", b"\xf5", b"\xff", "é".encode(), "€".encode(),
                "𝄞".encode(), b"\xa0", b"\x9f", b"\x90", b"\x8f"]
    for _ in range(20000):
        data = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        assert impl.valid_utf8(data) == _reference(data), data
