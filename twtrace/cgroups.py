"""cgroup v2 ids, paths and short names; the --cgroup filter's ids.

The kernel side records a task's cgroup as its kernfs node id, which on a
64-bit kernel is the inode number of the cgroup's directory: user space
maps ids to paths by walking the cgroup2 mount.  The naming rules are pure
functions (unit-tested); only Resolver and filter_ids touch the file system.
"""
from __future__ import annotations

import os
import re
import time
from typing import Callable, Dict, Iterable, List, Optional

from twtrace.errors import UserError

MOUNTINFO = "/proc/self/mountinfo"
HEX_ID = re.compile(r"[0-9a-f]{64}")
# Container runtimes' scope names: docker-ID.scope, crio-ID.scope,
# cri-containerd-ID.scope, libpod-ID.scope (podman); the ID is 64 hex digits.
RUNTIME_SCOPE = re.compile(r"^(?:[a-z-]+-)?([0-9a-f]{64})(?:\.scope)?$")
SYSTEMD_UNIT = re.compile(r"\.(service|scope|slice|socket|mount|swap)$")
POD = re.compile(r"pod([0-9a-f]{8})[0-9a-f_-]*(?:\.slice)?$")
ROOT_ID = 1  # the root cgroup's directory is kernfs inode 1


def cgroup2_mount(mountinfo: str) -> Optional[str]:
    """Where cgroup2 is mounted, from /proc/self/mountinfo text; None if not."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and len(fields) >= 5 and right.split()[:1] == ["cgroup2"]:
            return _unescape(fields[4])
    return None


def _unescape(path: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def find_mount() -> Optional[str]:
    try:
        with open(MOUNTINFO) as f:
            return cgroup2_mount(f.read())
    except OSError:
        return None


def short_name(path: str) -> str:
    """A short container or service name for a cgroup path: a container's id
    cut to 12 characters (docker, containerd, cri-o, podman, kubepods), a
    systemd unit's name, else the last component."""
    if path in ("", "/") or path.startswith("cgroup:"):
        return path or "/"
    parts = [p for p in path.split("/") if p]
    for part in reversed(parts):
        m = RUNTIME_SCOPE.match(part)
        if m:
            return m.group(1)[:12]
    last = parts[-1]
    m = POD.search(last)
    if m and "kubepods" in path:
        return f"pod{m.group(1)}"
    return last


def relpath(root: str, full: str) -> str:
    """A cgroup's path inside the hierarchy ("/" for the root)."""
    rel = os.path.relpath(full, root)
    return "/" if rel == "." else "/" + rel


class Resolver:
    """cgroup id -> path, from a walk of the cgroup2 tree, cached.  An id not
    found triggers a new walk at most once per `rescan_s`; still unknown
    (the cgroup is gone, or cgroup2 is not mounted): "cgroup:<id>"."""

    def __init__(self, root: Optional[str] = None, rescan_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.root = root if root is not None else find_mount()
        self.rescan_s = rescan_s
        self.clock = clock
        self.paths: Dict[int, str] = {}
        self._last_scan: Optional[float] = None

    def scan(self) -> None:
        self._last_scan = self.clock()
        if not self.root:
            return
        for full, dirs, _ in os.walk(self.root):
            try:
                self.paths[os.stat(full).st_ino] = relpath(self.root, full)
            except OSError:
                dirs[:] = []  # removed while walking

    def path(self, cg_id: int) -> str:
        if cg_id in self.paths:
            return self.paths[cg_id]
        if self._last_scan is None or self.clock() - self._last_scan >= self.rescan_s:
            self.scan()
        return self.paths.get(cg_id, f"cgroup:{cg_id}")


def resolve_path(text: str, root: Optional[str]) -> str:
    """--cgroup PATH as a directory: a path under the cgroup2 mount, or a path
    inside the hierarchy (/system.slice/nginx.service, or without the /)."""
    if not root:
        raise UserError(f"--cgroup {text}: no cgroup2 file system is mounted "
                        f"(twtrace reads cgroup v2 only)")
    full = text if os.path.isabs(text) and _under(text, root) else \
        os.path.join(root, text.lstrip("/"))
    if not os.path.isfile(os.path.join(full, "cgroup.procs")):
        raise UserError(f"--cgroup {text}: no such cgroup under {root}")
    return os.path.realpath(full)


def _under(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def in_any(path: str, prefixes: Iterable[str]) -> bool:
    """Whether cgroup path is one of prefixes or below one (paths inside the
    hierarchy; "/" holds everything)."""
    for p in prefixes:
        p = p.rstrip("/")
        if not p or path == p or path.startswith(p + "/"):
            return True
    return False


def hierarchy_path(text: str, root: Optional[str]) -> str:
    """--cgroup PATH as a path inside the hierarchy, without touching it (for
    recordings made elsewhere)."""
    if root and os.path.isabs(text) and _under(text, root):
        return relpath(os.path.realpath(root), os.path.realpath(text))
    return "/" + text.strip("/")


def filter_ids(paths: Iterable[str], root: Optional[str] = None) -> List[int]:
    """The ids of each cgroup asked for and all its descendants (the kernel
    adds cgroups made later itself).  Bad paths raise UserError."""
    paths = list(paths)
    if not paths:
        return []
    root = root if root is not None else find_mount()
    ids = set()
    for text in paths:
        for full, dirs, _ in os.walk(resolve_path(text, root)):
            try:
                ids.add(os.stat(full).st_ino)
            except OSError:
                dirs[:] = []
    return sorted(ids)
