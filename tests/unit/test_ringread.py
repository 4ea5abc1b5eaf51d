"""The ring buffer read from its pages: committed records only, in order,
their room given back, discarded ones skipped, a busy one waited for; and
the records' text is what bcc's one-event-at-a-time path writes."""
import ctypes as ct
import mmap
import os
import struct

import pytest

from benchmarks.eventpath import EventStruct as Ev
from twtrace import ringread
from twtrace.eventcodec import Decoder, Framed
from twtrace.eventtext import EventText
from twtrace.model import hexaddr

PAGE = mmap.PAGESIZE
SIZE = 4 * PAGE
KINDS = {1: "add", 2: "callback", 3: "cancel", 4: "run"}
PAYLOAD = ct.sizeof(Ev)
STEP = ringread.record_step(PAYLOAD)


def event(i, kind=1):
    e = Ev(kind=kind, ts=1000 + i, work=0xffff0000 + i, func=0xffffffff81000000, tid=7, pid=7,
           adder_tid=7, adder_pid=7, notify=1, flags=1, queue_ns=5, dur_ns=9,
           comm=b"storm", adder_comm=b"storm")
    return ct.string_at(ct.addressof(e), PAYLOAD)


def record(i, length=PAYLOAD, kind=1):
    return ringread.HDR.pack(length, 0) + event(i, kind) + bytes(STEP - 8 - PAYLOAD)


class FakeRing:
    """A file laid out as the kernel maps a ring buffer: consumer page,
    producer page, data (twice over, as the double mapping shows it)."""

    def __init__(self):
        self.fd = os.memfd_create("ring")
        os.ftruncate(self.fd, 2 * PAGE + 2 * SIZE)
        self.cons = self.prod = 0

    def put(self, raw: bytes):
        for off in (self.prod % SIZE, self.prod % SIZE + SIZE):  # both copies
            end = min(len(raw), 2 * SIZE - off)
            os.pwrite(self.fd, raw[:end], 2 * PAGE + off)
        self.prod += len(raw)
        os.pwrite(self.fd, struct.pack("=Q", self.prod), PAGE)

    def commit(self, pos):
        for off in (pos % SIZE, pos % SIZE + SIZE):
            os.pwrite(self.fd, ringread.HDR.pack(PAYLOAD, 0), 2 * PAGE + off)

    def consumer(self):
        return struct.unpack("=Q", os.pread(self.fd, 8, 0))[0]


@pytest.fixture
def ring():
    r = FakeRing()
    yield r
    os.close(r.fd)


def test_committed_runs():
    recs = b"".join(record(i) for i in range(5))
    assert ringread.committed(recs, PAYLOAD) == 5 * STEP
    busy = record(3, PAYLOAD | ringread.BUSY)
    assert ringread.committed(recs[:3 * STEP] + busy + record(4), PAYLOAD) == 3 * STEP
    assert ringread.committed(record(0, PAYLOAD | ringread.DISCARD), PAYLOAD) == 0
    assert ringread.committed(b"", PAYLOAD) == 0


def test_reader_takes_committed_records_and_gives_their_room_back(ring):
    r = ringread.RingReader(ring.fd, SIZE, PAYLOAD)
    try:
        assert r.take(1 << 20) == (b"", 0)
        ring.put(b"".join(record(i) for i in range(3)))
        chunk, used = r.take(1 << 20)
        assert used == 3 * STEP and chunk == b"".join(record(i) for i in range(3))
        r.release(used)
        assert ring.consumer() == 3 * STEP
        # a discarded record is stepped over; a busy one ends the take
        ring.put(record(9, PAYLOAD | ringread.DISCARD) + record(3) + record(4, PAYLOAD | ringread.BUSY))
        chunk, used = r.take(1 << 20)
        assert chunk == record(3) and used == 2 * STEP
        r.release(used)
        assert r.take(1 << 20) == (b"", 0)
        ring.commit(5 * STEP)  # the producer finishes the busy one
        # at most max_bytes at a time, and across the end of the ring
        n = SIZE // STEP
        ring.put(b"".join(record(10 + i) for i in range(n - 4)))
        got = []
        while True:
            chunk, used = r.take(7 * STEP)
            r.release(used)
            if not used:
                break
            got.append(chunk)
        assert len(got) > 1 and all(len(c) <= 7 * STEP for c in got)
        assert b"".join(got) == record(4) + b"".join(record(10 + i) for i in range(n - 4))
    finally:
        r.close()


def test_framed_records_make_the_text_the_event_path_makes():
    dec = Decoder(Ev, KINDS)
    framed = Framed(dec, ringread.HDR.format, STEP)
    fname = lambda a: {0xffffffff81000000: "____fput"}.get(a) or hexaddr(a)  # noqa: E731
    fast = EventText(fname, {}.get).from_tuples(framed.names, KINDS, framed.from_tuple)
    slow = EventText(fname, {}.get)
    chunk = b"".join(record(i, kind=k) for i, k in enumerate([1, 2, 3, 4, 1]))
    lines = [fast(t) for t in framed.iter(chunk)]
    want = [slow(dec.from_bytes(chunk[i * STEP + 8:i * STEP + 8 + PAYLOAD])) for i in range(5)]
    assert lines == want and '"type":"cancel"' in lines[2]
