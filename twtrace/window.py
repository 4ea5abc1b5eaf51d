"""The counting window: which instants of the kernel's clock are counted.

Every BPF program reads its clock first and counts only when the reading
lies in [start, end).  Moving an edge is a map write, and a program on
another CPU may read the entry while the write is still under way.  So an
edge is written for an instant a little ahead (the lead) and twtrace waits
for that instant: a run whose clock is past the edge read the entry after
the write had returned, and counts exactly when it should.

If the write returns after its instant (the host stalled twtrace longer
than the lead), runs in between may have missed the edge: the window is
fuzzy by that much.  That is kept in `late_ns`, reported, and the lead is
raised for the next edge.
"""
from __future__ import annotations

import time
from typing import Callable, Tuple

OPEN_END = 2**64 - 1  # an end that never comes
LEAD_MIN_NS = 50_000_000  # a map write takes microseconds; a loaded host (or guest) stalls for ms
LEAD_MAX_NS = 1_000_000_000
LEAD_FACTOR = 50  # times the slowest trial write
TRIALS = 3


def lead_for(worst_write_ns: int) -> int:
    """How far ahead an edge is written, given the slowest trial write."""
    return min(max(LEAD_MIN_NS, worst_write_ns * LEAD_FACTOR), LEAD_MAX_NS)


class Window:
    """The edges as written to the kernel; `write(start, end)` writes them."""

    def __init__(self, write: Callable[[int, int], None],
                 clock: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], None] = time.sleep):
        self._write, self._clock, self._sleep = write, clock, sleep
        self.start = self.end = 0  # all zero: closed, nothing counts
        self.late_ns = 0
        self.lead_ns = LEAD_MIN_NS

    def calibrate(self) -> None:
        """Times a few writes of the entry as it is (harmless) to set the lead."""
        worst = 0
        for _ in range(TRIALS):
            t = self._clock()
            self._write(self.start, self.end)
            worst = max(worst, self._clock() - t)
        self.lead_ns = lead_for(worst)

    def open(self) -> int:
        """Counting starts at the returned instant, which has passed."""
        return self._move(lambda at: (at, OPEN_END))

    def close(self) -> int:
        """Counting stops at the returned instant, which has passed."""
        return self._move(lambda at: (self.start, at))

    def rewrite(self) -> None:
        """Writes the entry again with the edges unchanged (the generation moved)."""
        self._write(self.start, self.end)

    def _move(self, edges: Callable[[int], Tuple[int, int]]) -> int:
        at = self._clock() + self.lead_ns
        self.start, self.end = edges(at)
        self._write(self.start, self.end)
        late = self._clock() - at
        if late >= 0:
            self.late_ns = max(self.late_ns, late + 1)
            self.lead_ns = min(self.lead_ns * 4, LEAD_MAX_NS)
        while True:
            left = at - self._clock()
            if left < 0:
                return at
            self._sleep(left / 1e9 + 1e-4)
