"""User-space cost per event of `record --events`, on the host (no kernel).

    python3 -m benchmarks.eventpath [N]

Times, per event, the fast path record uses (twtrace.eventcodec and
twtrace.eventtext: one struct unpack, one template) against the reference
it must equal (bcc's ctypes object read field by field into a dict,
model.event_line, json.dumps), both writing to an in-memory file.  The
ratio is what carries over to the emulated guests.
"""
import ctypes as ct
import io
import json
import sys
import time

from twtrace import model, ringread
from twtrace.eventcodec import Decoder, Framed
from twtrace.eventtext import EventText

KINDS = {1: "add", 2: "callback", 3: "cancel", 4: "run"}


class EventStruct(ct.Structure):
    """Shaped like bcc's class for struct tw_event (bpf/twtrace.h)."""
    _fields_ = ([(n, ct.c_ulonglong) for n in ("ts", "work", "func", "queue_ns", "dur_ns")]
                + [(n, ct.c_uint) for n in ("kind", "tid", "pid", "gen", "adder_tid",
                                              "adder_pid")]
                + [("ret", ct.c_int), ("notify", ct.c_uint), ("count", ct.c_uint),
                   ("flags", ct.c_uint), ("stack_id", ct.c_int), ("pad", ct.c_uint),
                   ("cgroup", ct.c_ulonglong), ("adder_cgroup", ct.c_ulonglong),
                   ("comm", ct.c_char * 16), ("adder_comm", ct.c_char * 16)])


def by_attribute(ev) -> dict:
    """The event as bcc's object gives it, one attribute read per field."""
    d = {name: getattr(ev, name) for name, _ in EventStruct._fields_}
    d["kind"] = KINDS.get(d["kind"], "?")
    d["comm"] = d["comm"].decode(errors="replace")
    d["adder_comm"] = d["adder_comm"].decode(errors="replace")
    return d


def per_event_us(n: int) -> dict:
    names = {0xffffffff81234567: "____fput"}
    fname = lambda a: names.get(a) or model.hexaddr(a)  # noqa: E731
    cgroup = {1: "/"}.get
    ev = EventStruct(ts=123456789012, work=0xffff888812345678, func=0xffffffff81234567,
                     tid=100, pid=100, adder_tid=100, adder_pid=100, notify=1, flags=1,
                     queue_ns=5000, dur_ns=900, comm=b"python3", adder_comm=b"python3",
                     cgroup=1, adder_cgroup=1)
    addr = ct.addressof(ev)
    decode, text = Decoder(EventStruct, KINDS), EventText(fname, cgroup)
    out = {}
    for kind in ("add", "callback"):
        ev.kind = {v: k for k, v in KINDS.items()}[kind]
        f = io.StringIO()
        t = time.perf_counter()
        for _ in range(n):
            line = model.event_line(by_attribute(ct.cast(addr, ct.POINTER(EventStruct)).contents),
                                    fname, lambda a: True, cgroup)
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
        ref = (time.perf_counter() - t) / n * 1e6
        g = io.StringIO()
        t = time.perf_counter()
        for _ in range(n):
            g.write(text(decode(addr)) + "\n")
        fast = (time.perf_counter() - t) / n * 1e6
        assert f.getvalue() == g.getvalue()  # the same bytes, or the figure means nothing
        out[kind] = (ref, fast, _pages_us(ev, n, fname, cgroup, f.getvalue()))
    return out


def _pages_us(ev, n: int, fname, cgroup, want: str) -> float:
    """Per event, what record does on x86-64: records as they lie in the ring
    buffer's pages, unpacked a chunk at a time, each line from its tuple."""
    dec = Decoder(EventStruct, KINDS)
    step = ringread.record_step(dec.size)
    framed = Framed(dec, ringread.HDR.format, step)
    rec = ringread.HDR.pack(dec.size, 0) + ct.string_at(ct.addressof(ev), dec.size)
    chunk = (rec + bytes(step - len(rec))) * 1000
    line = EventText(fname, cgroup).from_tuples(framed.names, KINDS, framed.from_tuple)
    h = io.StringIO()
    write = h.write
    t = time.perf_counter()
    for _ in range(max(1, n // 1000)):
        for tup in framed.iter(chunk):
            write(line(tup) + "\n")
    us = (time.perf_counter() - t) / (max(1, n // 1000) * 1000) * 1e6
    assert h.getvalue()[:len(want)] == want[:len(h.getvalue())]  # the same text
    return us


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print("| event | reference path, µs | one event at a time, µs | from the ring's pages, µs |"
          " ratio to reference |")
    print("|---|---:|---:|---:|---:|")
    for kind, (ref, fast, pages) in per_event_us(n).items():
        print(f"| {kind} | {ref:.2f} | {fast:.2f} | {pages:.2f} | {ref / pages:.2f}× |")


if __name__ == "__main__":
    main()
