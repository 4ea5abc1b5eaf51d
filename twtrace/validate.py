"""Flag checks shared by the commands: one line (UserError, exit 2) for a
value that parses but means nothing (nan, inf, 1e-300 s, a negative count)."""
from __future__ import annotations

import enum
import math
import re
from typing import Iterable, Optional

from twtrace.errors import UserError

MIN_INTERVAL = 0.01  # seconds: below this a snapshot costs more than it shows
MAX_SECONDS = 366 * 24 * 3600.0  # a year: far beyond any trace, far below float trouble
MAX_COUNT = 10 ** 9
MAX_SPEED = 1e6


class ProbeMode(str, enum.Enum):
    """--probe-mode's choices (typer shows them and refuses others)."""
    auto = "auto"
    kprobe = "kprobe"
    fentry = "fentry"


PROBE_MODES = tuple(m.value for m in ProbeMode)


def seconds(flag: str, value: Optional[float], low: float = 0.0,
            high: float = MAX_SECONDS) -> None:
    """None (not given) passes; else finite, > 0, >= low, <= high."""
    if value is None:
        return
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{flag} must be a positive number of seconds, not {value!r}")
    if value < low:
        raise UserError(f"{flag} must be at least {low:g} seconds, not {value!r}")
    if value > high:
        raise UserError(f"{flag} must be at most {high:g} seconds, not {value!r}")


def count(flag: str, value: Optional[int], low: int = 1, high: int = MAX_COUNT) -> None:
    if value is None:
        return
    if not low <= value <= high:
        raise UserError(f"{flag} must be between {low} and {high}, not {value}")


def choice(flag: str, value, choices: Iterable[str]) -> None:
    value = getattr(value, "value", value)
    choices = tuple(choices)
    if value not in choices:
        raise UserError(f"{flag} must be {', '.join(choices[:-1])} or {choices[-1]}, "
                        f"not {value!r}")


def regex(flag: str, text: Optional[str]):
    """None passes (not given); empty is refused (it would match everything,
    which is what leaving the flag out means)."""
    if text is None:
        return None
    if text == "":
        raise UserError(f"{flag} must not be empty (leave it out to match everything)")
    try:
        return re.compile(text)
    except re.error as e:
        raise UserError(f"{flag} {text!r} is not a valid regular expression: {e}") from None


def speed(value: float) -> None:
    """--speed after parsing: 0 = max, else finite, positive, at most MAX_SPEED."""
    if value == 0:
        return
    if not math.isfinite(value) or value < 0 or value > MAX_SPEED:
        raise UserError(f"--speed must be a positive number up to {MAX_SPEED:g}, "
                        f"or max, not {value!r}")
    if value < 1e-3:
        raise UserError(f"--speed must be at least 0.001, not {value!r}")
