"""The fast event path writes exactly what the model's event lines encode to,
and decodes raw bytes exactly as bcc's ctypes object reads them."""
import ctypes as ct
import json

from hypothesis import given, settings, strategies as st

from benchmarks.eventpath import EventStruct as Ev, per_event_us
from twtrace import model
from twtrace.eventcodec import Decoder, layout
from twtrace.eventtext import CACHE_MAX, EventText

KINDS = {1: "add", 2: "callback", 3: "cancel", 4: "run"}
FLAGS = [0, model.CB_MATCHED, model.CB_UNTIMED, model.CB_MATCHED | model.CB_UNTIMED,
         model.CB_NORUN, model.CB_MATCHED | model.CB_NORUN]

u64, u32, s32 = (st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
                 st.integers(-2**31, 2**31 - 1))
comms = st.text(max_size=15) | st.sampled_from(["python3", 'a"b\\c', "\x01\x7f", "é�"])
events = st.fixed_dictionaries({
    "kind": st.sampled_from(list(KINDS.values())), "ts": u64, "work": u64,
    "func": st.sampled_from([0xffffffff81000000, 0xffffffff81000010, 0]),
    "queue_ns": u64, "dur_ns": u64, "tid": u32, "pid": u32, "gen": u32,
    "adder_tid": u32, "adder_pid": u32, "ret": st.sampled_from([0, -3]) | s32,
    "notify": st.integers(0, 0x1ff), "count": u32, "flags": st.sampled_from(FLAGS),
    "stack_id": s32, "cgroup": st.sampled_from([0, 1, 77]), "adder_cgroup": st.sampled_from([0, 1]),
    "comm": comms, "adder_comm": comms})
NAMES = {0xffffffff81000000: "____fput", 0xffffffff81000010: 'odd"name'}
CGROUPS = {1: "/", 77: "/system.slice/nginx.service"}


def fname(addr):
    return NAMES.get(addr) or model.hexaddr(addr)


@settings(max_examples=1500, deadline=None)
@given(events)
def test_text_is_what_json_dumps_writes_for_the_model_line(ev):
    want = json.dumps(model.event_line(ev, fname, lambda a: True, CGROUPS.get),
                      separators=(",", ":"))
    assert EventText(fname, CGROUPS.get)(ev) == want


def test_string_cache_is_bounded_and_still_right():
    text = EventText(fname, CGROUPS.get)
    base = {"kind": "run", "ts": 1, "tid": 2, "pid": 2, "count": 1, "dur_ns": 5}
    for i in range(CACHE_MAX + 10):
        line = text(dict(base, comm=f"c{i}"))
        assert json.loads(line)["comm"] == f"c{i}"
    assert len(text._str) <= CACHE_MAX


class Padded(ct.Structure):
    _fields_ = [("a", ct.c_ubyte), ("b", ct.c_ulonglong), ("c", ct.c_short)]


def test_layout_keeps_offsets_and_padding():
    fmt, names, texts = layout(Padded)
    assert fmt == "=B7xQh6x" and names == ["a", "b", "c"] and texts == []
    assert layout(Ev)[2] == ["comm", "adder_comm"]


@settings(max_examples=300, deadline=None)
@given(u64, u32, s32, st.binary(max_size=16), st.integers(1, 4))
def test_decoding_raw_bytes_reads_what_ctypes_reads(ts, tid, ret, comm, kind):
    e = Ev(ts=ts, tid=tid, ret=ret, comm=comm, kind=kind, adder_comm=b"x" * 16)
    got = Decoder(Ev, KINDS)(ct.addressof(e))
    for name, _ in Ev._fields_:
        want = getattr(e, name)
        if name == "kind":
            want = KINDS[want]
        elif isinstance(want, bytes):
            want = want.decode(errors="replace")
        assert got[name] == want, name


def test_the_benchmark_compares_equal_output():
    ref = per_event_us(50)  # asserts inside that both paths wrote the same text
    assert set(ref) == {"add", "callback"} and all(min(v) > 0 for v in ref.values())


def _raw(ev: dict) -> bytes:
    fields = {k: v for k, v in ev.items() if k != "kind"}
    fields["comm"] = ev["comm"].encode()[:16]
    fields["adder_comm"] = ev["adder_comm"].encode()[:16]
    e = Ev(kind={v: k for k, v in KINDS.items()}[ev["kind"]], **fields)
    return ct.string_at(ct.addressof(e), ct.sizeof(e))


@settings(max_examples=1500, deadline=None)
@given(st.lists(events, min_size=1, max_size=6))
def test_text_from_the_tuple_is_the_text_from_the_dict(evs):
    dec = Decoder(Ev, KINDS)
    text = EventText(fname, CGROUPS.get)
    fast = EventText(fname, CGROUPS.get).from_tuples(dec.names, KINDS, dec.from_tuple)
    for ev in evs + evs:  # twice: the second time from the caches
        raw = _raw(ev)
        assert fast(dec.unpack(raw)) == text(dec.from_bytes(raw))


def test_an_address_is_named_again_once_its_symbol_is_known():
    names = {}
    dec = Decoder(Ev, KINDS)
    fast = EventText(lambda a: names.get(a) or model.hexaddr(a), CGROUPS.get).from_tuples(
        dec.names, KINDS, dec.from_tuple)
    raw = _raw({"kind": "add", "ts": 1, "work": 2, "func": 0xffffffffa0001000, "queue_ns": 0,
                "dur_ns": 0, "tid": 3, "pid": 3, "gen": 1, "adder_tid": 3, "adder_pid": 3,
                "ret": 0, "notify": 1, "count": 0, "flags": 0, "stack_id": -1, "cgroup": 0,
                "adder_cgroup": 0, "comm": "x", "adder_comm": "x"})
    assert json.loads(fast(dec.unpack(raw)))["func"] == "0xffffffffa0001000"
    names[0xffffffffa0001000] = "mod_callback"
    assert json.loads(fast(dec.unpack(raw)))["func"] == "mod_callback"
