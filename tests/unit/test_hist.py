from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from twtrace import hist

from twtrace.hist import (
    MAX_INDEX, NBUCKETS, U64_MAX, Histogram, bucket_bounds, bucket_index, bucket_value, log2_rows,
)


def c_bucket(v: int) -> int:
    """Line-by-line port of the C in hist.py's docstring, bcc's bpf_log2l included,
    so a change to either side shows up here."""
    def bpf_log2(x: int) -> int:  # u32
        r = int(x > 0xFFFF) << 4; x >>= r
        shift = int(x > 0xFF) << 3; x >>= shift; r |= shift
        shift = int(x > 0xF) << 2; x >>= shift; r |= shift
        shift = int(x > 0x3) << 1; x >>= shift; r |= shift
        return r | (x >> 1)

    def bpf_log2l(x: int) -> int:
        hi = x >> 32
        return bpf_log2(hi) + 32 + 1 if hi else bpf_log2(x) + 1

    if v < 16:
        return v
    msb = bpf_log2l(v) - 1
    return (msb - 3) * 16 + ((v >> (msb - 4)) & 15)


def interesting_values():
    vals = set(range(0, 4096))
    for k in range(64):
        for d in (-2, -1, 0, 1, 2):
            v = (1 << k) + d
            if 0 <= v <= U64_MAX:
                vals.add(v)
    rng = random.Random(1)
    for _ in range(20000):
        vals.add(rng.getrandbits(rng.randint(1, 64)))
    vals.add(U64_MAX)
    return sorted(vals)


def test_index_matches_c_formula_and_spec_examples():
    for v in interesting_values():
        assert bucket_index(v) == c_bucket(v), v
    assert [bucket_index(v) for v in (0, 15, 16, 31, 32, 33, 34, 63, 64)] == \
        [0, 15, 16, 31, 32, 32, 33, 47, 48]
    assert bucket_index(U64_MAX) == MAX_INDEX == 975 == NBUCKETS - 1


def test_index_monotonic_and_bounds_contain_value():
    prev = -1
    for v in interesting_values():
        idx = bucket_index(v)
        assert idx >= prev
        prev = idx
        lo, hi = bucket_bounds(idx)
        assert lo <= v < hi


def test_buckets_tile_the_u64_range_without_gaps():
    assert bucket_bounds(0)[0] == 0
    for idx in range(MAX_INDEX):
        assert bucket_bounds(idx)[1] == bucket_bounds(idx + 1)[0]
        lo, hi = bucket_bounds(idx)
        assert bucket_index(lo) == idx and bucket_index(hi - 1) == idx
    assert bucket_bounds(MAX_INDEX)[1] == U64_MAX + 1
    for bad in (-1, NBUCKETS):
        with pytest.raises(ValueError):
            bucket_bounds(bad)
    with pytest.raises(ValueError):
        bucket_index(-1)
    with pytest.raises(ValueError):
        bucket_index(U64_MAX + 1)


def test_representative_value_error_at_most_one_32nd():
    for idx in range(NBUCKETS):
        lo, hi = bucket_bounds(idx)
        rep = bucket_value(idx)
        assert lo <= rep < hi
        if hi - lo == 1:
            assert rep == lo
        for v in (lo, hi - 1):
            assert abs(rep - v) * 32 <= max(v, 1) or v == 0 == rep


def exact_percentile(sorted_vals, p):
    rank = max(1, math.ceil(p * len(sorted_vals) / 100))
    return sorted_vals[rank - 1]


DISTRIBUTIONS = {
    "uniform": lambda r: r.randint(0, 5_000_000),
    "exponential": lambda r: int(r.expovariate(1 / 20_000)),
    "lognormal": lambda r: int(r.lognormvariate(9, 2.5)),
    "small": lambda r: r.randint(0, 40),
    "bimodal": lambda r: r.randint(500, 900) if r.random() < 0.9 else r.randint(10**8, 10**9),
    "heavy_tail": lambda r: int(r.paretovariate(1.1) * 1000),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_percentiles_within_one_32nd_of_exact(name):
    rng = random.Random(f"twtrace-{name}")  # str seeds are stable across runs
    draw = DISTRIBUTIONS[name]
    for size in (1, 2, 3, 10, 99, 100, 101, 1000, 5000):
        vals = sorted(min(draw(rng), U64_MAX) for _ in range(size))
        h = Histogram()
        for v in vals:
            h.add(v)
        assert h.count == size
        for p in (0, 1, 50, 90, 99, 99.9, 100):
            want = exact_percentile(vals, p)
            got = h.percentile(p, max_ns=vals[-1])
            assert got <= vals[-1]
            assert abs(got - want) * 32 <= want, (name, size, p, got, want)
        s = h.summary(max_ns=vals[-1], sum_ns=sum(vals))
        assert s["max"] == vals[-1] and s["sum"] == sum(vals) and s["count"] == size
        assert s["p50"] <= s["p90"] <= s["p99"] <= s["max"]


def test_percentile_rank_is_nearest_rank():
    h = Histogram()
    for v in range(1, 11):  # exact buckets: values are their own representatives
        h.add(v)
    assert [h.percentile(p) for p in (0, 10, 11, 50, 90, 91, 100)] == [1, 1, 2, 5, 9, 10, 10]
    h2 = Histogram()
    h2.add(5, n=999)
    h2.add(7)
    assert h2.percentile(99.9) == 5  # 99.9% of 1000 is exactly rank 999
    assert h2.percentile(99.91) == 7
    with pytest.raises(ValueError):
        h.percentile(101)


def test_clamped_to_exact_max():
    v = 983_040  # the lower bound of its bucket, so the midpoint lies above it
    h = Histogram()
    h.add(v)
    assert h.percentile(50) == bucket_value(bucket_index(v)) > v
    assert h.percentile(50, max_ns=v) == v
    assert h.summary(max_ns=v, sum_ns=v)["p99"] == v


def test_edge_cases_empty_one_and_zeros():
    empty = Histogram()
    assert empty.count == 0 and empty.percentile(50) is None
    assert empty.to_pairs() == [] and log2_rows(empty) == []
    assert empty.summary(max_ns=None, sum_ns=None) == {
        "count": 0, "sum": 0, "p50": None, "p90": None, "p99": None, "max": None, "hist": []}

    one = Histogram()
    one.add(12345)
    s = one.summary(max_ns=12345, sum_ns=12345)
    assert s["p50"] == s["p90"] == s["p99"] == s["max"] == 12345
    assert s["hist"] == [[bucket_bounds(bucket_index(12345))[0], 1]]

    zeros = Histogram()
    zeros.add(0, n=5)
    s = zeros.summary(max_ns=0, sum_ns=0)
    assert s == {"count": 5, "sum": 0, "p50": 0, "p90": 0, "p99": 0, "max": 0, "hist": [[0, 5]]}
    assert log2_rows(zeros) == [(0, 1, 5)]

    no_exact = Histogram()
    no_exact.add(100)
    s = no_exact.summary()
    assert s["max"] == bucket_value(bucket_index(100)) and s["sum"] == s["max"]

    zeros.add(7, n=0)
    assert zeros.count == 5
    with pytest.raises(ValueError):
        zeros.add(7, n=-1)


def test_pairs_roundtrip_and_merge():
    rng = random.Random(7)
    a, b = Histogram(), Histogram()
    for _ in range(3000):
        a.add(rng.getrandbits(rng.randint(1, 40)))
        b.add(rng.getrandbits(rng.randint(1, 40)))
    pairs = a.to_pairs()
    assert [lo for lo, _ in pairs] == sorted(lo for lo, _ in pairs)
    assert all(n > 0 for _, n in pairs)
    assert Histogram.from_pairs(pairs) == a
    merged = Histogram.from_pairs(pairs).merge(b)
    assert merged.count == a.count + b.count
    for idx in set(a.counts) | set(b.counts):
        assert merged.counts[idx] == a.counts.get(idx, 0) + b.counts.get(idx, 0)
    assert Histogram({3: 2, 20: 0}).counts == {3: 2}


def test_log2_rows_regroup_exactly():
    h = Histogram()
    for v in (0, 1, 2, 3, 5, 100, 127, 128, 1_000_000):
        h.add(v)
    rows = log2_rows(h)
    assert rows[0] == (0, 1, 1)
    assert rows[1] == (1, 2, 1)
    assert rows[2] == (2, 4, 2)
    assert rows[3] == (4, 8, 1)
    by_lo = {r.lo: r for r in rows}
    assert by_lo[64].count == 2 and by_lo[64].hi == 128
    assert by_lo[128].count == 1
    assert by_lo[1 << 19].count == 1 and rows[-1].lo == 1 << 19
    assert sum(r.count for r in rows) == h.count
    for r1, r2 in zip(rows, rows[1:]):  # contiguous, with empty rows kept
        assert r1.hi == r2.lo

    late = Histogram()
    late.add(5000)
    late.add(40000)
    rows = log2_rows(late)
    assert rows[0].lo == 4096 and rows[-1].lo == 32768 and [r.count for r in rows] == [1, 0, 0, 1]


def test_percentiles_in_one_pass_equal_each_asked_alone():
    h = Histogram()
    for v, n in ((5, 3), (100, 40), (1_000, 50), (10**6, 6), (10**9, 1)):
        h.add(v, n)
    ps = (0, 50, 90, 99, 99.9, 100)
    assert h.percentiles(ps, max_ns=10**9) == [h.percentile(p, 10**9) for p in ps]
    assert h.percentiles((50, 99)) == [bucket_value(bucket_index(1_000)),
                                       bucket_value(bucket_index(10**6))]
    with pytest.raises(ValueError):
        h.percentiles((99, 50))
    assert Histogram().percentiles((50, 90)) == [None, None]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.integers(0, 2**64 - 1),
                                    st.sampled_from([hist.bucket_bounds(i)[0]
                                                     for i in range(0, hist.NBUCKETS, 7)])),
                          st.integers(0, 10**6)), max_size=20))
def test_from_pairs_fast_path_buckets_as_add_does(pairs):
    """Bucket starts take a table lookup; the result is what add() gives."""
    slow = hist.Histogram()
    for lo, n in pairs:
        slow.add(lo, n)
    assert hist.Histogram.from_pairs(pairs).counts == slow.counts


def test_from_pairs_still_refuses_what_add_refuses():
    with pytest.raises(ValueError):
        hist.Histogram.from_pairs([[1024, -1]])
    with pytest.raises(ValueError):
        hist.Histogram.from_pairs([[2**64, 1]])
