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

from twtrace import model
from twtrace.eventcodec import Decoder
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
        out[kind] = (ref, fast)
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print("| event | reference path, µs | fast path, µs | ratio |")
    print("|---|---:|---:|---:|")
    for kind, (ref, fast) in per_event_us(n).items():
        print(f"| {kind} | {ref:.2f} | {fast:.2f} | {ref / fast:.2f}× |")


if __name__ == "__main__":
    main()
