"""The compiled core and its pure-Python twin produce byte-identical output."""

from __future__ import annotations

import importlib

import pytest

import krabfast._core as core
from krabfast._core import _fanout_py, _wire_py

CORPUS_EVENTS = [("tick", b'{"ts":1}', None), ("presence", b'{"presence":[]}', (3, 4)),
                 ("health", None, (0, 0)), ("\u00e9v\u00e8nement \"q\"", b"[]", None)]
IDS = ["1", "req-\u00fc", 'a"b\\c', "x" * 300]


def _impls():
    mods = [(_wire_py, _fanout_py)]
    if not core.NO_EXTENSIONS:
        try:
            mods.append((importlib.import_module("krabfast._core.wire"),
                         importlib.import_module("krabfast._core.fanout")))
        except ImportError:
            pytest.fail("compiled core is not built (pip install . builds it)")
    return mods


def test_selected_core_matches_environment():
    assert core.COMPILED is (not core.NO_EXTENSIONS)


@pytest.mark.parametrize("req_id", IDS)
def test_responses_identical(req_id):
    outs = {(w.response_ok(req_id, b'{"a":1}'), w.response_error(req_id, b'{"code":"X","message":"m"}'))
            for w, _ in _impls()}
    assert len(outs) == 1


@pytest.mark.parametrize("event,payload,sv", CORPUS_EVENTS)
def test_events_identical(event, payload, sv):
    outs = set()
    for w, _ in _impls():
        outs.add((w.splice_seq(w.event_prefix(event, payload), 7, w.event_suffix(sv)),
                  w.event_unsequenced(event, payload)))
    assert len(outs) == 1


def test_fanout_identical():
    results = []
    class Sink:
        def __init__(self, out):
            self.send = out.append

        def buffered(self):
            return 0

    for w, f in _impls():
        out = []
        subs = [f.Subscriber(Sink(out), None, m) for m in (0, 1, 2, 3)]
        f.fanout(w.event_prefix("tick", b'{"ts":5}'), w.event_suffix((1, 2)), subs, 2, False, 10, 10)
        f.fanout(w.event_prefix("tick", b'{"ts":6}'), w.event_suffix(None), subs, 0, True, 10, 10)
        results.append((out, [s.seq for s in subs]))
    assert all(r == results[0] for r in results)
