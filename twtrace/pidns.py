"""PID namespaces: a task's pid as seen inside its container."""
from __future__ import annotations

from typing import Optional


def parse_nspid(status: str) -> Optional[int]:
    """The innermost pid of a /proc/PID/status text's NSpid line (the pid in
    the task's own namespace), None without one (kernels before 4.1)."""
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            ids = line.split()[1:]
            return int(ids[-1]) if ids else None
    return None


def ns_pid(pid: int) -> Optional[int]:
    """pid's in-namespace pid where it differs from pid; None otherwise, or
    when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            inner = parse_nspid(f.read())
    except OSError:
        return None
    return inner if inner is not None and inner != pid else None
