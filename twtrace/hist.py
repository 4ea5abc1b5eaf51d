"""Log-linear latency histograms, bucketed exactly as the BPF side does.

The kernel side only counts hits per bucket index; everything else
(bounds, percentiles, display rows) is derived here, so the index formula
below is the one thing both sides must agree on.  The BPF program computes
it with bcc's helper bpf_log2l(), which returns the bit length of v
(floor(log2(v)) + 1 for v > 0), hence the "- 1":

    static __always_inline u32 lat_bucket(u64 v)
    {
        if (v < 16)
            return v;
        u32 msb = bpf_log2l(v) - 1;          // floor(log2(v)), >= 4
        return (msb - 3) * 16 + ((v >> (msb - 4)) & 15);
    }

Values below 16 ns get a bucket each; above that every power of two is
split into 16 equal sub-buckets, so a bucket is never wider than 1/16 of
its lower bound and its midpoint is within 1/32 of any value in it.
Index 975 (msb 63, sub 15) is the largest; the array needs NBUCKETS slots.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

SUB_BITS = 4
SUB = 1 << SUB_BITS  # sub-buckets per power of two, and the exact range
MAX_INDEX = (63 - (SUB_BITS - 1)) * SUB + (SUB - 1)  # 975
NBUCKETS = MAX_INDEX + 1
U64_MAX = (1 << 64) - 1


def bucket_index(v: int) -> int:
    """Bucket index of a u64 value (nanoseconds)."""
    v = int(v)
    if v < 0 or v > U64_MAX:
        raise ValueError(f"value {v} is not a u64")
    if v < SUB:
        return v
    msb = v.bit_length() - 1
    sub = (v >> (msb - SUB_BITS)) & (SUB - 1)
    return (msb - (SUB_BITS - 1)) * SUB + sub


@functools.lru_cache(maxsize=1)
def _start_index() -> Dict[int, int]:
    """Bucket start -> index: what records and top's rows carry are bucket
    starts, and every tick turns thousands of them back into buckets."""
    return {bucket_bounds(i)[0]: i for i in range(NBUCKETS)}


def bucket_bounds(idx: int) -> Tuple[int, int]:
    """(lo, hi_exclusive) of the values that land in bucket idx."""
    idx = int(idx)
    if idx < 0 or idx > MAX_INDEX:
        raise ValueError(f"bucket index {idx} out of range 0..{MAX_INDEX}")
    if idx < SUB:
        return idx, idx + 1
    msb = idx // SUB + (SUB_BITS - 1)
    shift = msb - SUB_BITS
    lo = (SUB + idx % SUB) << shift
    return lo, lo + (1 << shift)


def bucket_value(idx: int) -> int:
    """Representative value: the bucket midpoint (exact for width-1 buckets)."""
    lo, hi = bucket_bounds(idx)
    return lo + (hi - lo) // 2


@functools.lru_cache(maxsize=1)
def _tables() -> Tuple[List[int], List[int]]:
    """(bucket starts, bucket values) by index: a tick of top turns thousands
    of buckets into pairs and percentiles, each a table read this way."""
    return ([bucket_bounds(i)[0] for i in range(NBUCKETS)],
            [bucket_value(i) for i in range(NBUCKETS)])


@functools.lru_cache(maxsize=64)
def _ratio(p: float) -> Tuple[int, int]:
    """p/100 as an exact fraction (numerator, denominator).  Going through
    the decimal text keeps e.g. 99.9 exact, so a rank never drifts by one
    through binary float error; cached, since top asks for the same three
    percentiles of every row at every tick."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    f = Fraction(str(p)) / 100
    return f.numerator, f.denominator


def _rank(p: float, n: int) -> int:
    """Nearest-rank position (1-based) of percentile p among n samples."""
    num, den = _ratio(p)
    return max(1, -(-num * n // den))  # integer ceil


class Histogram:
    """Counts per bucket index; mergeable, and cheap to serialise."""

    __slots__ = ("counts",)

    def __init__(self, counts: Optional[Mapping[int, int]] = None):
        self.counts: Dict[int, int] = {}
        if counts:
            for idx, n in counts.items():
                if n:
                    bucket_bounds(idx)  # validates the index
                    self.counts[int(idx)] = self.counts.get(int(idx), 0) + int(n)

    def add(self, v: int, n: int = 1) -> None:
        if n < 0:
            raise ValueError("negative count")
        if n:
            idx = bucket_index(v)
            self.counts[idx] = self.counts.get(idx, 0) + n

    def merge(self, other: "Histogram") -> "Histogram":
        """Add other's counts into self; returns self for chaining."""
        for idx, n in other.counts.items():
            self.counts[idx] = self.counts.get(idx, 0) + n
        return self

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def __len__(self) -> int:
        return self.count

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Histogram) and self.counts == other.counts

    def __repr__(self) -> str:
        return f"Histogram({self.to_pairs()!r})"

    def percentile(self, p: float, max_ns: Optional[int] = None) -> Optional[int]:
        """Nearest-rank percentile: the representative value of the bucket
        holding the smallest sample v with at least p% of samples <= v,
        never reported above max_ns (the exact maximum) when given.
        None when empty."""
        return self.percentiles((p,), max_ns)[0]

    def percentiles(self, ps: Sequence[float], max_ns: Optional[int] = None
                    ) -> List[Optional[int]]:
        """percentile() of each of ps (ascending), in one pass over the buckets."""
        total = self.count
        if total == 0:
            return [None] * len(ps)
        ranks = [_rank(p, total) for p in ps]
        if ranks != sorted(ranks):
            raise ValueError("percentiles must be asked for in ascending order")
        out: List[Optional[int]] = []
        seen = 0
        values = _tables()[1]
        for idx in sorted(self.counts):
            seen += self.counts[idx]
            while len(out) < len(ranks) and seen >= ranks[len(out)]:
                value = values[idx]
                out.append(min(value, int(max_ns)) if max_ns is not None else value)
            if len(out) == len(ranks):
                return out
        raise AssertionError("unreachable: rank exceeds total")

    def to_pairs(self) -> List[List[int]]:
        """[[lo_ns, count], ...] for non-empty buckets, ascending."""
        starts, c = _tables()[0], self.counts
        return [[starts[i], c[i]] for i in sorted(c) if c[i]]

    @classmethod
    def from_pairs(cls, pairs: Iterable[Sequence[int]]) -> "Histogram":
        """Inverse of to_pairs; a lo that is not a bucket start counts in
        the bucket containing it."""
        h, index = cls(), _start_index()
        counts = h.counts
        for lo, n in pairs:
            lo, n = int(lo), int(n)
            idx = index.get(lo)
            if idx is None or n < 0:  # not a bucket start, or refused: the long way
                h.add(lo, n)
            elif n:
                counts[idx] = counts.get(idx, 0) + n
        return h

    def summary(self, max_ns: Optional[int] = None, sum_ns: Optional[int] = None) -> dict:
        """The record format's latency object.  The kernel keeps the exact
        max and sum beside the buckets; without them both are estimated
        from the bucket representatives."""
        total = self.count
        if total == 0:
            return {"count": 0, "sum": 0, "p50": None, "p90": None, "p99": None,
                    "max": None, "hist": []}
        values = _tables()[1]
        if max_ns is None:
            max_ns = values[max(i for i, n in self.counts.items() if n)]
        if sum_ns is None:
            sum_ns = sum(values[i] * n for i, n in self.counts.items())
        p50, p90, p99 = self.percentiles((50, 90, 99), max_ns)
        return {
            "count": total,
            "sum": int(sum_ns),
            "p50": p50,
            "p90": p90,
            "p99": p99,
            "max": int(max_ns),
            "hist": self.to_pairs(),
        }


class Log2Row(NamedTuple):
    lo: int  # inclusive
    hi: int  # exclusive
    count: int


def log2_rows(hist: Histogram) -> List[Log2Row]:
    """Regroup into power-of-two rows [0,1), [1,2), [2,4), [4,8), ... like
    bcc's print_log2_hist, from the first to the last non-empty row with
    empty rows in between kept.  Exact: no bucket straddles a power of two."""
    rows: Dict[int, int] = {}
    for idx, n in hist.counts.items():
        if n:
            row = bucket_bounds(idx)[0].bit_length()  # 0 -> row 0, [2^(k-1), 2^k) -> row k
            rows[row] = rows.get(row, 0) + n
    if not rows:
        return []
    out = []
    for row in range(min(rows), max(rows) + 1):
        lo = 0 if row == 0 else 1 << (row - 1)
        out.append(Log2Row(lo, 1 << row, rows.get(row, 0)))
    return out
