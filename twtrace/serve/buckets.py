"""The fixed Prometheus histogram buckets, derived from twtrace's own.

twtrace's kernel histograms are log-linear (twtrace/hist.py): every power
of two [2^k, 2^(k+1)) ns is split into 16 buckets and none crosses a power
of two.  So "samples below 2^k ns" is a union of whole twtrace buckets and
its count is exact.  Prometheus buckets are "less than or equal to le";
samples are whole nanoseconds, so "< 2^k ns" is exactly "<= 2^k - 1 ns",
and each bound is 2^k - 1 ns (1.023 µs, 2.047 µs, ... 17.18 s): one per power
of two from 2^10 ns to 2^34 ns, plus +Inf.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Dict, List, Mapping, Tuple

from twtrace.hist import bucket_bounds

FIRST_POW, LAST_POW = 10, 34
BOUNDS_NS: Tuple[int, ...] = tuple((1 << k) - 1 for k in range(FIRST_POW, LAST_POW + 1))


def le_text(ns: int) -> str:
    """A bound in seconds, written exactly (1023 ns -> "1.023e-06")."""
    return f"{float(Decimal(ns) / Decimal(10 ** 9))!r}"


LE: Tuple[str, ...] = tuple(le_text(b) for b in BOUNDS_NS)


def cumulative(counts: Mapping[int, int]) -> List[Tuple[str, int]]:
    """Prometheus buckets [(le, samples <= le), ..., ("+Inf", all)] from
    twtrace bucket counts (index -> count)."""
    per_bound: Dict[int, int] = {}
    total = 0
    for idx, n in counts.items():
        lo, hi = bucket_bounds(idx)
        total += n
        # the first bound at or above the bucket's largest value (hi - 1);
        # every bound is 2^k - 1, and hi - 1 <= 2^k - 1 once hi <= 2^k
        k = max(FIRST_POW, (hi - 1).bit_length())
        if k <= LAST_POW:
            per_bound[k] = per_bound.get(k, 0) + n
    out, running = [], 0
    for k, le in zip(range(FIRST_POW, LAST_POW + 1), LE):
        running += per_bound.get(k, 0)
        out.append((le, running))
    out.append(("+Inf", total))
    return out
