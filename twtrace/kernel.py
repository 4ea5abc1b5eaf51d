"""Facts about the running kernel read from /proc and /lib/modules (no bcc)."""
from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Dict, List, Optional


class Kallsyms:
    """Text symbols of the running kernel: name -> address and back."""

    def __init__(self, pairs: List[tuple]):
        self.by_name: Dict[str, int] = {}
        for addr, name in pairs:
            self.by_name.setdefault(name, addr)
        self.addrs = sorted((a, n) for a, n in pairs)
        self._keys = [a for a, _ in self.addrs]

    @classmethod
    def parse(cls, text: str) -> "Kallsyms":
        pairs = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] not in "tTwW":
                continue
            addr = int(parts[0], 16)
            if addr:
                pairs.append((addr, parts[2]))
        return cls(pairs)

    @classmethod
    def load(cls, path: str = "/proc/kallsyms") -> "Kallsyms":
        try:
            with open(path) as f:
                return cls.parse(f.read())
        except OSError:
            return cls([])

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


def kernel_headers_dir(release: Optional[str] = None) -> Optional[Path]:
    release = release or os.uname().release
    build = Path(f"/lib/modules/{release}/build")
    if (build / "include").is_dir() or (build / "Makefile").exists():
        return build.resolve()
    return None
