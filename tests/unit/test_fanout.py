"""Event fan-out without sockets: per-socket seq, skipping slow sockets, scope filtering,
and byte-for-byte equality of the compiled core with the same sources run uncompiled.

The uncompiled side (`wire.py`, `fanout.py`, `sink.py`, loaded with `core.load_sources()`) is
always tested; the compiled side (the loaded `krabfast._core` modules) is tested too, except
when KRABFAST_NO_EXTENSIONS=1. Hub-level tests use whichever core the environment selects.
"""

from __future__ import annotations

import json
import random
import struct
from types import SimpleNamespace

import pytest

import krabfast._core as core
from krabfast.connection import OPEN
from krabfast.gateway.config import GatewayConfig
from krabfast.protocol import methods as M
from krabfast.protocol.handshake import PresenceEntry
from krabfast.protocol.scopes import (ADMIN, APPROVALS, PAIRING, QUESTIONS, READ, SCOPE_BIT,
                                      TALK, TALK_SECRETS, WRITE, scope_mask)
from tests.unit.conftest import Harness

_SOURCES = core.load_sources()
PURE = SimpleNamespace(name="pure", wire=_SOURCES.wire, fanout=_SOURCES.fanout,
                       sink=_SOURCES.sink)


def _load_compiled():
    if core.NO_EXTENSIONS:
        return None
    if not core.COMPILED:  # pragma: no cover - a checkout without the build
        pytest.fail("compiled core is not built; build it or set KRABFAST_NO_EXTENSIONS=1")
    return SimpleNamespace(name="compiled", wire=core.wire, fanout=core.fanout, sink=core.sink)


COMPILED = _load_compiled()
needs_compiled = pytest.mark.skipif(COMPILED is None, reason="KRABFAST_NO_EXTENSIONS=1")


@pytest.fixture(params=["pure", "compiled"])
def impl(request):
    if request.param == "pure":
        return PURE
    if COMPILED is None:
        pytest.skip("KRABFAST_NO_EXTENSIONS=1: compiled core not tested")
    return COMPILED


def test_compiled_modules_are_really_compiled():
    for mod in (PURE.wire, PURE.fanout, PURE.sink):
        assert mod.__file__.endswith(".py")
    # The uncompiled fan-out recognizes the uncompiled sink, not the loaded core's.
    assert PURE.fanout.WireSink is PURE.sink.WireSink
    for mod in (core.wire, core.fanout, core.sink):
        assert mod.__file__.endswith(".py") is (COMPILED is None), mod.__file__


# -- fakes --------------------------------------------------------------------------------------

class FakeSock:
    """A sink (send, buffered) and its owner (slow_consumer) in one."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.queued = 0
        self.slow = 0
        self.on_slow = None

    def send(self, data: bytes) -> None:
        self.frames.append(data)

    def buffered(self) -> int:
        return self.queued

    def slow_consumer(self) -> None:
        self.slow += 1
        if self.on_slow is not None:
            self.on_slow()


class FakeRaw:
    """The asyncio/uvloop transport under a WireSink."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.size = 0

    def write(self, data) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.size


class FakeWS:
    """The picows transport a WireSink wraps."""

    def __init__(self) -> None:
        self.underlying_transport = FakeRaw()


class WireSock:
    """A real WireSink (of one core) over a fake transport, plus an owner."""

    def __init__(self, impl, subclass: bool) -> None:
        base = impl.sink.WireSink
        cls = type("SubSink", (base,), {"__slots__": ()}) if subclass else base
        self.sink = cls(FakeWS())
        self.raw = self.sink.raw
        self.slow = 0
        self.on_slow = None

    @property
    def queued(self) -> int:
        return self.raw.size

    @queued.setter
    def queued(self, n: int) -> None:
        self.raw.size = n

    @property
    def frames(self) -> list[bytes]:
        return [payload for w in self.raw.writes for payload in parse_frames(w)]

    def slow_consumer(self) -> None:
        self.slow += 1
        if self.on_slow is not None:
            self.on_slow()


# -- RFC 6455 -----------------------------------------------------------------------------------

def parse_frame(buf: bytes, pos: int = 0) -> tuple[bytes, int]:
    """Parse one server-to-client frame at `pos`, strictly: FIN, no RSV bits, text opcode, no
    mask, shortest length encoding. Returns (payload, end)."""
    assert len(buf) - pos >= 2, "truncated header"
    b0, b1 = buf[pos], buf[pos + 1]
    assert b0 & 0x80, "FIN not set"
    assert b0 & 0x70 == 0, "RSV bits set"
    assert b0 & 0x0F == 0x1, f"opcode {b0 & 0x0F}, not text"
    assert not b1 & 0x80, "server frames must not be masked"
    n = b1 & 0x7F
    pos += 2
    if n == 126:
        (n,) = struct.unpack_from(">H", buf, pos)
        pos += 2
        assert n >= 126, "16-bit length used for a short payload"
    elif n == 127:
        (n,) = struct.unpack_from(">Q", buf, pos)
        pos += 8
        assert n >= 65536, "64-bit length used for a payload that fits 16 bits"
        assert n < 1 << 63, "64-bit length with the top bit set"
    end = pos + n
    assert end <= len(buf), "truncated payload"
    return buf[pos:end], end


def parse_frames(buf: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(buf):
        payload, pos = parse_frame(buf, pos)
        out.append(payload)
    return out


def websockets_parse(data: bytes):
    """An independent parser (the `websockets` package), when installed."""
    try:
        from websockets.frames import Frame
        from websockets.streams import StreamReader
    except ImportError:
        return None
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("websockets parser wanted more data")


# -- per-socket seq under random scopes, drops and slow sockets ---------------------------------

MASKS = [0, SCOPE_BIT[READ], scope_mask([WRITE]), scope_mask([ADMIN]), SCOPE_BIT[PAIRING],
         SCOPE_BIT[TALK] | SCOPE_BIT[APPROVALS], scope_mask([READ, PAIRING])]
NEEDS = [0, SCOPE_BIT[READ], SCOPE_BIT[PAIRING], SCOPE_BIT[WRITE] | SCOPE_BIT[TALK]]


def _random_script(seed: int, n_subs: int = 24, n_events: int = 300) -> dict:
    rng = random.Random(seed)
    subs = [{"mask": rng.choice(MASKS), "kind": rng.choice(["fake", "wire", "wire-sub"])}
            for _ in range(n_subs)]
    events = []
    for i in range(n_events):
        drop_above = rng.choice([0, 1000, 5000])
        close_above = rng.choice([1000, 5000, 10**9])
        events.append({
            "event": rng.choice(["tick", "presence", "health", "\u00e9v\u00e9nement-\U0001F980"]),
            "payload": rng.choice([None, b"{}", b'{"n":%d}' % i,
                                   b'"' + b"z" * rng.choice([0, 130, 70000]) + b'"']),
            "sv": rng.choice([None, (i, i * 7), (2**40, 3)]),
            "need": rng.choice(NEEDS),
            "droppable": rng.random() < 0.5,
            "drop_above": drop_above,
            "close_above": close_above,
            # Per socket: under both limits, between them, over both.
            "queued": [rng.choice([0, 0, 0, 999, 1001, 4999, 5001, 10**9 + 1]) for _ in subs],
            "evict_slow": rng.random() < 0.5,
        })
    return {"subs": subs, "events": events}


def _run_script(impl, script: dict) -> dict:
    """Run a random fan-out script against one core; check every step against the model."""
    socks, subs = [], []
    for spec in script["subs"]:
        sock = FakeSock() if spec["kind"] == "fake" else WireSock(impl, spec["kind"] == "wire-sub")
        sink = sock if spec["kind"] == "fake" else sock.sink
        socks.append(sock)
        subs.append(impl.fanout.Subscriber(sink, sock, spec["mask"]))
    live = list(range(len(subs)))
    expected_frames: list[list[bytes]] = [[] for _ in subs]
    for ev in script["events"]:
        prefix = impl.wire.event_prefix(ev["event"], ev["payload"])
        suffix = impl.wire.event_suffix(ev["sv"])
        for i, q in enumerate(ev["queued"]):
            socks[i].queued = q
            # A closed socket's owner drops it from the live set, as the hub does.
            socks[i].on_slow = (lambda i=i: live.remove(i)) if ev["evict_slow"] else None
        targets = list(live)
        before = [subs[i].seq for i in range(len(subs))]
        slow_before = [s.slow for s in socks]
        delivered = impl.fanout.fanout(prefix, suffix, [subs[i] for i in targets], ev["need"],
                                       ev["droppable"], ev["drop_above"], ev["close_above"])
        want_delivered = 0
        for i in range(len(subs)):
            sub, q = subs[i], ev["queued"][i]
            if i not in targets or (ev["need"] and not sub.scope_mask & ev["need"]):
                outcome = "skip"
            elif ev["droppable"]:
                outcome = "skip" if q > ev["drop_above"] else "send"
            else:
                outcome = "slow" if q > ev["close_above"] else "send"
            if outcome == "send":
                want_delivered += 1
                assert sub.seq == before[i] + 1, (impl.name, i, outcome)
                expected_frames[i].append(prefix + b"%d" % sub.seq + suffix)
            else:
                assert sub.seq == before[i], f"{impl.name}: seq moved for a skipped socket {i}"
            assert socks[i].slow == slow_before[i] + (outcome == "slow"), (impl.name, i, outcome)
        assert delivered == want_delivered
    for i, sock in enumerate(socks):
        frames = sock.frames
        assert frames == expected_frames[i], f"{impl.name}: socket {i} frames differ from the model"
        seqs = [json.loads(f)["seq"] for f in frames]
        assert seqs == list(range(1, len(seqs) + 1)), (impl.name, i, seqs)
        assert subs[i].seq == len(seqs)
    return {"frames": [sock.frames for sock in socks], "raw": [
        sock.raw.writes if isinstance(sock, WireSock) else None for sock in socks],
        "slow": [sock.slow for sock in socks], "seq": [s.seq for s in subs]}


@pytest.mark.parametrize("seed", range(6))
def test_seq_strictly_plus_one_under_random_filters_drops_and_slow_sockets(impl, seed):
    result = _run_script(impl, _random_script(seed))
    # The scripts exercise every path: delivered, dropped, closed, filtered.
    assert any(result["seq"]) and any(result["slow"])
    assert any(seq < max(result["seq"]) for seq in result["seq"])


@needs_compiled
@pytest.mark.parametrize("seed", range(6))
def test_compiled_and_pure_fanout_identical_on_random_scripts(seed):
    script = _random_script(seed)
    assert _run_script(PURE, script) == _run_script(COMPILED, script)


def test_subscriber_big_seq_and_unicast_next_frame(impl):
    sock = FakeSock()
    sub = impl.fanout.Subscriber(sock, sock, 0)
    sub.seq = 2**62
    impl.fanout.fanout(b'{"seq":', b"}", [sub], 0, False, 0, 0)
    assert sock.frames == [b'{"seq":4611686018427387905}'] and sub.seq == 2**62 + 1
    assert sub.next_frame(b"[", b"]") == b"[4611686018427387906]"
    sub.seq = 2**63 - 2
    assert sub.next_frame(b"", b"") == b"9223372036854775807"


def test_fanout_returns_zero_for_no_subscribers_and_sends_nothing_when_all_skip(impl):
    assert impl.fanout.fanout(b"a", b"b", [], 0, False, 0, 0) == 0
    socks = [FakeSock() for _ in range(3)]
    for s in socks:
        s.queued = 10
    subs = [impl.fanout.Subscriber(s, s, 1) for s in socks]
    assert impl.fanout.fanout(b"a", b"b", subs, 1, True, 9, 10**6) == 0      # all dropped
    assert impl.fanout.fanout(b"a", b"b", subs, 2, False, 0, 0) == 0         # all filtered
    assert all(s.frames == [] and s.slow == 0 for s in socks)
    assert impl.fanout.fanout(b"a", b"b", subs, 0, False, 10**6, 10) == 3    # at the limit: sent
    assert impl.fanout.fanout(b"a", b"b", subs, 0, False, 10**6, 9) == 0     # over it: slow
    assert [s.slow for s in socks] == [1, 1, 1] and [s.seq for s in subs] == [1, 1, 1]


# -- through the hub ----------------------------------------------------------------------------

DROP, CLOSE = 1000, 5000
# The contract (as on the reference): only presence may be skipped for a slow socket, and it
# needs operator.read; the others go to every authenticated socket, or close it (1008).
EVENT_RULES = {"presence": (True, READ), "tick": (False, None), "health": (False, None),
               "shutdown": (False, None)}


def _hub_seqs(sink) -> list[int]:
    return [f["seq"] for f in sink.frames() if f["type"] == "event" and "seq" in f]


@pytest.mark.parametrize("seed", range(4))
def test_hub_broadcast_seq_gapless_per_socket_random(seed):
    rng = random.Random(seed)
    h = Harness(GatewayConfig(drop_if_slow_bytes=DROP, max_buffered_bytes=CLOSE))
    hub = h.hub
    socks = []  # (conn, sink)
    pending = [h.open() for _ in range(2)]  # still in the handshake: never get events

    def connect():
        if rng.random() < 0.2:
            # A UI client: no scopes, but a presence row (closing it broadcasts presence,
            # from inside the fan-out that closes it when it is a slow consumer).
            pair = h.connected(client_id="openclaw-macos", mode="ui",
                               instance_id=f"ui-{len(socks)}", scopes=[ADMIN])
        else:
            scopes = rng.choice([[], [READ], [WRITE], [ADMIN], [PAIRING], [READ, TALK]])
            pair = h.connected(instance_id=f"b-{len(socks)}", scopes=scopes)
        socks.append(pair)

    for _ in range(12):
        connect()
    skipped_checks = 0
    for step in range(250):
        h.clock.advance(rng.randint(1, 50))
        for conn, sink in socks:
            if sink.closed is None:
                sink.queued = rng.choice([0, 0, 0, DROP, DROP + 1, CLOSE, CLOSE + 1])
        before = {id(sink): conn.sub.seq for conn, sink in socks if conn.sub is not None}
        kind = rng.choice(["presence", "presence", "tick", "health", "connect", "disconnect"])
        if kind == "presence":
            hub.add_system_event(f"event:{step % 5}", PresenceEntry(text=f"e{step}", ts=h.clock.ms))
        elif kind == "tick":
            hub.tick()
        elif kind == "health":
            hub.broadcast("health", hub.health_snapshot(), with_state_version=True)
        elif kind == "connect":
            connect()
        else:
            open_ = [(c, s) for c, s in socks if s.closed is None]
            if open_:
                rng.choice(open_)[0].transport_closed()
        if kind in ("presence", "tick", "health"):
            droppable, scope = EVENT_RULES[kind]
            for conn, sink in socks:
                if id(sink) not in before:
                    continue
                frames = sink.frames()
                got = (bool(frames) and frames[-1]["type"] == "event"
                       and frames[-1]["seq"] > before[id(sink)])
                if sink.queued > (DROP if droppable else CLOSE):
                    # Over its limit: nothing for it from this broadcast, its seq untouched
                    # (nested presence broadcasts from closes during a tick are droppable too).
                    assert conn.sub.seq == before[id(sink)], (step, kind)
                    skipped_checks += 1
                elif conn.state == OPEN and (not scope or conn.scope_mask & SCOPE_BIT[scope]):
                    assert got, (step, kind, conn.scopes)
    closed_slow = 0
    for conn, sink in socks:
        seqs = _hub_seqs(sink)
        assert seqs == list(range(1, len(seqs) + 1)), (conn.scopes, seqs)
        if conn.sub is not None:
            assert conn.sub.seq == len(seqs)
        if sink.closed == (1008, "slow consumer"):
            closed_slow += 1
            assert not hub.bus.attached(conn.conn_id)
    assert closed_slow and skipped_checks
    for _conn, sink in pending:
        assert [f.get("event") for f in sink.frames()] == ["connect.challenge"]


def _broadcast(h: Harness, event: str) -> None:
    if event == "presence":
        h.hub.add_system_event("event:m", PresenceEntry(text="matrix", ts=h.clock.ms))
    elif event == "tick":
        h.hub.tick()
    elif event == "health":
        h.hub.broadcast("health", h.hub.health_snapshot(), with_state_version=True)
    else:
        h.hub.shutdown("bye")


def test_event_specs_match_the_contract():
    for name, (droppable, scope) in EVENT_RULES.items():
        assert (M.EVENTS[name].droppable, M.EVENTS[name].scope) == (droppable, scope), name


@pytest.mark.parametrize("event", ["presence", "tick", "health", "shutdown"])
def test_slow_socket_matrix(event):
    """Under both limits: delivered. Over --drop-if-slow-bytes only: presence skipped (seq
    kept), the rest delivered. Over --max-buffered-bytes: presence skipped, the rest close the
    socket with 1008 "slow consumer" instead of being sent."""
    h = Harness(GatewayConfig(drop_if_slow_bytes=DROP, max_buffered_bytes=CLOSE))
    levels = {"idle": 0, "at-drop": DROP, "over-drop": DROP + 1, "at-close": CLOSE,
              "over-close": CLOSE + 1}
    socks = {name: h.connected(instance_id=name, scopes=[READ]) for name in levels}
    h.hub.tick()  # seq 1 everywhere, so a skip shows as "seq stayed at 1"
    for name, (_conn, sink) in socks.items():
        sink.queued = levels[name]
    seqs = {name: conn.sub.seq for name, (conn, _) in socks.items()}
    sent = {name: len(sink.sent) for name, (_, sink) in socks.items()}
    _broadcast(h, event)
    droppable, _ = EVENT_RULES[event]
    for name, (conn, sink) in socks.items():
        queued = levels[name]
        over = queued > (DROP if droppable else CLOSE)
        if over:
            assert conn.sub.seq == seqs[name], (event, name)
            assert len(sink.sent) == sent[name], (event, name)
        else:
            assert conn.sub.seq == seqs[name] + 1, (event, name)
            assert len(sink.sent) == sent[name] + 1, (event, name)
            last = sink.frames()[-1]
            assert last["event"] == event and last["seq"] == seqs[name] + 1
        closes = not droppable and queued > CLOSE
        assert sink.closed == ((1008, "slow consumer") if closes else None), (event, name)
        assert h.hub.bus.attached(conn.conn_id) is not closes


# -- scope filtering matrix ---------------------------------------------------------------------

SCOPE_CASES = {
    "none": ([], False),
    "read": ([READ], True),
    "write": ([WRITE], True),       # write implies read
    "admin": ([ADMIN], True),       # admin implies everything
    "approvals": ([APPROVALS], False),
    "pairing": ([PAIRING], False),
    "questions": ([QUESTIONS], False),
    "talk": ([TALK], False),
    "talk.secrets": ([TALK_SECRETS], False),
    "read+pairing": ([READ, PAIRING], True),
    "talk+approvals": ([TALK, APPROVALS], False),
    "unknown-operator-scope": (["operator.bogus"], False),
}


@pytest.fixture
def scope_matrix():
    h = Harness()
    socks = {name: h.connected(instance_id=name, scopes=scopes)[1]
             for name, (scopes, _) in SCOPE_CASES.items()}
    # Not a scope-keeping client: asks for admin, is admitted with no scopes at all.
    socks["ui-asking-admin"] = h.connected(client_id="openclaw-macos", mode="ui",
                                           instance_id="ui", scopes=[ADMIN])[1]
    _, handshake = h.open()
    return h, socks, handshake


def _new_events(sink, mark: int) -> list[str]:
    return [json.loads(f)["event"] for f in sink.sent[mark:] if json.loads(f)["type"] == "event"]


@pytest.mark.parametrize("event", ["presence", "tick", "health", "shutdown"])
def test_scope_filtering_matrix(scope_matrix, event):
    h, socks, handshake = scope_matrix
    marks = {name: len(sink.sent) for name, sink in socks.items()}
    hs_mark = len(handshake.sent)
    _broadcast(h, event)
    got = {name: _new_events(sink, marks[name]) for name, sink in socks.items()}
    want = {name: [event] if event != "presence" or SCOPE_CASES.get(name, ([], False))[1] else []
            for name in socks}
    assert got == want
    assert handshake.sent[hs_mark:] == []
    assert [json.loads(f).get("event") for f in handshake.sent] == ["connect.challenge"]


# -- byte-for-byte equality of the two cores ----------------------------------------------------

EVENT_NAMES = ["tick", "presence", "health", "shutdown", "connect.challenge", "",
               "\u00e9v\u00e8nement", "\u4e8b\u4ef6", "krab \U0001F980", 'q"uote\\back/slash',
               "ctl\x00\x01\x1f\x7f", "\u2028\u2029", "x" * 300]
PAYLOADS = [None, b"{}", b"[]", b"null", b"0", b'"\xc3\xa9\xf0\x9f\xa6\x80"',
            b'{"presence":[]}', b'"' + b"a" * 200 + b'"', b'"' + b"b" * 65_000 + b'"',
            b'"' + b"c" * 70_000 + b'"', b'{"big":"' + b"d" * 1_000_000 + b'"}']
STATE_VERSIONS = [None, (0, 0), (1, 2), (2**31, 2**32), (2**53 + 1, 7), (2**63 - 1, 2**63 - 1)]
SEQS = [0, 1, 9, 10, 99, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1]
REQ_IDS = ["1", "", "req-\u00fc", 'a"b\\c', "\U0001F980", "x" * 300, "\x00"]


@needs_compiled
@pytest.mark.parametrize("event", EVENT_NAMES)
def test_event_encoders_identical(event):
    for payload in PAYLOADS:
        for w in (PURE.wire, COMPILED.wire):
            assert isinstance(w.event_prefix(event, payload), bytes)
        assert PURE.wire.event_prefix(event, payload) == COMPILED.wire.event_prefix(event, payload)
        assert (PURE.wire.event_unsequenced(event, payload)
                == COMPILED.wire.event_unsequenced(event, payload))
        prefix = PURE.wire.event_prefix(event, payload)
        for sv in STATE_VERSIONS:
            suffix = PURE.wire.event_suffix(sv)
            assert suffix == COMPILED.wire.event_suffix(sv)
            for seq in SEQS:
                frame = PURE.wire.splice_seq(prefix, seq, suffix)
                assert frame == COMPILED.wire.splice_seq(prefix, seq, suffix)
        # The spliced frame is the JSON it claims to be.
        if payload is not None and len(payload) < 1000:
            obj = json.loads(PURE.wire.splice_seq(prefix, 2**63 - 1,
                                                  PURE.wire.event_suffix((3, 4))))
            assert obj == {"type": "event", "event": event, "payload": json.loads(payload),
                           "seq": 2**63 - 1, "stateVersion": {"presence": 3, "health": 4}}
            assert list(obj) == ["type", "event", "payload", "seq", "stateVersion"]
    obj = json.loads(PURE.wire.splice_seq(PURE.wire.event_prefix(event, None), 5,
                                          PURE.wire.event_suffix(None)))
    assert obj == {"type": "event", "event": event, "seq": 5}


@needs_compiled
@pytest.mark.parametrize("req_id", REQ_IDS)
def test_response_encoders_identical(req_id):
    for body in (b"{}", b'{"ok":true}', b"null", b'"' + b"r" * 70_000 + b'"'):
        assert PURE.wire.response_ok(req_id, body) == COMPILED.wire.response_ok(req_id, body)
        assert PURE.wire.response_error(req_id, body) == COMPILED.wire.response_error(req_id, body)
    assert json.loads(PURE.wire.response_ok(req_id, b"{}"))["id"] == req_id


@needs_compiled
def test_fanout_frames_identical_for_the_corpus():
    for event in EVENT_NAMES:
        for payload in PAYLOADS:
            for sv in STATE_VERSIONS[:3] + STATE_VERSIONS[-1:]:
                outs = []
                for impl in (PURE, COMPILED):
                    prefix = impl.wire.event_prefix(event, payload)
                    suffix = impl.wire.event_suffix(sv)
                    sock = FakeSock()
                    wire = WireSock(impl, subclass=True)
                    subs = [impl.fanout.Subscriber(sock, sock, 1),
                            impl.fanout.Subscriber(wire.sink, wire, 1)]
                    subs[0].seq, subs[1].seq = 2**62, 41
                    impl.fanout.fanout(prefix, suffix, subs, 0, False, 0, 0)
                    impl.fanout.fanout(prefix, suffix, subs, 1, True, 0, 0)
                    outs.append((sock.frames, wire.raw.writes, subs[0].seq, subs[1].seq,
                                 subs[0].next_frame(prefix, suffix)))
                assert outs[0] == outs[1], (event, len(payload or b""), sv)


FRAME_LENGTHS = [0, 1, 125, 126, 127, 1000, 65_535, 65_536, 65_537, 200_000, 1 << 20]


@pytest.mark.parametrize("n", FRAME_LENGTHS)
def test_frame_text_is_a_valid_unmasked_text_frame(impl, n):
    payload = (b'abc\xc3\xa9{}"' * (n // 8 + 1))[:n]
    data = impl.sink.frame_text(payload)
    assert isinstance(data, bytes)
    parsed, end = parse_frame(data)
    assert parsed == payload and end == len(data)
    header = 2 if n < 126 else 4 if n < 65_536 else 10
    assert len(data) == header + n
    independent = websockets_parse(data)
    if independent is not None:
        assert independent.fin and independent.opcode.value == 1 and independent.data == payload
        assert not (independent.rsv1 or independent.rsv2 or independent.rsv3)


@needs_compiled
@pytest.mark.parametrize("n", FRAME_LENGTHS)
def test_frame_text_identical(n):
    payload = b"\xe2\x82\xac" * (n // 3) + b"z" * (n % 3)
    assert PURE.sink.frame_text(payload) == COMPILED.sink.frame_text(payload)


@needs_compiled
def test_wire_sink_batches_identical():
    sizes = [0, 5, 125, 126, 65_535, 65_536, 300_000]
    outs = []
    for impl in (PURE, COMPILED):
        sink = impl.sink.WireSink(FakeWS())
        sink.send(b"single")                      # written at once
        sink.begin()
        for n in sizes:
            sink.send(b"p" * n)                   # batched
        assert sink.raw.writes == [impl.sink.frame_text(b"single")]
        sink.flush()                              # one write for the whole batch
        sink.begin()
        sink.send(b"one")
        sink.flush()
        sink.begin()
        sink.flush()                              # empty batch: nothing written
        sink.begin()
        sink.send(b"last")
        sink.mark_closed()                        # flushes, then nothing more goes out
        sink.send(b"after close")
        outs.append(sink.raw.writes)
        assert len(sink.raw.writes) == 4
        assert parse_frames(sink.raw.writes[1]) == [b"p" * n for n in sizes]
        assert [parse_frames(w) for w in sink.raw.writes[2:]] == [[b"one"], [b"last"]]
    assert outs[0] == outs[1]


def test_wire_sink_buffered_drives_fanout(impl):
    """The compiled fan-out reads a WireSink's buffer size directly: same decisions as the
    pure one, including for a subclass that overrides buffered()."""
    plain = WireSock(impl, subclass=False)

    class Padded(impl.sink.WireSink):
        __slots__ = ()

        def buffered(self):
            return 10**6  # e.g. counting frames queued elsewhere

    padded_sink = Padded(FakeWS())
    padded_owner = FakeSock()
    subs = [impl.fanout.Subscriber(plain.sink, plain, 1),
            impl.fanout.Subscriber(padded_sink, padded_owner, 1)]
    plain.queued = 100
    assert impl.fanout.fanout(b"[", b"]", subs, 1, True, 1000, 5000) == 1
    assert parse_frames(b"".join(plain.raw.writes)) == [b"[1]"] and padded_sink.raw.writes == []
    plain.queued = 1001
    assert impl.fanout.fanout(b"[", b"]", subs, 0, True, 1000, 5000) == 0
    assert impl.fanout.fanout(b"[", b"]", subs, 0, False, 1000, 5000) == 1
    assert parse_frames(b"".join(plain.raw.writes)) == [b"[1]", b"[2]"]
    assert padded_owner.slow == 1 and subs[1].seq == 0 and plain.slow == 0


class OrderedRaw(FakeRaw):
    """A transport that also notes, in a shared log, which socket wrote when."""

    def __init__(self, name: str, log: list) -> None:
        super().__init__()
        self.name, self.log = name, log

    def write(self, data) -> None:
        super().write(data)
        self.log.append(self.name)


def _ordered_subs(impl, names, log):
    subs = []
    for name in names:
        ws = FakeWS()
        ws.underlying_transport = OrderedRaw(name, log)
        subs.append(impl.fanout.Subscriber(impl.sink.WireSink(ws), FakeSock(), 1))
    return subs


def test_fanout_serves_first_before_the_others_once(impl):
    log: list[str] = []
    subs = _ordered_subs(impl, ["w1", "w2", "sender", "w3"], log)
    assert impl.fanout.fanout(b"[", b"]", subs, 0, False, 1000, 5000, None, subs[2]) == 4
    assert log == ["sender", "w1", "w2", "w3"]
    assert [s.seq for s in subs] == [1, 1, 1, 1]
    # A `first` its scopes exclude is skipped like any other subscriber.
    subs[2].scope_mask = 2
    log.clear()
    assert impl.fanout.fanout(b"[", b"]", subs, 1, False, 1000, 5000, None, subs[2]) == 3
    assert log == ["w1", "w2", "w3"] and subs[2].seq == 1


def test_fanout_corked_batches_each_socket_until_flushed(impl):
    log: list[str] = []
    subs = _ordered_subs(impl, ["w1", "sender", "w2"], log)
    corked: list = []
    for body in (b"a", b"b"):
        impl.fanout.fanout(b"[" + body, b"]", subs, 0, True, 1000, 5000, None, subs[1], corked)
    assert log == []  # nothing written yet
    assert corked == [subs[1].sink, subs[0].sink, subs[2].sink]  # each once, sender first
    for sink in corked:
        sink.flush()
    assert log == ["sender", "w1", "w2"]  # one write per socket
    for sub in subs:
        assert parse_frames(sub.sink.raw.writes[0]) == [b"[a1]", b"[b2]"]
    # A sink already batching (its own read being processed) is left to its owner.
    subs[0].sink.begin()
    corked = []
    impl.fanout.fanout(b"[c", b"]", subs, 0, True, 1000, 5000, None, None, corked)
    assert subs[0].sink not in corked and len(corked) == 2


def test_bus_corked_one_write_per_socket_sender_first():
    from krabfast.gateway.bus import EventBus
    from krabfast._core import fanout as live_fanout, sink as live_sink

    log: list[str] = []
    bus = EventBus(1 << 20, 1 << 22)
    for name in ("w1", "w2", "sender"):
        ws = FakeWS()
        ws.underlying_transport = OrderedRaw(name, log)
        bus.attach(name, live_fanout.Subscriber(live_sink.WireSink(ws), FakeSock(),
                                                SCOPE_BIT[READ]))
    with bus.corked():
        bus.publish("chat", {"state": "delta"}, first="sender", droppable=True)
        with bus.corked():  # nested: the outer block writes
            bus.publish("agent", {"stream": "assistant"}, first="sender", droppable=True)
        assert log == []
    assert log == ["sender", "w1", "w2"]
    bus.publish("chat", {"state": "final"}, first="nobody")  # an unknown `first`: no one first
    assert log[3:] == ["w1", "w2", "sender"]


def _live_bus(names, log):
    from krabfast.gateway.bus import EventBus
    from krabfast._core import fanout as live_fanout, sink as live_sink

    bus = EventBus(1 << 20, 1 << 22)
    sinks = {}
    for name in names:
        ws = FakeWS()
        ws.underlying_transport = OrderedRaw(name, log)
        sinks[name] = live_sink.WireSink(ws)
        bus.attach(name, live_fanout.Subscriber(sinks[name], FakeSock(), SCOPE_BIT[READ]))
    return bus, sinks


def _events(sink) -> list[tuple[int, str]]:
    """(seq, payload state) of every frame a sink wrote, in wire order."""
    frames = [json.loads(f) for w in sink.raw.writes for f in parse_frames(w)]
    return [(f["seq"], f["payload"].get("state") or f["payload"].get("stream")) for f in frames]


def test_bus_run_events_reach_the_asker_at_once_and_the_watchers_next_turn():
    """In a loop, a run's events (published with `first`) are written to the asker at once;
    the other sockets' copies wait in one batch per socket until the loop's next turn, and
    whatever else is sent to such a socket meanwhile joins its batch, so each socket's
    frames keep their order."""
    import asyncio

    async def main():
        log: list[str] = []
        bus, sinks = _live_bus(("w1", "sender", "w2"), log)
        with bus.corked():
            bus.publish("chat", {"state": "delta"}, first="sender", droppable=True)
            bus.publish("agent", {"stream": "assistant"}, first="sender", droppable=True)
        assert log == ["sender"]  # the asker's pair, one write; the watchers wait
        assert sinks["w2"].buffered() > 0  # a waiting batch counts against the limits
        bus.publish("chat", {"state": "final"}, first="w1")  # w1 asked this other run
        assert log == ["sender", "w1"]  # w1's batch (its pair, then this final) goes now
        bus.publish("chat", {"state": "error"})  # no asker: no deferral of its own
        assert log == ["sender", "w1", "w1"]  # w1's batch was gone: written at once
        await asyncio.sleep(0)
        assert log == ["sender", "w1", "w1", "w2", "sender"]
        expected = [(1, "delta"), (2, "assistant"), (3, "final"), (4, "error")]
        for name in ("w1", "sender", "w2"):
            assert _events(sinks[name]) == expected, name
        assert [len(s.raw.writes) for s in sinks.values()] == [2, 2, 1]
        await asyncio.sleep(0)
        assert len(log) == 5  # nothing left over

    asyncio.run(main())


def test_bus_deferred_batch_keeps_a_response_behind_the_events_before_it():
    """A watcher whose request is answered while its events wait gets them first."""
    import asyncio

    async def main():
        log: list[str] = []
        bus, sinks = _live_bus(("w1", "sender"), log)
        bus.publish("chat", {"state": "delta"}, first="sender", droppable=True)
        sinks["w1"].begin()  # its own read buffer starts being processed: already batching
        sinks["w1"].send_response("req-1", True, b"{}")
        sinks["w1"].flush()  # the end of its read buffer
        frames = [json.loads(f) for w in sinks["w1"].raw.writes for f in parse_frames(w)]
        assert [f["type"] for f in frames] == ["event", "res"]
        await asyncio.sleep(0)
        assert log == ["sender", "w1"]  # the deferred flush found nothing more to write

    asyncio.run(main())


def test_wire_sink_buffered_counts_the_open_batch(impl):
    sink = impl.sink.WireSink(FakeWS())
    sink.raw.size = 7
    assert sink.buffered() == 7
    sink.begin()
    sink.send(b"x" * 100)
    assert sink.buffered() == 7 + 2 + 100
    sink.flush()
    assert sink.buffered() == 7


def test_bus_deferred_flush_survives_a_socket_closed_during_the_turn():
    """uvloop raises on a write to a closed handle: that socket's batch is dropped (nobody
    reads it), every other watcher still gets its own."""
    import asyncio

    from krabfast._core import fanout as live_fanout, sink as live_sink

    class ClosedRaw(OrderedRaw):
        def write(self, data) -> None:
            raise RuntimeError("unable to perform operation; the handler is closed")

    async def main():
        log: list[str] = []
        bus, sinks = _live_bus(("sender",), log)
        ws = FakeWS()
        ws.underlying_transport = ClosedRaw("gone", log)
        gone = live_sink.WireSink(ws)
        bus.attach("gone", live_fanout.Subscriber(gone, FakeSock(), SCOPE_BIT[READ]))
        ws = FakeWS()  # served (and flushed) after the closed one
        ws.underlying_transport = OrderedRaw("w2", log)
        sinks["w2"] = live_sink.WireSink(ws)
        bus.attach("w2", live_fanout.Subscriber(sinks["w2"], FakeSock(), SCOPE_BIT[READ]))
        bus.publish("chat", {"state": "delta"}, first="sender", droppable=True)
        await asyncio.sleep(0)
        assert log == ["sender", "w2"]
        assert _events(sinks["w2"]) == [(1, "delta")]
        assert gone.buffered() == 0  # the batch is gone, not stuck open

    asyncio.run(main())


class QueueLog:
    """A watcher's sink that notes, in the shared log, when a frame is handed to it."""

    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def send(self, data: bytes) -> None:
        self.log.append(f"queued {self.name}")

    def buffered(self) -> int:
        return 0


def test_bus_writes_the_asker_before_queueing_the_watchers_copies():
    """A run's event reaches its asker's socket before fan-out to the other sockets has
    even begun, corked (a delta and its agent twin) or not, in a loop or not."""
    import asyncio

    from krabfast._core import fanout as live_fanout, sink as live_sink
    from krabfast.gateway.bus import EventBus

    def make(log):
        bus = EventBus(1 << 20, 1 << 22)
        bus.attach("w1", live_fanout.Subscriber(QueueLog("w1", log), FakeSock(), SCOPE_BIT[READ]))
        ws = FakeWS()
        ws.underlying_transport = OrderedRaw("sender", log)
        bus.attach("sender", live_fanout.Subscriber(live_sink.WireSink(ws), FakeSock(),
                                                    SCOPE_BIT[READ]))
        bus.attach("w2", live_fanout.Subscriber(QueueLog("w2", log), FakeSock(), SCOPE_BIT[READ]))
        return bus

    async def in_loop():
        log: list[str] = []
        bus = make(log)
        with bus.corked():
            bus.publish("chat", {"state": "delta"}, first="sender", droppable=True)
            bus.publish("agent", {"stream": "assistant"}, first="sender", droppable=True)
            assert log == []
        assert log == ["sender", "queued w1", "queued w2", "queued w1", "queued w2"]
        del log[:]
        bus.publish("chat", {"state": "final"}, first="sender")
        assert log == ["sender", "queued w1", "queued w2"]
        del log[:]
        # Inside a block, an event with no asker first queues the asker-first ones before
        # it, so every socket still gets the events in the order they were published.
        with bus.corked():
            bus.publish("chat", {"state": "delta"}, first="sender", droppable=True)
            bus.publish("presence", {"presence": []})
        assert log == ["queued w1", "queued w2", "queued w1", "queued w2", "sender"]

    asyncio.run(in_loop())
    log: list[str] = []
    bus = make(log)  # no loop: nothing is deferred, the asker still goes first
    bus.publish("chat", {"state": "final"}, first="sender")
    assert log == ["sender", "queued w1", "queued w2"]
