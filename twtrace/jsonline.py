"""Reading JSON Lines from untrusted files with bounded memory and numbers.

The record format's numbers are kernel counters, nanoseconds and ids: all
fit in a signed or unsigned 64-bit integer.  Anything outside that range
(a 4,301-digit integer, 1e308, inf, NaN) is refused while parsing, so no
later arithmetic sees it; a line longer than MAX_LINE is refused before it
is read whole; only regular files (or `-`, stdin) are read, so /dev/zero
or a FIFO cannot feed an endless line.
"""
from __future__ import annotations

import json
import os
import re
import stat
import sys
from typing import Any, BinaryIO, Iterator, Tuple

MAX_LINE = 1 << 20  # bytes; the longest real line (a snapshot's func with stacks) is ~10 KiB
MAX_DIGITS = 20  # len(str(2**64))
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1
MAX_DEPTH = 16  # the format nests 4 deep; json's recursion would fail near 1000


class LineError(ValueError):
    """A line that cannot be accepted; the message is one line."""


def open_regular(path: str) -> BinaryIO:
    """A regular file for reading, or stdin for `-`.  Raises OSError, or
    LineError for a device, FIFO, socket or directory."""
    if path == "-":
        return sys.stdin.buffer
    # O_NONBLOCK: opening a FIFO must not wait for a writer before we refuse it.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "it is a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise LineError(f"cannot read: {kind} (twtrace reads regular files, or - for stdin)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def lines(f: BinaryIO) -> Iterator[Tuple[int, bytes]]:
    """(line number, raw line) with each line at most MAX_LINE bytes."""
    lineno = 0
    while True:
        raw = f.readline(MAX_LINE + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_LINE:
            raise LineError(f"line {lineno} is longer than {MAX_LINE >> 20} MiB; "
                            "this is not a twtrace recording")
        yield lineno, raw


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise LineError(f"number out of range ({len(text)} digits)")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise LineError(f"number out of range ({text}; the format's are 64-bit)")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not INT_MIN <= value <= INT_MAX:  # also false for inf and nan
        raise LineError(f"number out of range ({text[:30]})")
    return value


def _parse_constant(name: str) -> Any:
    raise LineError(f"{name} is not a number the format allows")


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float,
                            parse_constant=_parse_constant)
# A line with no run of 19 digits has only integers of 18 digits or fewer,
# all inside the signed and unsigned 64-bit ranges: it is parsed without a
# Python call per integer (a third of the time of reading an --events
# recording).  Real lines hold no such run: addresses are strings.
_FAST = json.JSONDecoder(parse_float=_parse_float, parse_constant=_parse_constant)
_LONG_NUMBER = re.compile(r"\d{%d}" % (MAX_DIGITS - 1))


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth, iteratively (no recursion to exhaust), stopping past limit."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        o, d = todo.pop()
        if isinstance(o, (dict, list)):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            todo.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def loads(text: str) -> Any:
    """json.loads with the bounds above; raises LineError or ValueError."""
    try:
        obj = (_DECODER if _LONG_NUMBER.search(text) else _FAST).decode(text)
    except RecursionError:
        raise LineError(f"nested deeper than {MAX_DEPTH} levels") from None
    # Counting brackets is cheap; walking the object only when there are many.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(obj, MAX_DEPTH) > MAX_DEPTH:
        raise LineError(f"nested deeper than {MAX_DEPTH} levels")
    return obj
