"""The only module that talks to bcc: compiles bpf/twtrace.bpf.c, attaches
it, and turns maps and events into plain Python values for the model.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from twtrace.errors import UserError
from twtrace.kernel import (BpfStats, Kallsyms, kernel_headers_dir, preemption_model,
                            kprobe_skips_counted, prog_recursion_guard, prog_run_stats,
                            prog_skipped_runs,
                            symbol_addr, vmlinux_symbols, forget_kallsyms)
from twtrace import btf, drain as drainer, eventcodec, ringread
from twtrace.window import OPEN_END, Window

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
if not (BPF_DIR / "twtrace.bpf.c").exists():  # installed as package data
    BPF_DIR = Path(__file__).resolve().parent / "bpf"

# Callbacks known to be queued as task_work somewhere between 4.14 and 7.x.
# Those present are probed before tracing starts, so their first items are
# timed exactly; others are probed as soon as an add reveals them.
KNOWN_CALLBACKS = (
    "____fput", "__cleanup_mnt", "delayed_mntput", "tctx_task_work", "create_worker_cb",
    "create_worker_cont", "task_numa_work", "task_mm_cid_work", "posix_cpu_timers_work",
    "key_change_session_keyring", "perf_pending_task", "perf_pending_task_sigtrap",
    "unwind_deferred_task_work", "bpf_task_work_callback", "dup_xol_work",
    "irq_thread_dtor", "restrict_one_thread_callback", "__report_access", "kill_me_now",
    "kill_me_maybe", "kill_me_never", "binder_do_fd_close", "move_myself",
    "ghes_kick_task_work", "io_tctx_exit_cb", "io_uring_cancel_task_work",
)
# (io_uring's request handlers, io_req_task_submit and the like, are called
# by tctx_task_work from its own list; they are not task_work callbacks.)

# Of those, the ones queued by ordinary syscalls at any rate (every close of
# a file, io_uring completions): probed with fentry/fexit, cheaper per call
# than a kprobe pair, where the probe mode is fentry.  Each costs its own
# copy of the callback code to compile (bcc cannot share one between
# programs): about 3.4 s on top of a 20 s compile, emulated.  The others
# (the tick's mm and NUMA scans, at most a few per task per second; umounts,
# CPU timers, keyrings, io-wq workers) take kprobes, whose one program
# serves every function.
FENTRY_CALLBACKS = ("____fput", "tctx_task_work")

_UNREAD = object()
POLL_BUDGET = 4096  # events handled per poll at most
RET_INSTANCES = 256  # threads that can be inside task_work_run or one callback at once

TW_ST = {"lost": 0, "unmatched": 1, "self": 2, "untimed": 3, "resync": 4, "noret": 6,
         "stack_collisions": 7, "stack_errors": 8}
# Entries that did not fit, per bounded map (bpf/twtrace.h TW_ST_FULL_*).
TW_FULL = {"inflight": 9, "tasks": 10, "aggs": 11, "hists": 12, "pairs": 13, "stacks": 14,
           "retired": 15, "filter": 16, "cgroups": 17}
EV_KINDS = {1: "add", 2: "callback", 3: "cancel", 4: "run"}


def import_bcc():
    try:
        import bcc  # noqa: F401  (the distro's python3-bpfcc / python3-bcc)
    except ImportError:
        raise UserError("bcc is not importable by this Python: install the distro's package "
                        "(Debian/Ubuntu: apt-get install python3-bpfcc; Fedora: dnf install "
                        "python3-bcc) and run twtrace with that Python (scripts/setup does this)")
    return bcc


@functools.lru_cache(maxsize=None)
def bcc_support_kfunc() -> bool:
    """bcc's BPF.support_kfunc(), asked once per process: it reads kallsyms
    itself (over a second, emulated), and doctor's pre-check asks it too."""
    return bool(import_bcc().BPF.support_kfunc())


def late_probes() -> bool:
    """TWTRACE_LATE_PROBES=1 probes callbacks only once seen, as for unknown
    ones (fentry callbacks too): the tests use it to exercise batch-level
    settlement."""
    return os.environ.get("TWTRACE_LATE_PROBES") == "1"


@dataclass
class TraceConfig:
    probe_mode: str = "auto"  # auto | kprobe | fentry
    events: bool = False
    pids: List[int] = field(default_factory=list)
    tids: List[int] = field(default_factory=list)
    follow: bool = False  # add forked children of traced processes
    cgroups: List[int] = field(default_factory=list)  # cgroup v2 ids, descendants included
    ringbuf_pages: int = 256
    stacks: bool = False  # count adds per adder kernel stack
    bpf_stats: bool = False  # the kernel's BPF run-time accounting, for top's cost figure
    cflags: List[str] = field(default_factory=list)  # extra -D for map sizes (tests)


@dataclass
class Features:
    probe_mode: str = ""
    probe_mode_reason: str = ""
    ringbuf: bool = False
    preemption: Optional[str] = None
    recursion_guard: Optional[bool] = None
    add_failure_known: bool = False  # the exit sentinel's address is known
    cas: bool = False  # maxima kept with compare-and-swap
    rt_reads: bool = True  # maps are read at real-time priority (see Loader.reading)
    task_offsets: str = ""  # where task_struct's layout came from: "btf" or "headers ..."
    cancel: List[str] = field(default_factory=list)
    cancel_bool: bool = False
    callbacks_probed: List[str] = field(default_factory=list)
    callbacks_unprobed: Dict[str, str] = field(default_factory=dict)
    event_reader: str = ""  # with events: "ring pages" (twtrace/ringread.py) or "bcc"

    def as_dict(self) -> dict:
        return {"probe_mode_reason": self.probe_mode_reason, "ringbuf": self.ringbuf,
                **({"event_reader": self.event_reader} if self.event_reader else {}),
                "preemption": self.preemption, "recursion_guard": self.recursion_guard,
                "add_failure_known": self.add_failure_known, "cas": self.cas,
                "rt_reads": self.rt_reads, "task_offsets": self.task_offsets,
                "cancel": self.cancel, "cancel_returns_bool": self.cancel_bool,
                "callbacks_probed": sorted(self.callbacks_probed),
                "callbacks_unprobed": dict(self.callbacks_unprobed)}


def _cancel_is_bool(syms: Kallsyms) -> bool:
    """6.11 renamed task_work_cancel to _func and reused the name for a
    bool-returning variant: read the running kernel's own header."""
    rel = os.uname().release
    for d in ("source", "build"):
        try:
            text = Path(f"/lib/modules/{rel}/{d}/include/linux/task_work.h").read_text()
        except OSError:
            continue
        return re.search(r"\bbool\s+task_work_cancel\s*\(", text) is not None
    return "task_work_cancel_func" in syms


def adder_frames(frames: List[str]) -> List[str]:
    """A stack from task_work_add outwards.  The innermost frames are the
    probe's own (BPF program, trampoline); with fentry on newer kernels
    task_work_add has no frame yet when its trampoline runs, so it is put
    back in first place: the probe was on it."""
    if "task_work_add" in frames:
        return frames[frames.index("task_work_add"):]
    i = 0
    while i < len(frames) and frames[i].startswith(("bpf_", "0x")):
        i += 1
    return ["task_work_add", *frames[i:]]


def choose_probe_mode(asked: str, kfunc: tuple, guard: Optional[bool],
                      preemption: Optional[str]) -> tuple:
    """(use fentry, why) for task_work_add/run.  fentry is cheaper, but the
    kernel skips a fentry program entered on a CPU where it already runs;
    kprobe handlers run with preemption off, so only an interrupt can land
    inside one.  Pure, so the choice is unit-tested."""
    ok, why = kfunc
    if asked == "kprobe":
        return False, "kprobes asked for"
    if not ok:
        return False, f"kprobes used: {why}"
    if asked == "fentry":
        return True, "fentry/fexit asked for"
    if guard is False:
        return False, ("kprobes used: fentry/fexit programs here have no per-program "
                       "recursion guard (it came in 5.12): a nested run would not be counted")
    if guard is None:
        return False, "kprobes used: could not tell whether fentry programs are guarded"
    if preemption in ("full", "lazy", "rt"):
        return False, (f"kprobes used: this kernel preempts kernel code ({preemption}), and a "
                       f"thread preempted inside a fentry program makes the kernel skip that "
                       f"program for every other thread on its CPU; kprobe handlers run with "
                       f"preemption off")
    if preemption is None:
        return False, ("kprobes used: the kernel's preemption model is unknown (no "
                       "/boot/config, /proc/config.gz or sched/preempt)")
    return True, f"fentry/fexit supported (preemption: {preemption})"


class Loader:
    def __init__(self, cfg: TraceConfig):
        self.cfg = cfg
        self.bpf = None
        self.syms = Kallsyms.load()
        self.features = Features()
        self.lost_perf = 0
        self.gen = 0
        self._on_event: Optional[Callable[[dict], None]] = None
        self._tuple_sink_for = None
        self._stats_batch = None
        self._ring: Optional[ringread.RingReader] = None
        self._framed: Optional[eventcodec.Framed] = None
        self._skipped = _UNREAD
        self._on_tuple: Optional[Callable[[tuple], None]] = None
        self._attached_cb: Dict[int, str] = {}
        self._failed_cb: Dict[int, str] = {}
        self._fentry_cb: List[str] = []
        self._probed_ver = 1  # tasks' cached verdicts start at 0: stale
        self.stats: Optional[BpfStats] = None
        self._stacks: Dict[int, List[str]] = {}
        self._drainer: Optional[drainer.Drainer] = None
        self._rt_failed = False
        self._inflight = None
        self.window = Window(self._write_control)
        self._budget = POLL_BUDGET
        self._kprobe_skips_counted = kprobe_skips_counted()

    # -- setup -------------------------------------------------------------
    def _cflags(self, fentry: bool, cb_fentry: List[str], cas: bool) -> list:
        flags = [f"-I{BPF_DIR}", f"-DTW_RINGBUF_PAGES={self.cfg.ringbuf_pages}",
                 f"-DTW_SELF_PID={os.getpid()}",
                 *self.cfg.cflags]
        if fentry:
            flags.append("-DTW_FENTRY")
        if cb_fentry:
            flags.append("-DTW_CB_FENTRY=" + " ".join(f"TW_CB({n})" for n in cb_fentry))
        if cas:
            flags.append("-DTW_CAS")
        exited = symbol_addr("work_exited")
        self.features.add_failure_known = exited is not None
        if exited:
            flags.append(f"-DTW_WORK_EXITED={exited:#x}ULL")
        flags += self._task_offset_flags()
        if self.cfg.events:
            flags.append("-DTW_EVENTS")
            if self.features.ringbuf:
                flags.append("-DTW_RINGBUF")
        if self.cfg.pids or self.cfg.tids or self.cfg.follow:
            flags.append("-DTW_FILTER")
        if self.cfg.follow:
            flags.append("-DTW_FOLLOW")
        if self.cfg.cgroups:
            flags.append("-DTW_CGROUP_FILTER")
        if self.cfg.stacks:
            flags.append("-DTW_STACKS")
        return flags

    def _task_offset_flags(self) -> list:
        """task_struct field offsets from the kernel's BTF, when it has them:
        the program then compiles without <linux/sched.h>."""
        if os.environ.get("TWTRACE_TASK_OFFSETS") == "headers":  # tests compare the two
            offsets, why = None, "TWTRACE_TASK_OFFSETS=headers"
        else:
            offsets, why = btf.field_offsets()
        self.features.task_offsets = "btf" if offsets else f"headers ({why})"
        return btf.cflags(offsets) if offsets else []

    def _compile(self, fentry: bool, cb_fentry: List[str], cas: bool):
        bcc = import_bcc()
        text = (BPF_DIR / "twtrace.bpf.c").read_text()
        try:
            return bcc.BPF(text=text, cflags=self._cflags(fentry, cb_fentry, cas))
        except Exception as e:  # bcc raises bare Exceptions for compile/load/attach
            raise self._explain(e, "compile the BPF program")

    def _compile_best(self, fentry: bool):
        """The cheapest program this kernel and bcc accept: fentry callbacks
        and compare-and-swap where they load, else without them."""
        guard = self.features.recursion_guard
        cb = [n for n in FENTRY_CALLBACKS if n in self._vmlinux] if fentry and not late_probes() else []
        tries = [(cb, bool(guard)), ([], bool(guard)), ([], False)]
        last = None
        for cb_try, cas in dict.fromkeys((tuple(c), k) for c, k in tries):
            try:
                b = self._compile(fentry, list(cb_try), cas)
            except UserError as e:
                last = e
                continue
            self._fentry_cb = list(cb_try)
            self.features.cas = cas
            return b
        raise last

    def _explain(self, e: Exception, doing: str) -> UserError:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        rel = os.uname().release
        if not kernel_headers_dir() or "linux/sched.h" in str(e):
            return UserError(f"cannot {doing}: kernel headers for {rel} not found "
                             f"(Debian/Ubuntu: apt-get install linux-headers-{rel}; "
                             f"Fedora: dnf install kernel-devel-{rel})")
        return UserError(f"cannot {doing}: {msg}")

    def start(self) -> Features:
        from twtrace.leftovers import remove_stale_probes

        remove_stale_probes()  # return probes a killed run left in kprobe_events
        for fn in ("task_work_add", "task_work_run"):
            if fn not in self.syms:
                raise UserError(f"this kernel has no {fn} in /proc/kallsyms: nothing to trace")
        f = self.features
        f.ringbuf = self.syms.has_any("bpf_ringbuf_output", "ringbuf_map_alloc")
        # TWTRACE_PERF_BUFFER=1 sends events through a perf buffer as on
        # kernels before 5.8: the tests use it to exercise that path.
        if os.environ.get("TWTRACE_PERF_BUFFER") == "1":
            f.ringbuf = False
        mode = self.cfg.probe_mode
        if mode not in ("auto", "kprobe", "fentry"):
            raise UserError(f"--probe-mode must be auto, kprobe or fentry, not {mode!r}")
        f.preemption = preemption_model()
        f.recursion_guard = prog_recursion_guard()
        self._vmlinux = vmlinux_symbols()
        kfunc = self._kfunc_supported() if mode != "kprobe" else (False, "")
        fentry, f.probe_mode_reason = choose_probe_mode(mode, kfunc, f.recursion_guard,
                                                        f.preemption)
        if mode == "fentry" and not fentry:
            raise UserError(f"--probe-mode fentry: {kfunc[1]}")
        if fentry:
            try:
                self.bpf = self._compile_best(fentry=True)
                f.probe_mode = "fentry"
            except UserError as e:
                if mode == "fentry":
                    raise
                f.probe_mode_reason = f"kprobes used: fentry attach failed ({e})"
        if self.bpf is None:
            self.bpf = self._compile_best(fentry=False)
            f.probe_mode = "kprobe"
            self._attach_kprobes()
        btf.forget()
        forget_kallsyms()
        self._drainer = drainer.Drainer(self.bpf, stacks=self.cfg.stacks)
        self._seed_filters()
        self._attach_cancel()
        for name in self._fentry_cb:
            addr = self.syms.addr(name)
            if addr:
                self._mark_probed(addr, name)
        for name in () if late_probes() else KNOWN_CALLBACKS:
            addr = self.syms.addr(name)
            if addr and name not in self._fentry_cb:
                self._attach_callback(addr, name)
        if self.cfg.events:
            self._open_events()
        if self.cfg.bpf_stats:  # it costs every program run a clock read
            self.stats = BpfStats()
            self.stats.enable()
        self._open_window()
        return f

    @property
    def start_ns(self) -> int:
        """When counting started (0 before the window opened)."""
        return self.window.start

    @property
    def closed_ns(self) -> Optional[int]:
        """When counting stopped (close_window); None until then."""
        end = self.window.end
        return end if 0 < end < OPEN_END else None

    def _write_control(self, start: int, end: int) -> None:
        ctl = self.bpf["control"]
        v = ctl.Leaf()
        v.start_ns, v.end_ns, v.gen = start, end, self.gen
        v.probed_ver = self._probed_ver
        ctl[ctl.Key(0)] = v

    def _open_window(self) -> None:
        """Counting starts at start_ns, after every probe is attached; a
        program run counts exactly when its clock reads start_ns or later."""
        with self.reading():  # not preempted between the write and its check
            self.window.calibrate()
            self.window.open()

    def close_window(self) -> int:
        """Counting stops at closed_ns; returns when that is over.  After the
        grace period every program run that counted something has also sent
        its event, so the buffer then holds exactly what the aggregates count."""
        import time

        with self.reading():
            self.window.close()
        drainer.grace_period()
        # After the grace period: a run that saw the window open may have
        # taken its timestamp just after the switch, never after this.
        return time.monotonic_ns()

    def bpf_stats(self) -> Optional[dict]:
        """Cumulative run time and run count of twtrace's BPF programs, or
        None when the kernel does not account them."""
        if self.bpf is None or self.stats is None or not self.stats.enabled:
            return None
        return prog_run_stats(fn.fd for fn in list(self.bpf.funcs.values()))

    def _kfunc_supported(self):
        bcc = import_bcc()
        try:
            if not bcc_support_kfunc():
                # bcc decides (BTF, trampoline symbol, and x86-64 only): say so plainly.
                return False, (f"fentry/fexit unavailable here: bcc "
                               f"{getattr(bcc, '__version__', '?')} reports no support for them "
                               f"on this {os.uname().machine} kernel (BPF.support_kfunc())")
        except Exception as e:
            return False, f"fentry support unknown ({e})"
        return True, ""

    def _attach_kprobes(self):
        b = self.bpf
        # Return probes first: a call already under way when its entry probe
        # arrives is then seen whole or not at all.  Entry probes go through
        # perf events (the kernel removes them when twtrace dies, however it
        # dies).  Return probes need room for every thread inside the call at
        # once (callbacks sleep): the kernel's default of 2 per CPU runs out,
        # so maxactive is set, which bcc can only do through the text
        # interface; leftovers of a killed run are removed at the next start.
        try:
            b.attach_kprobe(event="task_work_add", fn_name="add_kprobe")
            b.attach_kretprobe(event="task_work_run", fn_name="run_kretprobe",
                               maxactive=RET_INSTANCES)
            b.attach_kprobe(event="task_work_run", fn_name="run_kprobe")
        except Exception as e:
            raise self._explain_attach(e)

    def _explain_attach(self, e: Exception) -> UserError:
        return UserError(f"cannot attach kprobes to task_work_add/task_work_run: "
                         f"{str(e).strip() or type(e).__name__} (does this kernel have "
                         f"CONFIG_KPROBES? run 'twtrace doctor')")

    def _seed_filters(self):
        one = ctypes.c_uint8(1)
        for mapname, ids in (("filter_pids", self.cfg.pids), ("filter_tids", self.cfg.tids)):
            if ids:
                m = self.bpf[mapname]
                for i in ids:
                    m[m.Key(i)] = one
        if self.cfg.cgroups:
            m = self.bpf["filter_cgroups"]
            for i in self.cfg.cgroups:
                m[m.Key(i)] = one

    @contextlib.contextmanager
    def spawning(self):
        """Children this thread forks meanwhile are traced from their first
        instruction (the fork tracepoint adds them before they run); needs
        follow=True."""
        m = self.bpf["spawners"]
        key = m.Key(threading.get_native_id())
        m[key] = ctypes.c_uint8(1)
        try:
            yield
        finally:
            del m[key]

    def add_pid(self, pid: int) -> None:
        m = self.bpf["filter_pids"]
        m[m.Key(pid)] = ctypes.c_uint8(1)

    def _attach_cancel(self):
        f = self.features
        f.cancel_bool = _cancel_is_bool(self.syms)
        for name in ("task_work_cancel_match", "task_work_cancel_func", "task_work_cancel"):
            if name not in self.syms:
                continue
            entry = "cancel_bool_entry" if (name == "task_work_cancel" and f.cancel_bool) \
                else "cancel_ptr_entry"
            try:
                self.bpf.attach_kretprobe(event=name, fn_name="cancel_return", maxactive=64)
                self.bpf.attach_kprobe(event=name, fn_name=entry)
                f.cancel.append(name)
            except Exception:
                self._detach_quietly(name)  # not traced; the header's features say so

    def _detach_quietly(self, name: str) -> None:
        for detach in (self.bpf.detach_kretprobe, self.bpf.detach_kprobe):
            try:
                detach(event=name)
            except Exception:
                pass

    def _mark_probed(self, addr: int, name: str) -> None:
        m = self.bpf["probed"]
        m[m.Key(addr)] = ctypes.c_uint8(1)
        self._attached_cb[addr] = name
        self.features.callbacks_probed.append(name)
        # Tasks cache whether their function is probed: the new version
        # makes each look again.
        self._probed_ver += 1
        if self.window.start:
            self.window.rewrite()

    def _attach_callback(self, addr: int, name: str) -> bool:
        if addr in self._attached_cb or addr in self._failed_cb:
            return addr in self._attached_cb
        try:
            self.bpf.attach_kretprobe(event=name, fn_name="cb_return",
                                      maxactive=RET_INSTANCES)
            self.bpf.attach_kprobe(event=name, fn_name="cb_entry")
        except Exception as e:
            self._detach_quietly(name)
            self._failed_cb[addr] = name
            self.features.callbacks_unprobed[name] = str(e).strip().splitlines()[0] if str(e) else "attach failed"
            return False
        self._mark_probed(addr, name)
        return True

    def probe_new_callbacks(self, funcs) -> List[str]:
        """Attach to callback functions (addresses) not probed yet."""
        new = []
        for addr in funcs:
            if addr in self._attached_cb or addr in self._failed_cb:
                continue
            name = self.syms.name(addr)
            if name is None:
                self._failed_cb[addr] = hex(addr)
                self.features.callbacks_unprobed[hex(addr)] = "no symbol"
                continue
            if self._attach_callback(addr, name):
                new.append(name)
        return new

    def probed(self, addr: int) -> bool:
        return addr in self._attached_cb

    # -- events ------------------------------------------------------------
    def _open_events(self):
        table = self.bpf["events"]
        if self.features.ringbuf and ringread.supported():
            # bcc's class for struct tw_event, from a scratch buffer: nothing is read
            scratch = ctypes.create_string_buffer(4096)
            dec = eventcodec.Decoder(type(table.event(ctypes.addressof(scratch))), EV_KINDS)
            self._ring = ringread.RingReader(table.map_fd,
                                             self.cfg.ringbuf_pages * mmap.PAGESIZE, dec.size)
            self._framed = eventcodec.Framed(dec, ringread.HDR.format,
                                             ringread.record_step(dec.size))
            self.features.event_reader = "ring pages"
            return
        self.features.event_reader = "bcc"
        decoders: List[eventcodec.Decoder] = []

        def handle(_ctx_or_cpu, data):
            if not decoders:  # bcc's class for struct tw_event, known at the first event
                decoders.append(eventcodec.Decoder(type(table.event(data)), EV_KINDS))
                if self._tuple_sink_for:
                    self._on_tuple = self._tuple_sink_for(decoders[0])
            dec = decoders[0]
            if self._on_tuple:
                self._on_tuple(dec.unpack(ctypes.string_at(data, dec.size)))
            elif self._on_event:
                self._on_event(dec(data))
            # A ring buffer filled faster than it is read would keep one poll
            # going for ever (the tracer would never reach its deadline or a
            # signal): a negative return ends the poll; the rest waits.
            self._budget -= 1
            return -1 if self._budget <= 0 else 0

        def lost(count):
            self.lost_perf += count

        if self.features.ringbuf:
            table.open_ring_buffer(lambda ctx, data, size: handle(ctx, data))
        else:
            table.open_perf_buffer(lambda cpu, data, size: handle(cpu, data),
                                   page_cnt=64, lost_cb=lost)

    def on_event(self, fn: Callable[[dict], None]) -> None:
        self._on_event = fn

    def on_tuples(self, sink_for: Callable[["eventcodec.Decoder"], Callable[[tuple], None]]) -> None:
        """Events as unpacked tuples (the cheaper lane): sink_for(decoder),
        called at the first event, returns what takes each tuple; the
        decoder names the tuple's fields and turns one into an event dict."""
        self._tuple_sink_for = sink_for

    def _read_ring(self) -> int:
        """Up to POLL_BUDGET events from the ring's pages; returns the ring
        bytes given back."""
        f = self._framed
        chunk, used = self._ring.take(POLL_BUDGET * f.step)
        self._ring.release(used)  # the records are copied out: their room can go
        if not chunk:
            return used
        if self._on_tuple is None and self._tuple_sink_for:
            self._on_tuple = self._tuple_sink_for(f)
        if self._on_tuple:
            sink = self._on_tuple
            for t in f.iter(chunk):
                sink(t)
        elif self._on_event:
            for t in f.iter(chunk):
                self._on_event(f.from_tuple(t))
        return used

    def drain_events(self) -> None:
        """Reads the event buffer until empty (the window is closed: nothing
        more is coming)."""
        if not self.cfg.events:
            return
        if self._ring is not None:
            while self._read_ring():
                pass
            return
        for _ in range(100000):
            self._budget = POLL_BUDGET
            if self.features.ringbuf:
                self.bpf.ring_buffer_consume()
            else:
                self.bpf.perf_buffer_poll(20)
            if self._budget > 0:  # stopped short of the budget: empty
                return

    def poll(self, timeout_ms: int) -> None:
        if not self.cfg.events:
            return
        if self._ring is not None:
            self._ring.wait(timeout_ms)
            self._read_ring()
            return
        if self.features.ringbuf:
            # Most events wake no one (emit in twtrace.bpf.c): the timeout
            # is when those are read.
            self._budget = POLL_BUDGET
            self.bpf.ring_buffer_poll(timeout_ms)
            if self._budget == POLL_BUDGET:
                self.bpf.ring_buffer_consume()
        else:
            self.bpf.perf_buffer_poll(timeout_ms)

    # -- maps --------------------------------------------------------------
    @contextlib.contextmanager
    def reading(self):
        """Holds this thread at real-time priority while it reads the maps.

        A map syscall raises the per-CPU counter that makes the kernel skip
        every kprobe BPF program on that CPU until the syscall returns; if
        the reader is preempted inside one, the thread that runs instead has
        its adds and callbacks skipped whole.  SCHED_FIFO keeps ordinary
        threads from preempting it there; only interrupts remain, and those
        skips are counted (skipped_runs) and show as unmatched callbacks."""
        if self._rt_failed:
            yield
            return
        try:
            before = os.sched_getscheduler(0), os.sched_getparam(0)
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except OSError:
            self._rt_failed = True
            self.features.rt_reads = False
            yield
            return
        try:
            yield
        finally:
            try:
                os.sched_setscheduler(0, before[0], before[1])
            except OSError:
                pass

    def drain(self, skipped: bool = True) -> dict:
        """What the kernel counted since the last drain, as plain values
        (the maps are emptied), plus the cumulative counters.  skipped=False:
        the programs' skipped runs as last read (one fdinfo file per
        program; a drain that shows nothing need not pay for them)."""
        old = self.gen
        self.gen ^= 1
        self.window.rewrite()
        drainer.grace_period()  # no program still writes generation `old`
        delta = self._drainer.drain(old)
        delta["stats"] = self.read_stats(skipped)
        return delta

    def read_stats(self, skipped: bool = True) -> dict:
        b = self.bpf
        if self._stats_batch is None:
            self._stats_batch = drainer.Batch(b["stats"], chunk=len(b["stats"]))
        vals = [0] * len(b["stats"])
        for k, v in self._stats_batch.read():  # one syscall where the kernel batches arrays
            vals[getattr(k, "value", k)] = getattr(v, "value", v)
        st = {name: vals[i] for name, i in TW_ST.items()}
        st["lost"] += self.lost_perf
        st["full"] = {name: vals[i] for name, i in TW_FULL.items()}
        if skipped or self._skipped is _UNREAD:
            self._skipped = prog_skipped_runs(fn.fd for fn in list(b.funcs.values()))
        st["skipped"] = self._skipped
        if self.features.probe_mode == "kprobe" and not self._kprobe_skips_counted:
            st["skipped"] = None  # the kernel reads 0 there: unknown, not none
        return st

    def stack(self, stack_id: int) -> Optional[List[str]]:
        """The kernel stack with this id, innermost frame first, as symbols;
        None when it was not recorded (the stack map was full)."""
        if stack_id < 0:
            return None
        if stack_id not in self._stacks:
            try:
                addrs = list(self.bpf["stack_traces"].walk(stack_id))
            except KeyError:
                return None
            self._stacks[stack_id] = adder_frames(
                [self.syms.containing(a) or hex(a) for a in addrs])
        return self._stacks[stack_id]

    def read_lost(self) -> int:
        stats = self.bpf["stats"]
        with self.reading():
            return stats[stats.Key(TW_ST["lost"])].value + self.lost_perf

    def inflight(self) -> Dict[int, dict]:
        if self._inflight is None:
            self._inflight = drainer.Batch(self.bpf["inflight"])
        return {drainer._int(k): {"ts": v.ts, "func": v.func, "task": v.task, "tid": v.tid,
                                  "gen": v.gen, "pid": v.pid, "flags": v.flags}
                for k, v in self._inflight.read()}

    def task_runs(self, tasks) -> Dict[int, dict]:
        """Run times of the given task_struct keys still alive in the kernel."""
        m = self.bpf["tasks"]
        out = {}
        for t in tasks:
            try:
                v = m[m.Key(t)]
            except KeyError:
                continue
            out[t] = {"gen": v.gen, "level": v.level, "last_run_ts": v.last_run_ts,
                      "last_run_end": v.last_run_end}
        return out

    def forget_items(self, items: Dict[int, dict]) -> Dict[int, dict]:
        """Drop settled items from the in-flight map; returns those this call
        removed.  An entry is only removed if it is still the same item (same
        add time): the kernel may have settled it and queued the pointer again
        since it was read."""
        m = self.bpf["inflight"]
        gone = {}
        for w, it in items.items():
            key = m.Key(w)
            try:
                if m[key].ts != it["ts"]:
                    continue
                del m[key]
            except KeyError:
                continue
            gone[w] = it
        return gone

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self.stats is not None:
            self.stats.close()
            self.stats = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
