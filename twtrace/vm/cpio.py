"""Write an initramfs: a cpio archive in the kernel's "newc" format."""
from __future__ import annotations

from pathlib import Path


def _entry(ino: int, name: str, mode: int, data: bytes) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = head + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def write(path: Path, files: dict, executable=frozenset()) -> None:
    """files maps archive paths (no leading slash) to contents; parent
    directories are created implicitly."""
    dirs = set()
    for name in files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    chunks, ino = [], 1
    for d in sorted(dirs):
        chunks.append(_entry(ino, d, 0o40755, b""))
        ino += 1
    for name in sorted(files):
        mode = 0o100755 if name in executable else 0o100644
        chunks.append(_entry(ino, name, mode, files[name]))
        ino += 1
    chunks.append(_entry(0, "TRAILER!!!", 0, b""))
    Path(path).write_bytes(b"".join(chunks))
