"""`twtrace doctor`: can this host be traced, and if not, what exactly to fix.

Two layers, so the logic is testable without root or a kernel that traces:

* gather() reads the host (through a Host whose root can be a fake /proc and
  /sys tree) plus two live probes that only make sense on the real host:
  importing bcc, and loading + attaching a trivial fentry program to
  task_work_run through the raw bpf() syscall. Anything unreadable is None
  ("unknown"); nothing here raises.
* check_*() are pure functions of the Facts, each returning a Check with a
  status (ok / warn / fail / info), a one-line finding and, when something is
  missing, the exact fix. verdict() turns the checks into can-trace / probe
  mode / the one-line reason.

Features are detected from kallsyms, BTF and the kernel config, never from the
kernel version (distributions backport).
"""
from __future__ import annotations

import ctypes
import errno
import gzip
import json
import os
import re
import struct
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from twtrace import btf
from twtrace.kernel import kallsyms_text

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"

CAP_SYS_ADMIN, CAP_SYSLOG, CAP_PERFMON, CAP_BPF = 21, 34, 38, 39

# kallsyms names doctor cares about
TASK_WORK_CORE = ("task_work_add", "task_work_run")
TASK_WORK_CANCEL = ("task_work_cancel", "task_work_cancel_func", "task_work_cancel_match")
RINGBUF_SYMS = ("bpf_ringbuf_output", "ringbuf_map_alloc")
TRAMPOLINE_SYM = "bpf_trampoline_link_prog"  # what bcc's support_kfunc() looks for
KSYMS_OF_INTEREST = TASK_WORK_CORE + TASK_WORK_CANCEL + RINGBUF_SYMS + (TRAMPOLINE_SYM,)

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
KPROBE_BLACKLIST = "/sys/kernel/debug/kprobes/blacklist"
BTF_VMLINUX = "/sys/kernel/btf/vmlinux"
KHEADERS = "/sys/kernel/kheaders.tar.xz"
LOCKDOWN = "/sys/kernel/security/lockdown"
CLOCKSOURCE = "/sys/devices/system/clocksource/clocksource0/current_clocksource"
# clocksources that advance only once per timer tick
TICK_CLOCKS = ("jiffies", "refined-jiffies")
EFI_SECUREBOOT = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0f86b3b3b14"
# where distributions put bcc for their own Python (seen when ours cannot import it)
BCC_DIST_GLOBS = ("/usr/lib/python3/dist-packages/bcc", "/usr/lib/python3.*/site-packages/bcc",
                  "/usr/lib64/python3.*/site-packages/bcc")


# ---------------------------------------------------------------------------
# reading the host

class Host:
    """File access below `root` ("/" for the real host); every read returns
    None instead of raising."""

    def __init__(self, root: str = "/"):
        self.root = root

    def path(self, p: str) -> str:
        return os.path.join(self.root, p.lstrip("/")) if self.root != "/" else p

    def read(self, p: str) -> Optional[str]:
        try:
            with open(self.path(p), "rb") as f:
                data = f.read()
        except (OSError, ValueError):
            return None
        if p.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, ValueError):
                return None
        return data.decode("utf-8", "replace")

    def read_bytes(self, p: str) -> Optional[bytes]:
        try:
            with open(self.path(p), "rb") as f:
                return f.read()
        except (OSError, ValueError):
            return None

    def exists(self, p: str) -> bool:
        try:
            return os.path.exists(self.path(p))
        except (OSError, ValueError):
            return False

    def isdir(self, p: str) -> bool:
        try:
            return os.path.isdir(self.path(p))
        except (OSError, ValueError):
            return False

    def listdir(self, p: str) -> Optional[List[str]]:
        try:
            return sorted(os.listdir(self.path(p)))
        except (OSError, ValueError):
            return None

    def glob(self, pattern: str) -> List[str]:
        import glob as _glob

        try:
            hits = _glob.glob(self.path(pattern))
        except (OSError, ValueError):
            return []
        if self.root == "/":
            return sorted(hits)
        return sorted("/" + os.path.relpath(h, self.root) for h in hits)


@dataclass
class BccInfo:
    importable: bool
    version: Optional[str] = None
    error: Optional[str] = None
    support_kfunc: Optional[bool] = None
    python: str = ""  # the interpreter doctor runs under
    installed_at: Optional[str] = None  # a bcc package dir this Python does not see


@dataclass
class FentryTrial:
    ok: Optional[bool]  # None: not tried
    detail: str = ""


@dataclass
class Facts:
    release: str
    machine: str
    uid: Optional[int] = None
    cap_eff: Optional[int] = None
    config: Optional[Dict[str, str]] = None  # CONFIG_X -> "y"/"m"/"n"/value
    config_source: Optional[str] = None
    ksyms: Optional[Set[str]] = None  # the KSYMS_OF_INTEREST present; None = unreadable
    kprobe_blacklist: Optional[Set[str]] = None
    kprobe_pmu: Optional[bool] = None  # /sys/bus/event_source/devices/kprobe
    kprobe_events: Optional[bool] = None  # tracefs kprobe_events file
    tracefs_mounted: bool = False
    btf: bool = False
    headers: Optional[str] = None  # where bcc will find them
    kheaders_module: bool = False
    lockdown: Optional[str] = None  # none / integrity / confidentiality
    lockdown_source: Optional[str] = None
    sysctls: Dict[str, Optional[str]] = field(default_factory=dict)
    distro: Optional[str] = None  # "debian" / "fedora" / None
    distro_name: Optional[str] = None
    bcc: BccInfo = field(default_factory=lambda: BccInfo(importable=False, error="not checked"))
    fentry: FentryTrial = field(default_factory=lambda: FentryTrial(None))
    clocksource: Optional[str] = None
    # "group/name" of kprobes dead bcc processes left in tracefs (twtrace/leftovers.py)
    stale_probes: List[str] = field(default_factory=list)

    @property
    def privileged(self) -> Optional[bool]:
        if self.cap_eff is None:
            return None if self.uid is None else self.uid == 0
        return _has(self.cap_eff, CAP_SYS_ADMIN) or (
            _has(self.cap_eff, CAP_BPF) and _has(self.cap_eff, CAP_PERFMON))


def _has(caps: int, bit: int) -> bool:
    return bool(caps >> bit & 1)


def parse_config(text: str) -> Dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"# (CONFIG_\w+) is not set$", line)
        if m:
            out[m.group(1)] = "n"
        elif line.startswith("CONFIG_") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v.strip('"')
    return out


def parse_status(text: str) -> Tuple[Optional[int], Optional[int]]:
    """(effective uid, CapEff) from /proc/self/status."""
    uid = cap = None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            parts = line.split()
            if len(parts) > 2 and parts[2].isdigit():
                uid = int(parts[2])
        elif line.startswith("CapEff:"):
            try:
                cap = int(line.split()[1], 16)
            except (IndexError, ValueError):
                pass
    return uid, cap


def parse_lockdown(text: str) -> Optional[str]:
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def _lockdown(host: Host, config: Optional[Dict[str, str]]) -> Tuple[Optional[str], Optional[str]]:
    text = host.read(LOCKDOWN)
    if text is not None and parse_lockdown(text):
        return parse_lockdown(text), LOCKDOWN
    # securityfs not mounted (common in VMs and containers): the boot
    # parameter, then what the kernel config forces.
    cmdline = host.read("/proc/cmdline") or ""
    m = re.search(r"(?:^|\s)lockdown=(integrity|confidentiality)\b", cmdline)
    if m:
        return m.group(1), "lockdown= on the kernel command line"
    if config:
        for level in ("confidentiality", "integrity"):
            key = f"CONFIG_LOCK_DOWN_KERNEL_FORCE_{level.upper()}"
            if config.get(key) == "y":
                return level, "forced by the kernel config"
        if config.get("CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT") == "y":
            sb = host.read_bytes(EFI_SECUREBOOT)
            if sb is not None and len(sb) >= 5:
                return ("integrity" if sb[4] == 1 else "none"), "EFI Secure Boot state"
            if not host.isdir("/sys/firmware/efi"):
                return "none", "kernel config, not booted through EFI"
            return None, None
        if config.get("CONFIG_SECURITY_LOCKDOWN_LSM") in (None, "n"):
            return "none", "kernel config, no lockdown LSM"
        if config.get("CONFIG_LOCK_DOWN_KERNEL_FORCE_NONE") == "y":
            return "none", "kernel config"
    return None, None


def _ksyms(host: Host) -> Optional[Set[str]]:
    if host.root == "/":  # the live host: the loader parses the same text anyway
        from twtrace.kernel import Kallsyms

        syms = Kallsyms.load()
        if syms.addrs:  # (empty when kptr_restrict hides the addresses)
            return {n for n in KSYMS_OF_INTEREST if n in syms}
    text = kallsyms_text() if host.root == "/" else host.read("/proc/kallsyms")
    if not text:
        return None
    names = "|".join(re.escape(n) for n in KSYMS_OF_INTEREST)
    return set(re.findall(rf"^\S+ \w ({names})$", text, re.M))


def _blacklist(host: Host) -> Optional[Set[str]]:
    text = host.read(KPROBE_BLACKLIST)
    if text is None:
        return None
    return {line.split()[-1] for line in text.splitlines() if line.split()}


def _headers(host: Host, release: str, config: Optional[Dict[str, str]]) -> Tuple[Optional[str], bool]:
    env = os.environ.get("BCC_KERNEL_SOURCE") if host.root == "/" else None
    if env and host.isdir(os.path.join(env, "include")):
        return f"{env} (BCC_KERNEL_SOURCE)", False
    for sub in ("build", "source"):
        d = f"/lib/modules/{release}/{sub}"
        if host.isdir(d + "/include"):
            return d, False
    if host.exists(KHEADERS):
        return f"{KHEADERS} (CONFIG_IKHEADERS)", False
    module = bool(host.glob(f"/lib/modules/{release}/kernel/kernel/kheaders.ko*"))
    if module and (config or {}).get("CONFIG_IKHEADERS") in ("m", None):
        return "kheaders module (bcc loads it: modprobe kheaders)", True
    return None, False


def _distro(host: Host) -> Tuple[Optional[str], Optional[str]]:
    text = host.read("/etc/os-release") or ""
    kv = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', text, re.M))
    ids = {kv.get("ID", "")} | set(kv.get("ID_LIKE", "").split())
    family = None
    if ids & {"debian", "ubuntu"}:
        family = "debian"
    elif ids & {"fedora", "rhel", "centos"}:
        family = "fedora"
    return family, kv.get("PRETTY_NAME") or None


def probe_bcc(host: Host) -> BccInfo:
    info = BccInfo(importable=False, python=sys.executable)
    try:
        import bcc  # noqa: F401
        from bcc import BPF
    except Exception as e:  # ImportError, missing libbcc (OSError), anything
        info.error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        for pattern in BCC_DIST_GLOBS:
            hits = host.glob(pattern)
            if hits:
                info.installed_at = hits[0]
                break
        return info
    info.importable = True
    info.version = getattr(bcc, "__version__", None)
    try:
        from twtrace.loader import bcc_support_kfunc

        info.support_kfunc = bcc_support_kfunc()
    except Exception:
        info.support_kfunc = None
    return info


# -- the fentry trial ---------------------------------------------------------
def btf_func_id(data: bytes, name: str) -> Optional[int]:
    """Type id of the FUNC called `name` in raw BTF, or None."""
    try:
        return btf.parse(data).find_func(name)
    except btf.BTFError:
        return None


_NR_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "loongarch64": 280,
           "ppc64le": 361, "ppc64": 361, "s390x": 351}
BPF_PROG_LOAD, BPF_RAW_TRACEPOINT_OPEN = 5, 17
BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY = 26, 24


def probe_fentry(host: Host, machine: str, func: str = "task_work_run") -> FentryTrial:
    """Load `r0 = 0; exit` as an fentry program on `func` and attach it for an
    instant: the only reliable answer (config and bcc's support_kfunc() both
    say yes on kernels whose security policy refuses tracing programs)."""
    nr = _NR_BPF.get(machine)
    if nr is None:
        return FentryTrial(None, f"no bpf() syscall number known for {machine}")
    data = host.read_bytes(BTF_VMLINUX)
    if not data:
        return FentryTrial(None, "no kernel BTF")
    try:
        btf_id = btf_func_id(data, func)
    except struct.error:
        btf_id = None
    del data
    if btf_id is None:
        return FentryTrial(False, f"{func} not found in the kernel BTF")
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except Exception:
        pass  # only matters before 5.11; the load below says if it was needed
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        insns = (ctypes.c_uint64 * 2)(0x00000000000000B7, 0x0000000000000095)  # mov r0, 0; exit
        lic = ctypes.create_string_buffer(b"GPL")
        log = ctypes.create_string_buffer(4096)
        attr = ctypes.create_string_buffer(128)
        # union bpf_attr, BPF_PROG_LOAD: ... expected_attach_type @68, attach_btf_id @108
        struct.pack_into("=IIQQIIQII16sIIIIQIIQIII", attr, 0,
                         BPF_PROG_TYPE_TRACING, 2, ctypes.addressof(insns), ctypes.addressof(lic),
                         1, len(log), ctypes.addressof(log), 0, 0, b"twtrace_doctor",
                         0, BPF_TRACE_FENTRY, 0, 0, 0, 0, 0, 0, 0, btf_id, 0)
        fd = libc.syscall(nr, BPF_PROG_LOAD, attr, len(attr))
        if fd < 0:
            e = ctypes.get_errno()
            msg = log.value.decode(errors="replace").strip().splitlines()
            return FentryTrial(False, f"the kernel refused a BPF tracing program "
                                      f"({errno.errorcode.get(e, e)}: {os.strerror(e)})"
                                      + (f": {msg[-1]}" if msg else ""))
        try:
            link = ctypes.create_string_buffer(16)
            struct.pack_into("=QI", link, 0, 0, fd)  # raw_tracepoint.name = NULL, prog_fd
            lfd = libc.syscall(nr, BPF_RAW_TRACEPOINT_OPEN, link, len(link))
            if lfd < 0:
                e = ctypes.get_errno()
                return FentryTrial(False, f"the kernel loaded but would not attach an fentry "
                                          f"program to {func} ({errno.errorcode.get(e, e)}: "
                                          f"{os.strerror(e)})")
            os.close(lfd)
        finally:
            os.close(fd)
    except Exception as e:
        return FentryTrial(None, f"could not run the test: {e}")
    return FentryTrial(True, f"a test fentry program attached to {func}")


def gather(root: str = "/", *, release: Optional[str] = None, machine: Optional[str] = None,
           bcc_probe: Optional[Callable[[Host], BccInfo]] = None,
           fentry_probe: Optional[Callable[[Host, str], FentryTrial]] = None) -> Facts:
    """Read everything doctor needs. With root != "/" (a fake tree in tests)
    the live probes run only when passed in."""
    host = Host(root)
    live = root == "/"
    uname = os.uname()
    release = release or (host.read("/proc/sys/kernel/osrelease") or "").strip() or uname.release
    machine = machine or uname.machine
    f = Facts(release=release, machine=machine)

    status = host.read("/proc/self/status")
    if status:
        f.uid, f.cap_eff = parse_status(status)
    elif live:
        f.uid = os.geteuid()

    for src in ("/proc/config.gz", f"/boot/config-{release}"):
        text = host.read(src)
        if text and "CONFIG_" in text:
            f.config, f.config_source = parse_config(text), src
            break

    f.ksyms = _ksyms(host)
    f.kprobe_blacklist = _blacklist(host)
    if host.isdir("/sys/bus/event_source/devices"):
        f.kprobe_pmu = host.exists("/sys/bus/event_source/devices/kprobe")
    for d in TRACEFS_DIRS:
        if host.listdir(d):
            f.tracefs_mounted = True
            f.kprobe_events = host.exists(d + "/kprobe_events")
            break
    f.btf = host.exists(BTF_VMLINUX)
    f.headers, f.kheaders_module = _headers(host, release, f.config)
    f.lockdown, f.lockdown_source = _lockdown(host, f.config)
    for name in ("unprivileged_bpf_disabled", "perf_event_paranoid", "kptr_restrict"):
        v = host.read(f"/proc/sys/kernel/{name}")
        f.sysctls[name] = v.strip() if v is not None else None
    f.distro, f.distro_name = _distro(host)
    f.clocksource = (host.read(CLOCKSOURCE) or "").strip() or None
    from twtrace import leftovers

    f.stale_probes = [p.event for p in leftovers.find_stale(root)]

    bcc_probe = bcc_probe or (probe_bcc if live else None)
    if bcc_probe:
        f.bcc = bcc_probe(host)
    fentry_probe = fentry_probe or (probe_fentry if live else None)
    if fentry_probe is None:
        f.fentry = FentryTrial(None, "not tried")
    elif not f.privileged:
        f.fentry = FentryTrial(None, "needs root to try")
    elif _fentry_blocker(f) is None:  # only attach when nothing else rules fentry out
        f.fentry = fentry_probe(host, machine)
    return f


# ---------------------------------------------------------------------------
# checks: pure functions of Facts

@dataclass
class Check:
    name: str
    status: str
    finding: str
    fix: str = ""


def _cfg(f: Facts, key: str) -> Optional[str]:
    return None if f.config is None else f.config.get(key, "n")


def _pkg_hint(f: Facts, debian: str, fedora: str) -> str:
    if f.distro == "debian":
        return debian
    if f.distro == "fedora":
        return fedora
    return f"{debian} (Debian/Ubuntu) or {fedora} (Fedora)"


def check_privileges(f: Facts) -> Check:
    name = "privileges"
    if f.cap_eff is None:
        if f.uid == 0:
            return Check(name, OK, "running as root (capabilities unreadable)")
        return Check(name, WARN if f.uid is None else FAIL,
                     "could not read /proc/self/status" if f.uid is None else f"not root (uid {f.uid})",
                     "run it as root: sudo twtrace …")
    who = "root" if f.uid == 0 else f"uid {f.uid}"
    if _has(f.cap_eff, CAP_SYS_ADMIN):
        return Check(name, OK, f"{who} with CAP_SYS_ADMIN")
    if _has(f.cap_eff, CAP_BPF) and _has(f.cap_eff, CAP_PERFMON):
        note = "" if _has(f.cap_eff, CAP_SYSLOG) else \
            "; without CAP_SYSLOG kallsyms hides addresses, so callbacks may show as hex"
        return Check(name, OK if not note else WARN, f"{who} with CAP_BPF and CAP_PERFMON{note}",
                     "" if not note else "run it as root: sudo twtrace …")
    if f.uid == 0:
        return Check(name, FAIL, "root, but without CAP_SYS_ADMIN or CAP_BPF+CAP_PERFMON "
                                 "(a container or a capability-dropping sandbox?)",
                     "run the container with --privileged (or --cap-add SYS_ADMIN), "
                     "or outside the sandbox")
    return Check(name, FAIL, f"not root ({who}, no CAP_SYS_ADMIN or CAP_BPF+CAP_PERFMON)",
                 "run it as root: sudo twtrace …")


def check_bcc(f: Facts) -> Check:
    name = "bcc"
    b = f.bcc
    if b.importable:
        kf = {True: "support_kfunc() yes", False: "support_kfunc() no", None: ""}[b.support_kfunc]
        kf = kf if f.privileged else ""
        return Check(name, OK, f"bcc {b.version or '(unknown version)'} importable"
                               + (f"; {kf}" if kf else ""))
    install = _pkg_hint(f, "apt-get install python3-bpfcc", "dnf install python3-bcc")
    venv = ("bcc comes with the distribution's own Python: run twtrace from a venv made with "
            "`/usr/bin/python3 -m venv --system-site-packages .venv` (scripts/setup does this)")
    if b.installed_at:
        return Check(name, FAIL, f"bcc is installed ({b.installed_at}) but {b.python or 'this Python'} "
                                 f"cannot import it",
                     venv)
    return Check(name, FAIL, f"bcc not importable ({b.error or 'not installed'})",
                 f"{install}; {venv}")


def check_kprobes(f: Facts) -> Check:
    name = "kprobes"
    cfg = _cfg(f, "CONFIG_KPROBES")
    if cfg == "n":
        return Check(name, FAIL, "kernel built without kprobes (CONFIG_KPROBES is not set)",
                     "kprobes cannot be turned on at run time: boot a kernel built with "
                     "CONFIG_KPROBES=y (every major distribution's kernel is)")
    blacklisted = sorted(set(TASK_WORK_CORE) & (f.kprobe_blacklist or set()))
    if blacklisted:
        return Check(name, FAIL, f"{', '.join(blacklisted)} on the kprobe blacklist "
                                 f"({KPROBE_BLACKLIST})",
                     "these functions cannot be kprobed on this kernel; use a kernel with fentry "
                     "support (BTF + trampolines)")
    evidence = []
    if cfg in ("y", "m"):
        evidence.append("CONFIG_KPROBES=y")
    if f.kprobe_pmu:
        evidence.append("kprobe PMU")
    if f.kprobe_events:
        evidence.append("kprobe_events")
    if evidence:
        bl = "" if f.kprobe_blacklist is None else "; task_work_add/run not blacklisted"
        return Check(name, OK, ", ".join(evidence) + bl)
    if f.kprobe_pmu is False and f.tracefs_mounted:
        return Check(name, FAIL, "no kprobe support found (no kprobe PMU, no kprobe_events in tracefs)",
                     "boot a kernel built with CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y")
    return Check(name, WARN, "could not confirm kprobes (no readable kernel config, no kprobe PMU "
                             "entry, tracefs not mounted)",
                 "mount tracefs (mount -t tracefs nodev /sys/kernel/tracing) to let doctor check")


def check_symbols(f: Facts) -> Check:
    name = "task_work symbols"
    if f.ksyms is None:
        return Check(name, WARN, "/proc/kallsyms unreadable", "run it as root: sudo twtrace …")
    missing = [s for s in TASK_WORK_CORE if s not in f.ksyms]
    if missing:
        return Check(name, FAIL, f"{' and '.join(missing)} not in /proc/kallsyms "
                                 f"(kernel without CONFIG_KALLSYMS, or the function was inlined/renamed)",
                     "use a kernel with CONFIG_KALLSYMS=y where task_work_add/task_work_run are "
                     "real functions (all mainline kernels since 2.6.36)")
    return Check(name, OK, "task_work_add and task_work_run in /proc/kallsyms")


def check_btf(f: Facts) -> Check:
    name = "BTF"
    if f.btf:
        return Check(name, OK, f"{BTF_VMLINUX} present")
    cfg = _cfg(f, "CONFIG_DEBUG_INFO_BTF")
    why = " (CONFIG_DEBUG_INFO_BTF is not set)" if cfg == "n" else ""
    return Check(name, WARN, f"no kernel BTF{why}: fentry/fexit unavailable, kprobes are used",
                 "for fentry mode boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian ≥ 11, "
                 "Ubuntu ≥ 20.10, Fedora ≥ 31 ship it)")


def _fentry_blocker(f: Facts) -> Optional[Tuple[str, str]]:
    """(finding, fix) for the first thing that rules fentry out, else None."""
    if f.machine != "x86_64" and f.bcc.importable:
        return (f"bcc uses fentry only on x86_64 (BPF.support_kfunc() is False on {f.machine})", "")
    # without root kallsyms shows no addresses and support_kfunc() says False
    # whatever the kernel can do: trust it only when privileged
    if f.bcc.importable and f.bcc.support_kfunc is False and f.privileged:
        return ("bcc's BPF.support_kfunc() is False (no BPF trampoline in this kernel)",
                "fentry needs a 5.5+ kernel with BTF and BPF trampolines")
    if not f.btf:
        return ("no kernel BTF", "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y")
    if _cfg(f, "CONFIG_DEBUG_INFO_BTF") == "n":
        return ("CONFIG_DEBUG_INFO_BTF is not set", "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y")
    if _cfg(f, "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") == "n":
        return ("no BPF trampolines on kernel functions "
                "(CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS is not set)",
                "boot a kernel built with CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y")
    if f.ksyms is not None and TRAMPOLINE_SYM not in f.ksyms:
        return (f"no BPF trampoline ({TRAMPOLINE_SYM} not in /proc/kallsyms)",
                "fentry needs a 5.5+ kernel with BPF trampolines")
    return None


def check_fentry(f: Facts) -> Check:
    name = "fentry/fexit"
    blocker = _fentry_blocker(f)
    if blocker:
        finding, fix = blocker
        return Check(name, WARN, f"{finding}; twtrace falls back to kprobes", fix)
    if f.fentry.ok is False:
        fix = ("a security policy (BPF LSM, SELinux, a VM or container sandbox) refuses BPF "
               "tracing programs here; fentry mode needs a host without that restriction"
               if "EPERM" in f.fentry.detail or "EACCES" in f.fentry.detail else "")
        return Check(name, WARN, f"{f.fentry.detail}; twtrace falls back to kprobes", fix)
    kf = "bcc support_kfunc() yes, " if f.bcc.support_kfunc and f.privileged else ""
    if f.fentry.ok:
        return Check(name, OK, f"BTF, {kf}{f.fentry.detail}")
    # not tried: unprivileged (then nothing traces anyway), or no way to try
    return Check(name, OK if f.privileged else WARN, f"BTF and BPF trampolines present, {kf}"
                 f"not tried ({f.fentry.detail or 'unknown'})")


def check_headers(f: Facts) -> Check:
    name = "kernel headers"
    if f.headers:
        return Check(name, OK, f.headers)
    hint = _pkg_hint(f, f"apt-get install linux-headers-{f.release}",
                     f"dnf install kernel-devel-{f.release}")
    return Check(name, FAIL, f"no kernel headers for {f.release} (bcc cannot compile without them)",
                 f"{hint}; if the distribution does not package this kernel, a kernel built with "
                 f"CONFIG_IKHEADERS provides them at {KHEADERS}")


def check_ringbuf(f: Facts) -> Check:
    name = "ring buffer"
    if f.ksyms is None:
        return Check(name, WARN, "unknown (/proc/kallsyms unreadable); the perf buffer is the fallback")
    if f.ksyms & set(RINGBUF_SYMS):
        return Check(name, OK, "BPF ring buffer available")
    return Check(name, WARN, "no BPF ring buffer (kernel before 5.8): events go through the per-CPU "
                             "perf buffer", "a 5.8+ kernel gives one ordered ring buffer")


def check_lockdown(f: Facts) -> Check:
    name = "lockdown"
    src = f" ({f.lockdown_source})" if f.lockdown_source and f.lockdown_source != LOCKDOWN else ""
    if f.lockdown == "confidentiality":
        return Check(name, FAIL, f"kernel lockdown is in confidentiality mode{src}: kprobes, "
                                 "BPF reads of kernel memory and tracefs are blocked",
                     "lockdown cannot be relaxed at run time: boot without lockdown=confidentiality "
                     "(or a kernel not built with CONFIG_LOCK_DOWN_KERNEL_FORCE_CONFIDENTIALITY)")
    if f.lockdown == "integrity":
        return Check(name, OK, f"integrity{src}: does not block kprobes or BPF reads "
                               "(confidentiality would)")
    if f.lockdown == "none":
        return Check(name, OK, f"not locked down{src}")
    return Check(name, INFO, f"unknown ({LOCKDOWN} unreadable)",
                 "mount -t securityfs securityfs /sys/kernel/security to let doctor read it")


def check_clock(f: Facts) -> Check:
    name = "clock"
    if f.clocksource is None:
        return Check(name, INFO, f"unknown ({CLOCKSOURCE} unreadable)")
    if f.clocksource in TICK_CLOCKS:
        hz = _cfg(f, "CONFIG_HZ")
        step = f"{1000 // int(hz)} ms" if hz and hz.isdigit() else "one timer tick"
        return Check(name, WARN, f"clocksource is {f.clocksource}: every timestamp moves in steps "
                                 f"of {step}, so shorter latencies and run times read as 0",
                     "the kernel could not calibrate its TSC; check dmesg for 'tsc:' and boot "
                     "with a working TSC, HPET or ACPI PM timer")
    return Check(name, OK, f"clocksource {f.clocksource}")


def check_cancel_variants(f: Facts) -> Check:
    name = "cancel variants"
    if f.ksyms is None:
        return Check(name, INFO, "unknown (/proc/kallsyms unreadable)")
    present = [s for s in TASK_WORK_CANCEL if s in f.ksyms]
    return Check(name, INFO, ", ".join(present) if present else "none in /proc/kallsyms")


def check_sysctls(f: Facts) -> Check:
    s = f.sysctls
    parts = [f"{k}={s.get(k) if s.get(k) is not None else '?'}"
             for k in ("unprivileged_bpf_disabled", "perf_event_paranoid")]
    return Check("sysctls", INFO, ", ".join(parts) + " (matter only without root)")


def check_leftovers(f: Facts) -> Check:
    name = "leftover probes"
    n = len(f.stale_probes)
    if not n:
        return Check(name, OK, "no kprobes left behind by dead bcc processes")
    sample = ", ".join(f.stale_probes[:3]) + (", …" if n > 3 else "")
    return Check(name, WARN, f"{n} kprobe{'s' if n > 1 else ''} left in kprobe_events by "
                             f"processes that died without cleaning up ({sample})",
                 "twtrace record or top removes them when it starts; or write "
                 "-:GROUP/NAME for each to kprobe_events")


CHECKS = (check_privileges, check_bcc, check_kprobes, check_symbols, check_btf, check_fentry,
          check_headers, check_ringbuf, check_lockdown, check_clock, check_cancel_variants,
          check_sysctls, check_leftovers)


def run_checks(f: Facts) -> List[Check]:
    checks = [c(f) for c in CHECKS]
    by = {c.name: c for c in checks}
    if by["fentry/fexit"].status == OK and by["kprobes"].status == FAIL:
        k = by["kprobes"]
        k.status, k.finding = WARN, k.finding + "; fentry mode does not need them"
    return checks


def verdict(checks: Sequence[Check]) -> Tuple[bool, Optional[str], Optional[str]]:
    """(can_trace, probe_mode, reason). The reason is the most fundamental
    blocker: privileges, bcc and lockdown first, then the lack of any probe
    mechanism (nothing to install fixes that), then missing symbols/headers."""
    by = {c.name: c for c in checks}
    mode = None
    if by["fentry/fexit"].status == OK:
        mode = "fentry"
    elif by["kprobes"].status in (OK, WARN):
        mode = "kprobe"
    order = ["privileges", "bcc", "lockdown", "probe mode", "task_work symbols", "kernel headers"]
    for name in order:
        if name == "probe mode":
            if mode is None:
                return False, None, by["kprobes"].finding
        elif by[name].status == FAIL:
            return False, None, by[name].finding
    return True, mode, None


def diagnose(facts: Optional[Facts] = None) -> Tuple[List[Check], bool, Optional[str], Optional[str]]:
    facts = facts if facts is not None else gather()
    checks = run_checks(facts)
    return (checks, *verdict(checks))


def can_trace_reason() -> Optional[str]:
    """None when twtrace can trace this host, else one line saying why not."""
    try:
        _, ok, _, reason = diagnose()
    except Exception:  # a bug here must not stop a trace that could work
        return None
    return None if ok else reason


def verdict_line(ok: bool, mode: Optional[str], reason: Optional[str]) -> str:
    if ok:
        return f"twtrace can trace this host (probe mode: {mode})"
    return f"twtrace cannot trace this host: {reason}"


# ---------------------------------------------------------------------------
# output

STYLE = {OK: "green", WARN: "yellow", FAIL: "bold red", INFO: "cyan"}


def render(facts: Facts, checks: Sequence[Check], ok: bool, mode: Optional[str],
           reason: Optional[str], console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console(highlight=False)
    head = f"twtrace doctor: kernel {facts.release} {facts.machine}"
    if facts.distro_name:
        head += f", {facts.distro_name}"
    console.print(Text(head, style="bold"))
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("finding")
    for c in checks:
        table.add_row(c.name, Text(c.status, style=STYLE.get(c.status, "")), Text(c.finding))
    console.print(table)
    fixes = [c for c in checks if c.fix and c.status in (FAIL, WARN)]
    if fixes:
        console.print()
        console.print(Text("To fix:", style="bold"))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column()
        for c in fixes:
            grid.add_row(Text(f"  {c.name}:", style=STYLE.get(c.status, "")), Text(c.fix))
        console.print(grid)
    console.print()
    console.print(Text(verdict_line(ok, mode, reason), style="bold green" if ok else "bold red"),
                  soft_wrap=True)


def to_json(facts: Facts, checks: Sequence[Check], ok: bool, mode: Optional[str],
            reason: Optional[str]) -> dict:
    return {"checks": [asdict(c) for c in checks], "can_trace": ok, "probe_mode": mode,
            "reason": reason, "kernel": facts.release, "arch": facts.machine}


def main(json_out: bool = False) -> int:
    facts = gather()
    checks, ok, mode, reason = diagnose(facts)
    if json_out:
        print(json.dumps(to_json(facts, checks, ok, mode, reason), indent=2))
    else:
        render(facts, checks, ok, mode, reason)
    return 0 if ok else 1
