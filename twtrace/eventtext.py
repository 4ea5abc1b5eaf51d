"""Event lines as JSON text, without building and encoding a dict.

`record --events` writes one line per kernel event, and json.dumps of the
line's dict was most of its cost per event.  These templates write exactly
the text json.dumps(model.event_line(...), separators=(",", ":")) writes
(the unit tests hold them to that over every kind and flag), from the
decoded event directly; strings are encoded once and remembered, since
function names, comms and cgroup paths repeat.
"""
from __future__ import annotations

import json
from operator import itemgetter
from typing import Callable, Dict, Sequence, Tuple

from twtrace.model import CB_MATCHED, CB_NORUN, CB_UNTIMED, hexaddr, notify_name

CACHE_MAX = 8192  # distinct strings kept encoded; then the cache starts again

_ADD = ('{"type":"add","ts_ns":%d,"work":"0x%x","func":%s,"tid":%d,"pid":%d,"comm":%s,'
        '"adder_tid":%d,"adder_pid":%d,"adder_comm":%s,"notify":%s,"ok":%s')
_CB = ('{"type":"callback","ts_ns":%d,"work":"0x%x","func":%s,"tid":%d,"pid":%d,"comm":%s,'
       '"queue_ns":%s,"run_ns":%s,"timing":"%s","matched":%s')
_CANCEL = '{"type":"cancel","ts_ns":%d,"work":"0x%x","func":%s,"tid":%d,"pid":%d}'
_RUN = '{"type":"run","ts_ns":%d,"tid":%d,"pid":%d,"comm":%s,"callbacks":%d,"dur_ns":%d}'


class EventText:
    def __init__(self, fname: Callable[[int], str], cgroup: Callable[[int], str]):
        self._fname, self._cgroup = fname, cgroup
        self._str: Dict[str, str] = {}

    def _s(self, s: str) -> str:
        t = self._str.get(s)
        if t is None:
            if len(self._str) >= CACHE_MAX:
                self._str.clear()
            t = self._str[s] = json.dumps(s)
        return t

    def _func(self, addr: int) -> str:
        # Not remembered by address: a late-probed function's name can
        # change from its address to its symbol once it is found.
        return self._s(self._fname(addr))

    def __call__(self, ev: dict) -> str:
        kind = ev["kind"]
        if kind == "add":
            return self._add(ev)
        if kind == "callback":
            return self._callback(ev)
        if kind == "cancel":
            return _CANCEL % (ev["ts"], ev["work"], self._func(ev["func"]), ev["tid"], ev["pid"])
        return _RUN % (ev["ts"], ev["tid"], ev["pid"], self._s(ev["comm"]), ev["count"],
                       ev["dur_ns"])

    def _add(self, ev: dict) -> str:
        s = self._s
        text = _ADD % (ev["ts"], ev["work"], self._func(ev["func"]), ev["tid"], ev["pid"],
                       s(ev["comm"]), ev["adder_tid"], ev["adder_pid"], s(ev["adder_comm"]),
                       s(notify_name(ev["notify"])), "false" if ev["ret"] else "true")
        if ev["cgroup"]:
            text += ',"cgroup":' + s(self._cgroup(ev["cgroup"]))
        if ev["adder_cgroup"]:
            text += ',"adder_cgroup":' + s(self._cgroup(ev["adder_cgroup"]))
        if ev["ret"]:
            text += ',"error":%d' % ev["ret"]
        return text + "}"

    def _callback(self, ev: dict) -> str:
        flags = ev["flags"]
        matched, untimed = flags & CB_MATCHED, flags & CB_UNTIMED
        queue = "%d" % ev["queue_ns"] if matched and not untimed else "null"
        run = "null" if untimed or flags & CB_NORUN else "%d" % ev["dur_ns"]
        text = _CB % (ev["ts"], ev["work"], self._func(ev["func"]), ev["tid"], ev["pid"],
                      self._s(ev["comm"]), queue, run, "batch" if untimed else "exact",
                      "true" if matched else "false")
        if untimed:
            text += ',"queue_ns_bounds":[%d,%d]' % (ev["queue_ns"], ev["dur_ns"])
        return text + "}"

    # -- straight from the unpacked tuple -----------------------------------
    def from_tuples(self, names: Sequence[str], kinds: Dict[int, str],
                    decode: Callable[[Tuple], dict]) -> Callable[[Tuple], str]:
        """A function of one unpacked event (fields in the order `names`, as
        eventcodec.Decoder unpacks them) to its line: adds and callbacks,
        nearly every event, without a dict or a decode of their comms
        (a comm's text is remembered by its raw bytes); the rare kinds go
        through decode() and __call__."""
        ix = {n: i for i, n in enumerate(names)}
        code = {v: k for k, v in kinds.items()}
        add_code, cb_code, kind_i = code["add"], code["callback"], ix["kind"]
        add_f = itemgetter(*(ix[n] for n in (
            "ts", "work", "func", "tid", "pid", "comm", "adder_tid", "adder_pid", "adder_comm",
            "notify", "ret", "cgroup", "adder_cgroup")))
        cb_f = itemgetter(*(ix[n] for n in (
            "ts", "work", "func", "tid", "pid", "comm", "queue_ns", "dur_ns", "flags")))
        raw: Dict[bytes, str] = {}
        names_by_addr: Dict[int, str] = {}
        s = self._s

        def comm(b: bytes) -> str:
            t = raw.get(b)
            if t is None:
                if len(raw) >= CACHE_MAX:
                    raw.clear()
                t = raw[b] = s(b.split(b"\0", 1)[0].decode(errors="replace"))
            return t

        def func(addr: int) -> str:
            t = names_by_addr.get(addr)
            if t is None:
                name = self._fname(addr)
                t = s(name)
                if name != hexaddr(addr):  # a symbol's name stays; an address may get one
                    if len(names_by_addr) >= CACHE_MAX:
                        names_by_addr.clear()
                    names_by_addr[addr] = t
            return t

        def text(t: Tuple) -> str:
            k = t[kind_i]
            if k == add_code:
                ts, work, fn, tid, pid, c, atid, apid, ac, notify, ret, cg, acg = add_f(t)
                line = _ADD % (ts, work, func(fn), tid, pid, comm(c), atid, apid, comm(ac),
                               s(notify_name(notify)), "false" if ret else "true")
                if cg:
                    line += ',"cgroup":' + s(self._cgroup(cg))
                if acg:
                    line += ',"adder_cgroup":' + s(self._cgroup(acg))
                if ret:
                    line += ',"error":%d' % ret
                return line + "}"
            if k == cb_code:
                ts, work, fn, tid, pid, c, q, dur, flags = cb_f(t)
                if flags & CB_UNTIMED:
                    return self._callback(decode(t))
                matched = flags & CB_MATCHED
                return _CB % (ts, work, func(fn), tid, pid, comm(c),
                              "%d" % q if matched else "null",
                              "null" if flags & CB_NORUN else "%d" % dur, "exact",
                              "true" if matched else "false") + "}"
            return self(decode(t))

        return text
