"""Kprobes a dead bcc process left in the kernel, and their removal.

bcc creates some probes through tracefs's text interface (kprobe_events):
those outlive the process when it is killed (SIGKILL, OOM) before its
clean-up runs, and pile up until a reboot.  bcc names them
`p_<func>_bcc_<pid>` / `r_<func>_bcc_<pid>`, so a leftover is recognisable:
one whose pid no longer exists.  Removing it is writing `-:GROUP/NAME` to
kprobe_events; a probe still in use by a live perf event is refused by the
kernel (EBUSY) and stays.

Only probes of dead pids are touched: a live pid may be another bcc tool's.
"""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from typing import Callable, List, Optional

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
# e.g. "r16:kprobes/r_____fput_bcc_1234 ____fput"  (the digits after r are maxactive)
LINE = re.compile(r"^[pr]\d*:(?P<group>[^/\s]+)/(?P<name>\S+_bcc_(?P<pid>\d+))\s")


@dataclass(frozen=True)
class Probe:
    group: str
    name: str
    pid: int

    @property
    def event(self) -> str:
        return f"{self.group}/{self.name}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def events_file(root: str = "/") -> Optional[str]:
    """The first kprobe_events under a mounted tracefs, or None."""
    for d in TRACEFS_DIRS:
        path = os.path.join(root, d.lstrip("/"), "kprobe_events")
        if os.path.exists(path):
            return path
    return None


def parse(text: str) -> List[Probe]:
    """bcc-named probes in kprobe_events' text (others are not ours to judge)."""
    out = []
    for line in text.splitlines():
        m = LINE.match(line + " ")
        if m:
            out.append(Probe(m["group"], m["name"], int(m["pid"])))
    return out


def find_stale(root: str = "/", alive: Callable[[int], bool] = pid_alive) -> List[Probe]:
    """bcc probes whose owning process is gone; [] when tracefs is unreadable."""
    path = events_file(root)
    if path is None:
        return []
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return []
    return [p for p in parse(text) if p.pid != os.getpid() and not alive(p.pid)]


def _remove(path: str, probe: Probe) -> bool:
    # O_APPEND and never O_TRUNC: opening kprobe_events truncated clears
    # every kprobe on the system, other tools' included.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, f"-:{probe.event}\n".encode())
        return True
    except OSError as e:
        return e.errno == errno.ENOENT  # gone meanwhile: as good as removed
    finally:
        os.close(fd)


def remove_stale_probes(root: str = "/", alive: Callable[[int], bool] = pid_alive) -> int:
    """Remove the leftovers of dead bcc processes; returns how many went.
    Never raises: start-up must not fail for want of tidying."""
    path = events_file(root)
    if path is None:
        return 0
    return sum(_remove(path, p) for p in find_stale(root, alive))
