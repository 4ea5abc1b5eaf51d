"""Human-readable numbers for tables: three significant digits, at most
six characters (durations up to ~28 hours), so columns stay narrow and
line up."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

Number = Union[int, float]
MISSING = "-"

_TIME_UNITS: Sequence[Tuple[str, str]] = (("µs", "us"), ("ms", "ms"), ("s", "s"))
_COUNT_UNITS = ("k", "M", "G", "T", "P", "E")


def _sig3(x: float) -> str:
    """x in [1, 1000) with three significant digits."""
    # Judge by the rounded text: 9.996 is "10.0", not "10.00".
    for decimals, limit in ((2, 10), (1, 100)):
        text = f"{x:.{decimals}f}"
        if float(text) < limit:
            return text
    return f"{x:.0f}"


def _rounds_to_1000(x: float) -> bool:
    # Decide on the text actually printed: 999.6 -> "1000" must move up a unit.
    return float(_sig3(x)) >= 1000


def format_ns(ns: Optional[Number], ascii: bool = False) -> str:
    """950 -> "950ns", 12345 -> "12.3µs", 1.5e6 -> "1.50ms", 2e9 -> "2.00s".
    None -> "-".  Seconds never scale further ("1234s")."""
    if ns is None:
        return MISSING
    if ns < 0:
        return "-" + format_ns(-ns, ascii)
    if round(ns) < 1000:
        return f"{round(ns)}ns"
    x = ns / 1000.0
    for i, (uni, asc) in enumerate(_TIME_UNITS):
        last = i == len(_TIME_UNITS) - 1
        if last or not _rounds_to_1000(x):
            unit = asc if ascii else uni
            return (f"{x:.0f}" if x >= 1000 else _sig3(x)) + unit
        x /= 1000.0
    raise AssertionError("unreachable")


def format_count(n: Optional[Number]) -> str:
    """Below 10000 as is ("1234"); above, three digits and a suffix
    (12345 -> "12.3k", 1234567 -> "1.23M").  None -> "-"."""
    if n is None:
        return MISSING
    if n < 0:
        return "-" + format_count(-n)
    if isinstance(n, float) and not n.is_integer() and n < 10000:
        return _sig3(n) if n >= 1 else f"{n:.2f}"
    if n < 10000:
        return str(int(n))
    x = float(n)
    for i, suffix in enumerate(_COUNT_UNITS):
        x /= 1000.0
        if i == len(_COUNT_UNITS) - 1 or not _rounds_to_1000(x):
            return (f"{x:.0f}" if x >= 1000 else _sig3(x)) + suffix
    raise AssertionError("unreachable")


def rate_per_s(count: Number, duration_ns: Optional[Number]) -> Optional[float]:
    """Events per second over duration_ns; None when the duration is unknown or 0."""
    if not duration_ns or duration_ns <= 0:
        return None
    return count * 1e9 / duration_ns


def format_rate(per_s: Optional[float]) -> str:
    """0.5 -> "0.50/s", 12.34 -> "12.3/s", 45678 -> "45.7k/s".  None -> "-"."""
    if per_s is None:
        return MISSING
    if per_s < 0:
        return "-" + format_rate(-per_s)
    if per_s == 0:
        return "0/s"
    if per_s < 1:
        return f"{per_s:.2f}/s"
    if per_s < 1000 and not _rounds_to_1000(per_s):
        return _sig3(per_s) + "/s"
    return format_count(per_s if per_s >= 10000 else round(per_s)) + "/s"
