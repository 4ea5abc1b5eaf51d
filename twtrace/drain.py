"""Emptying one generation of the kernel's aggregate maps (loader-side, bcc).

The kernel writes one generation while user space drains the other, so a
drain never races a writer: after the loader flips the generation it waits
out an RCU grace period (every BPF program run is an RCU read-side section),
and the old maps then have no writer left.  Reading costs what the interval
held, not what the kernel ever saw.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import time
from typing import Dict, List

NR_MEMBARRIER = {"x86_64": 324, "aarch64": 283}
MEMBARRIER_CMD_GLOBAL = 1  # synchronize_rcu() on a machine with more than one CPU


@functools.lru_cache(maxsize=None)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def grace_period() -> str:
    """Waits until every BPF program run that began before the call has
    ended; returns how.  On one CPU there is nothing to wait for: programs
    that write the drained maps run with preemption off (kprobes), or on a
    kernel that does not preempt (fentry, as twtrace chooses it)."""
    nr = NR_MEMBARRIER.get(platform.machine())
    if nr is not None:
        libc = _libc()
        if libc.syscall(ctypes.c_long(nr), ctypes.c_int(MEMBARRIER_CMD_GLOBAL),
                        ctypes.c_uint(0), ctypes.c_int(0)) == 0:
            return "membarrier"
    # nohz_full refuses it: program runs last microseconds, so a pause much
    # longer than any of them stands in for the grace period.
    time.sleep(0.05)
    return "sleep"


class Batch:
    """BPF_MAP_LOOKUP_AND_DELETE_BATCH on one map (5.6+), with buffers kept
    between calls; falls back to a walk and per-key deletes."""

    def __init__(self, table, chunk: int = 4096):
        from bcc.libbcc import lib

        self.table, self.lib = table, lib
        self.chunk = chunk  # (bcc 0.18 tables do not know their size)
        self.keys = (table.Key * self.chunk)()
        self.vals = (table.Leaf * self.chunk)()
        self.ok = hasattr(lib, "bpf_lookup_and_delete_batch")

    def drain(self) -> List[tuple]:
        return self._run(delete=True)

    def read(self) -> List[tuple]:
        """The entries, left in place (each bucket is copied under its lock)."""
        return self._run(delete=False)

    def _run(self, delete: bool) -> List[tuple]:
        if self.ok:
            try:
                return self._batched(delete)
            except OSError as e:
                if e.errno not in (errno.EINVAL, 524, errno.ENOSYS):
                    raise
                self.ok = False
        return self._walk(delete)

    def _batched(self, delete: bool) -> List[tuple]:
        out: List[tuple] = []
        in_b, out_b = ctypes.c_uint32(0), ctypes.c_uint32(0)
        first = True
        while True:
            cnt = ctypes.c_uint32(self.chunk)
            op = self.lib.bpf_lookup_and_delete_batch if delete else self.lib.bpf_lookup_batch
            res = op(
                self.table.map_fd, None if first else ctypes.byref(in_b), ctypes.byref(out_b),
                ctypes.byref(self.keys), ctypes.byref(self.vals), ctypes.byref(cnt))
            err = ctypes.get_errno()
            out.extend((_copy(self.keys[i]), _copy(self.vals[i])) for i in range(cnt.value))
            if res != 0:
                if err == errno.ENOENT:  # the whole map has been walked
                    return out
                if err == errno.ENOSPC and cnt.value == 0:  # a bucket bigger than a chunk
                    raise OSError(errno.EINVAL, "bucket larger than the batch")
                raise OSError(err, os.strerror(err))
            in_b.value, first = out_b.value, False

    def _walk(self, delete: bool) -> List[tuple]:
        items = [(_copy(k), _copy(v)) for k, v in self.table.items()]
        for k, _ in items if delete else ():
            try:
                del self.table[k]
            except KeyError:
                pass
        return items


def _copy(c):
    """A ctypes struct detached from the reused buffer (scalars come out of
    ctypes arrays as ints already)."""
    if isinstance(c, int):
        return c
    return type(c).from_buffer_copy(c)


def _int(v) -> int:
    return v if isinstance(v, int) else v.value


class Drainer:
    """The drained maps of one loaded program, by generation."""

    NAMES = ("aggs", "hists", "pairs")

    def __init__(self, bpf, stacks: bool = False):
        names = self.NAMES + (("stacks",) if stacks else ())
        self.maps: Dict[str, List[Batch]] = {
            n: [Batch(bpf[f"{n}0"]), Batch(bpf[f"{n}1"])] for n in names}
        # Written once per entry and never through a pointer: safe to drain live.
        self.retired = Batch(bpf["retired"])

    def drain(self, gen: int) -> dict:
        raw = {n: b[gen].drain() for n, b in self.maps.items()}
        out = {n: _convert(n, items) for n, items in raw.items()}
        _self_pairs(raw["aggs"], out["pairs"])
        out["retired"] = {(k.tid, k.gen): {"depth": v.depth, "ts": v.ts}
                          for k, v in self.retired.drain()}
        return out


AGG_FIELDS = ("adds", "failed_adds", "cancels", "cancels_matched", "callbacks", "matched",
              "timed", "queue_sum", "queue_max", "run_sum", "run_max", "run_cnt",
              "notify_mask", "max_depth", "runs", "cgroup")


def _self_pairs(aggs, pairs: dict) -> None:
    """A task's adds to itself are counted in its aggregate, not in a pair
    entry of their own (one map operation less per add): they become the
    pair (its process -> itself) here, beside any other thread's adds."""
    for k, v in aggs:
        if not v.own_adds:
            continue
        cur = pairs.get((v.pid, k.tid, k.gen, k.func))
        if cur:
            cur["adds"] += v.own_adds
        else:
            pairs[(v.pid, k.tid, k.gen, k.func)] = {
                "adds": v.own_adds, "adder_comm": v.comm.decode(errors="replace"),
                "adder_cgroup": v.cgroup}


def _convert(name: str, items) -> dict:
    if name == "aggs":
        return {(k.tid, k.gen, k.func): {"pid": v.pid, "comm": v.comm.decode(errors="replace"),
                                         **{f: getattr(v, f) for f in AGG_FIELDS}}
                for k, v in items}
    if name == "hists":
        out: Dict[tuple, Dict[int, int]] = {}
        for k, v in items:
            out.setdefault((k.tid, k.gen, k.func, k.kind), {})[k.bucket] = _int(v)
        return out
    if name == "pairs":
        return {(k.adder_pid, k.tid, k.gen, k.func):
                {"adds": v.adds, "adder_comm": v.adder_comm.decode(errors="replace"),
                 "adder_cgroup": v.adder_cgroup}
                for k, v in items}
    return {(k.func, k.stack_id): _int(v) for k, v in items}
