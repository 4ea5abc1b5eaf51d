from __future__ import annotations

import pytest

from twtrace.units import format_count, format_ns, format_rate, rate_per_s


@pytest.mark.parametrize("ns, text", [
    (None, "-"), (0, "0ns"), (7, "7ns"), (950, "950ns"), (999, "999ns"), (999.4, "999ns"),
    (999.6, "1.00µs"), (1000, "1.00µs"), (1234, "1.23µs"), (12_345, "12.3µs"),
    (123_456, "123µs"), (999_499, "999µs"), (999_500, "1.00ms"), (999_999, "1.00ms"),
    (1_500_000, "1.50ms"), (99_949_999, "99.9ms"), (99_950_000, "100ms"),
    (999_600_000, "1.00s"), (2_000_000_000, "2.00s"), (61_000_000_000, "61.0s"),
    (1_234_000_000_000, "1234s"), (-1500, "-1.50µs"),
])
def test_format_ns(ns, text):
    assert format_ns(ns) == text


def test_format_ns_ascii_and_width():
    assert format_ns(12_345, ascii=True) == "12.3us"
    for exp in range(0, 12):  # up to ~28 hours; beyond that the seconds just grow
        for mant in (1, 1.5, 2.345, 5, 9.994, 9.996, 99.96, 999.6):
            assert len(format_ns(mant * 10 ** exp)) <= 6, mant * 10 ** exp


@pytest.mark.parametrize("n, text", [
    (None, "-"), (0, "0"), (1234, "1234"), (9999, "9999"), (10_000, "10.0k"),
    (12_345, "12.3k"), (123_456, "123k"), (999_499, "999k"), (999_500, "1.00M"),
    (1_234_567, "1.23M"), (5_000_000_000, "5.00G"), (-12_345, "-12.3k"),
])
def test_format_count(n, text):
    assert format_count(n) == text


def test_rates():
    assert rate_per_s(10, 2_000_000_000) == 5.0
    assert rate_per_s(10, 0) is None and rate_per_s(10, None) is None
    assert format_rate(None) == "-"
    assert format_rate(0) == "0/s"
    assert format_rate(0.5) == "0.50/s"
    assert format_rate(5) == "5.00/s"
    assert format_rate(12.34) == "12.3/s"
    assert format_rate(999.7) == "1000/s"
    assert format_rate(1234.4) == "1234/s"
    assert format_rate(45_678) == "45.7k/s"
    assert format_rate(rate_per_s(3_000_000, 1_000_000_000)) == "3.00M/s"
