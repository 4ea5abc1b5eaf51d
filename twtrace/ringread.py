"""Reading the BPF ring buffer's pages directly, many events per call.

bcc hands each ring buffer record to a Python callback, one at a time, and
at thousands of events a second that call is a large part of what
`record --events` costs.  The kernel also maps the ring buffer into user
space (this is how libbpf reads it): a page holding the consumer position,
which the reader writes, then a page holding the producer position followed
by the data, mapped twice in a row so that no record wraps.  Here every
committed record between the two positions is copied out at once and
unpacked by one struct.iter_unpack.

Only on x86-64, where loads are not reordered with older loads: a record
whose header reads committed also reads complete.  Elsewhere that takes
acquire loads, which Python cannot issue, and bcc's callback stays.
"""
from __future__ import annotations

import mmap
import platform
import select
import struct
from typing import Tuple

BUSY = 1 << 31     # a producer has reserved the record and not committed it yet
DISCARD = 1 << 30  # committed as discarded: skipped
HDR = struct.Struct("=II")  # length with those two bits, page offset
POS = struct.Struct("=Q")


def supported() -> bool:
    return platform.machine() == "x86_64"


def record_step(payload: int) -> int:
    """Bytes a record of `payload` bytes takes in the ring (header, 8-aligned)."""
    return (payload + HDR.size + 7) & ~7


def committed(chunk: bytes, payload: int) -> int:
    """The length of chunk's leading run of committed records of `payload`
    bytes each.  Usually every header is such a record, which is checked
    with four strided byte compares; otherwise the headers are walked."""
    step = record_step(payload)
    n = len(chunk) // step
    if n and all(chunk[i::step][:n] == bytes([(payload >> (8 * i)) & 0xff]) * n
                 for i in range(4)):
        return n * step
    at = 0
    while at + step <= len(chunk) and HDR.unpack_from(chunk, at)[0] == payload:
        at += step
    return at


class RingReader:
    """The consumer side of one BPF_MAP_TYPE_RINGBUF map of `size` data bytes
    whose records all carry `payload` bytes."""

    def __init__(self, fd: int, size: int, payload: int):
        page = mmap.PAGESIZE
        self._cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._data = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                               offset=page)
        self._page, self._mask, self.payload = page, size - 1, payload
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def wait(self, timeout_ms: int) -> None:
        """Until the kernel wakes the reader, or the timeout."""
        try:
            self._poll.poll(timeout_ms)
        except InterruptedError:
            pass

    def take(self, max_bytes: int) -> Tuple[bytes, int]:
        """(committed records, bytes of ring they came from): records are
        copied out; release() then gives their room back to the producers."""
        cons = POS.unpack_from(self._cons, 0)[0]
        prod = POS.unpack_from(self._data, 0)[0]
        skipped = 0
        while prod > cons + skipped:
            at = self._page + ((cons + skipped) & self._mask)
            chunk = self._data[at:at + min(prod - cons - skipped, max_bytes)]
            ok = committed(chunk, self.payload)
            if ok or len(chunk) < HDR.size:
                return chunk[:ok], skipped + ok
            length = HDR.unpack_from(chunk, 0)[0]
            if length & BUSY:
                break
            # discarded, or not a record of ours: its room is given back unread
            skipped += record_step(length & ~DISCARD)
        return b"", skipped

    def release(self, nbytes: int) -> None:
        if nbytes:
            cons = POS.unpack_from(self._cons, 0)[0]
            POS.pack_into(self._cons, 0, cons + nbytes)

    def close(self) -> None:
        self._cons.close()
        self._data.close()
