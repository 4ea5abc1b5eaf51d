"""Facts about the running kernel read from /proc and /lib/modules (no bcc)."""
from __future__ import annotations

import bisect
import os
import re
from pathlib import Path
from typing import Dict, List, Optional


KALLSYMS = "/proc/kallsyms"
_kallsyms_cache: Dict[str, str] = {}


def kallsyms_text(path: str = KALLSYMS) -> Optional[str]:
    """/proc/kallsyms, read once per process: start-up needs it four ways
    (callback names, the exit sentinel, fentry targets, doctor's checks) and
    the kernel takes a while to produce its ~100k lines (seconds, emulated).
    The symbols of the running kernel do not change while twtrace runs,
    except for modules loaded later, whose callbacks show as addresses."""
    if path not in _kallsyms_cache:
        try:
            with open(path) as f:
                _kallsyms_cache[path] = f.read()
        except OSError:
            return None
    return _kallsyms_cache[path]


class Kallsyms:
    """Text symbols of the running kernel: name -> address and back, and
    which of them are vmlinux's own (not a module's)."""

    def __init__(self, pairs: List[tuple], vmlinux: Optional[set] = None):
        # the first address of a name wins (reversed: later ones are overwritten)
        self.by_name: Dict[str, int] = {n: a for a, n in reversed(pairs)}
        self.addrs = sorted(pairs)
        self._keys = [a for a, _ in self.addrs]
        self.vmlinux = vmlinux if vmlinux is not None else set(self.by_name)

    # A text (or weak) symbol line: "ADDR T name", "\t[mod]" after a module's.
    _TEXT = re.compile(r"^([0-9a-fA-F]+) ([tTwW]) (\S+)(\t?)", re.M)
    _parsed: Dict[str, "Kallsyms"] = {}

    @classmethod
    def parse(cls, text: str) -> "Kallsyms":
        # One regex pass instead of splitting ~200k lines: seconds, emulated.
        found = cls._TEXT.findall(text)
        vmlinux = {n for _h, k, n, mod in found if not mod and k in "tT"}
        return cls([(a, n) for a, n in ((int(h, 16), n) for h, _k, n, _m in found) if a],
                   vmlinux)

    @classmethod
    def load(cls, path: str = KALLSYMS) -> "Kallsyms":
        """Parsed once per process (start-up asks for it several ways)."""
        if path not in cls._parsed:
            text = kallsyms_text(path)
            cls._parsed[path] = cls.parse(text) if text else cls([])
        return cls._parsed[path]

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def has_any(self, *names: str) -> bool:
        return any(n in self.by_name for n in names)

    def addr(self, name: str) -> Optional[int]:
        return self.by_name.get(name)

    def name(self, addr: int) -> Optional[str]:
        """The symbol starting exactly at addr (callback pointers point at starts)."""
        i = bisect.bisect_left(self._keys, addr)
        if i < len(self._keys) and self._keys[i] == addr:
            return self.addrs[i][1]
        return None

    def containing(self, addr: int) -> Optional[str]:
        """The symbol whose code holds addr (a return address in a stack)."""
        i = bisect.bisect_right(self._keys, addr) - 1
        return self.addrs[i][1] if i >= 0 else None


def kernel_headers_dir(release: Optional[str] = None) -> Optional[Path]:
    release = release or os.uname().release
    build = Path(f"/lib/modules/{release}/build")
    if (build / "include").is_dir() or (build / "Makefile").exists():
        return build.resolve()
    return None


# ---------------------------------------------------------------------------
# The kernel's BPF run-time statistics (what twtrace's own programs cost)

BPF_ENABLE_STATS, BPF_STATS_RUN_TIME = 32, 0
NR_BPF = {"x86_64": 321, "aarch64": 280}
BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


class BpfStats:
    """Keeps the kernel's per-program run-time accounting on while twtrace
    runs.  Prefers BPF_ENABLE_STATS (5.8+): the kernel turns it off again when
    the fd closes, even if twtrace is killed.  Else flips the sysctl and puts
    back what it found on close()."""

    def __init__(self) -> None:
        self.fd: Optional[int] = None
        self.restore: Optional[str] = None
        self.enabled = False

    def enable(self) -> bool:
        self.fd = _enable_stats_fd()
        if self.fd is not None:
            self.enabled = True
            return True
        try:
            with open(BPF_STATS_SYSCTL) as f:
                old = f.read().strip()
            if old != "1":
                with open(BPF_STATS_SYSCTL, "w") as f:
                    f.write("1")
                self.restore = old
            self.enabled = True
        except OSError:
            self.enabled = False
        return self.enabled

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.restore is not None:
            try:
                with open(BPF_STATS_SYSCTL, "w") as f:
                    f.write(self.restore)
            except OSError:
                pass
            self.restore = None
        self.enabled = False


def _enable_stats_fd() -> Optional[int]:
    import ctypes
    import platform

    nr = NR_BPF.get(platform.machine())
    if nr is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 32)()  # union bpf_attr; enable_stats.type is its first field
    attr[0] = BPF_STATS_RUN_TIME
    fd = libc.syscall(ctypes.c_long(nr), ctypes.c_int(BPF_ENABLE_STATS), attr,
                      ctypes.c_uint(ctypes.sizeof(attr)))
    return fd if fd >= 0 else None


def parse_prog_fdinfo(text: str) -> Optional[tuple]:
    """(run_time_ns, run_cnt) from /proc/PID/fdinfo/FD of a BPF program (5.1+)."""
    vals = {}
    for line in text.splitlines():
        key, _, v = line.partition(":")
        if key in ("run_time_ns", "run_cnt"):
            vals[key] = int(v.strip())
    if len(vals) < 2:
        return None
    return vals["run_time_ns"], vals["run_cnt"]


def parse_recursion_misses(text: str) -> Optional[int]:
    """Runs of a BPF program that the kernel skipped because the program was
    already running on that CPU (fdinfo's recursion_misses, 5.12+)."""
    for line in text.splitlines():
        key, _, v = line.partition(":")
        if key == "recursion_misses":
            return int(v.strip())
    return None


def _prog_fdinfos(fds):
    """The fdinfo text of each BPF program fd of this process that has one."""
    for fd in fds:
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                yield f.read()
        except OSError:
            continue


def prog_skipped_runs(fds) -> Optional[int]:
    """recursion_misses summed over BPF program fds of this process; None
    when the kernel does not report them."""
    got = [n for n in map(parse_recursion_misses, _prog_fdinfos(fds)) if n is not None]
    return sum(got) if got else None


def prog_run_stats(fds) -> Optional[dict]:
    """Sum of run time and runs over BPF program fds of this process."""
    got = [x for x in map(parse_prog_fdinfo, _prog_fdinfos(fds)) if x]
    if not got:
        return None
    return {"run_time_ns": sum(t for t, _ in got), "run_cnt": sum(n for _, n in got)}


def symbol_addr(name: str, path: str = KALLSYMS) -> Optional[int]:
    """The address of a symbol of any kind (data too), e.g. work_exited;
    None when absent or hidden (kptr_restrict, no CONFIG_KALLSYMS_ALL)."""
    m = re.search(rf"^([0-9a-f]+) \w {re.escape(name)}$", kallsyms_text(path) or "", re.M)
    return (int(m.group(1), 16) or None) if m else None


def vmlinux_symbols(path: str = KALLSYMS) -> set:
    """Names of text symbols of vmlinux itself (not modules): what a
    KFUNC_PROBE without a module can attach to."""
    return Kallsyms.load(path).vmlinux


def forget_kallsyms() -> None:
    """Drops the kallsyms text (megabytes) once start-up is done; the parsed
    symbols stay (callback names, stacks)."""
    _kallsyms_cache.clear()


def preemption_model(cmdline: Optional[str] = None, config: Optional[str] = None,
                     debugfs: Optional[str] = None) -> Optional[str]:
    """How the running kernel preempts kernel code: "none", "voluntary",
    "full", "lazy" or "rt"; None when it cannot be told.  A preemptible
    kernel can switch away from a thread inside a fentry program, whose
    per-CPU recursion guard then skips every other thread's run of it."""
    if debugfs is None:
        debugfs = _read("/sys/kernel/debug/sched/preempt")
    if debugfs:  # "none (voluntary) full lazy": the current one in parentheses
        for word in debugfs.split():
            if word.startswith("(") and word.endswith(")"):
                return word.strip("()")
    if config is None:
        config = kernel_config()
    if config is None:
        return None
    opts = {line.split("=")[0] for line in config.splitlines() if line.endswith("=y")}
    if "CONFIG_PREEMPT_RT" in opts:
        return "rt"
    if cmdline is None:
        cmdline = _read("/proc/cmdline") or ""
    if "CONFIG_PREEMPT_DYNAMIC" in opts:
        for arg in cmdline.split():
            if arg.startswith("preempt=") and arg[8:] in ("none", "voluntary", "full", "lazy"):
                return arg[8:]
    for opt, model in (("CONFIG_PREEMPT_LAZY", "lazy"), ("CONFIG_PREEMPT", "full"),
                       ("CONFIG_PREEMPT_VOLUNTARY", "voluntary"), ("CONFIG_PREEMPT_NONE", "none")):
        if opt in opts:
            return model
    return None


def kernel_config() -> Optional[str]:
    rel = os.uname().release
    text = _read(f"/boot/config-{rel}") or _read(f"/lib/modules/{rel}/config")
    if text:
        return text
    try:
        import gzip
        with gzip.open("/proc/config.gz", "rt") as f:
            return f.read()
    except OSError:
        return None


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SOCKET_FILTER = 1


def prog_recursion_guard() -> Optional[bool]:
    """Whether the kernel guards each BPF program against running inside
    itself on one CPU and counts what it skips (recursion_misses, 5.12+; the
    same release brought compare-and-swap to BPF).  Told by loading the
    smallest program there is and reading its fdinfo; None if that fails."""
    import ctypes
    import platform

    nr = NR_BPF.get(platform.machine())
    if nr is None:
        return None
    insns = (ctypes.c_uint64 * 2)(0x00000000000000b7, 0x0000000000000095)  # r0 = 0; exit
    lic = ctypes.create_string_buffer(b"GPL")
    attr = (ctypes.c_uint64 * 16)()
    attr[0] = BPF_PROG_TYPE_SOCKET_FILTER | (2 << 32)  # prog_type, insn_cnt
    attr[1] = ctypes.addressof(insns)
    attr[2] = ctypes.addressof(lic)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(ctypes.c_long(nr), ctypes.c_int(BPF_PROG_LOAD), attr,
                      ctypes.c_uint(ctypes.sizeof(attr)))
    if fd < 0:
        return None
    try:
        text = _read(f"/proc/self/fdinfo/{fd}") or ""
    finally:
        os.close(fd)
    return parse_recursion_misses(text) is not None


def kprobe_skips_counted(release: Optional[str] = None) -> Optional[bool]:
    """Whether the kernel counts kprobe BPF runs it skips (a program of the
    kind already running on that CPU) in recursion_misses, as it does since
    6.7; told from the running kernel's own bpf.h, which then declares the
    helper that counts them.  None when the headers cannot be read."""
    rel = release or os.uname().release
    for d in ("source", "build"):
        text = _read(f"/lib/modules/{rel}/{d}/include/linux/bpf.h")
        if text:
            return "bpf_prog_inc_misses_counters" in text
    return None
