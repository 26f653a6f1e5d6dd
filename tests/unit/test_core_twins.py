"""One source per core module: the compiled modules and the same `.py` sources run
uncompiled (`krabfast._core.load_sources()`) produce byte-identical output."""

from __future__ import annotations

import importlib.machinery

import msgspec
import pytest

import krabfast._core as core

NAMES = core.MODULES
SOURCES = core.load_sources()

CORPUS_EVENTS = [("tick", b'{"ts":1}', None), ("presence", b'{"presence":[]}', (3, 4)),
                 ("health", None, (0, 0)), ("\u00e9v\u00e8nement \"q\"", b"[]", None)]
IDS = ["1", "req-\u00fc", 'a"b\\c', "x" * 300, "tab\there", "del\x7f", "", "\U0001f980"]


def _impls():
    mods = [(SOURCES.wire, SOURCES.fanout)]
    if not core.NO_EXTENSIONS:
        if not core.COMPILED:
            pytest.fail("compiled core is not built (pip install . builds it)")
        mods.append((core.wire, core.fanout))
    return mods


def test_selected_core_matches_environment():
    assert core.COMPILED is (not core.NO_EXTENSIONS)
    compiled = [isinstance(getattr(core, n).__spec__.loader,
                           importlib.machinery.ExtensionFileLoader) for n in NAMES]
    assert compiled == [core.COMPILED] * len(NAMES)
    for name in NAMES:
        mod = getattr(core, name)
        assert mod.__name__ == f"krabfast._core.{name}"
        assert mod.__file__.endswith(".py") is not core.COMPILED, mod.__file__
        # One source: the uncompiled copy runs the very file the extension is built from.
        assert getattr(SOURCES, name).__file__.endswith(f"krabfast/_core/{name}.py")


def test_sources_are_a_separate_uncompiled_set():
    for name in NAMES:
        assert getattr(SOURCES, name).__file__.endswith(".py")
    assert SOURCES.fanout.WireSink is SOURCES.sink.WireSink
    assert SOURCES.dispatch.decode_frame is SOURCES.wire.decode_frame
    if core.COMPILED:
        assert SOURCES.sink.WireSink is not core.sink.WireSink


def test_same_public_api():
    """Every function and class a source defines is there, compiled (cimported names and
    module variables declared in the .pxd are C-level there, not module attributes)."""
    for name in NAMES:
        src = getattr(SOURCES, name)
        defined = {n for n, v in vars(src).items() if not n.startswith("_")
                   and getattr(v, "__module__", None) == src.__name__}
        assert defined and defined <= set(dir(getattr(core, name))), name
    # `access` compares with these as literals (C ints compiled): they must not move.
    d = core.dispatch
    assert (d.KIND_OPEN, d.KIND_NODE, d.KIND_OPERATOR) == (0, 1, 2)
    assert (d.ALLOWED, d.WRONG_ROLE, d.MISSING_SCOPE) == (0, 1, 2)


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


class _Raw:
    def __init__(self):
        self.writes = []

    def write(self, data):
        self.writes.append(bytes(data))

    def get_write_buffer_size(self):
        return 0


class _Transport:
    def __init__(self):
        self.underlying_transport = _Raw()


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("size", [0, 80, 125 - 40, 126, 65535 - 40, 65536, 70000])
@pytest.mark.parametrize("req_id", IDS)
def test_assembled_responses_are_the_frames_of_response_ok(size, req_id, raw):
    """send_response assembles in place exactly the frame send(response_ok(...)) writes,
    in a batch and alone, on both cores (header lengths around 125/126 and 65535/65536;
    ids that are and are not plain JSON strings; a bytes or a msgspec.Raw body)."""
    body = b'"' + b"x" * size + b'"'
    given = msgspec.Raw(body) if raw else body
    sink_mods = [SOURCES.sink] + ([core.sink] if core.COMPILED else [])
    outs = set()
    for wire_mod, sink_mod in zip([SOURCES.wire] + ([core.wire] if core.COMPILED else []),
                                  sink_mods):
        for ok, build in ((True, wire_mod.response_ok), (False, wire_mod.response_error)):
            expected = sink_mod.frame_text(build(req_id, body))
            alone = sink_mod.WireSink(_Transport())
            alone.send_response(req_id, ok, given)
            batched = sink_mod.WireSink(_Transport())
            batched.begin()
            batched.send(b"{}")
            batched.send_response(req_id, ok, given)
            batched.flush()
            assert alone.raw.writes == [expected]
            assert batched.raw.writes == [sink_mod.frame_text(b"{}") + expected]
            outs.add(expected)
    assert len(outs) == 2  # ok and error, identical across cores


def test_batched_frames_are_the_frames_of_frame_text():
    """A batch is the frames of its sends back to back (header sizes 2, 4 and 10 bytes),
    the same bytes on both cores."""
    sizes = [0, 1, 125, 126, 65535, 65536, 70000]
    outs = set()
    for sink_mod in [SOURCES.sink] + ([core.sink] if core.COMPILED else []):
        sink = sink_mod.WireSink(_Transport())
        sink.begin()
        for n in sizes:
            sink.send(b"y" * n)
        sink.flush()
        assert sink.raw.writes == [b"".join(sink_mod.frame_text(b"y" * n) for n in sizes)]
        outs.add(sink.raw.writes[0])
    assert len(outs) == 1
