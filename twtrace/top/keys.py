"""Keys: terminal bytes to key names, and key names to TopState actions.

Pure: the app reads the bytes, this module decides what they mean, so
every key is unit-tested without a terminal."""
from __future__ import annotations

from typing import Callable, Dict, List

from twtrace.top.state import PAGE, TopState

# Escape sequences of xterm-like terminals (tmux, VTE, the Linux console).
SEQUENCES = {
    "\x1b[A": "up", "\x1b[B": "down", "\x1bOA": "up", "\x1bOB": "down",
    "\x1b[5~": "pgup", "\x1b[6~": "pgdn", "\x1b[H": "home", "\x1b[F": "end",
    "\x1b[1~": "home", "\x1b[4~": "end", "\x1bOH": "home", "\x1bOF": "end",
    "\x1b[Z": "backtab", "\x1b[C": "right", "\x1b[D": "left",
}
SINGLE = {"\r": "enter", "\n": "enter", "\t": "tab", "\x7f": "backspace", "\x08": "backspace",
          "\x1b": "esc"}


def decode(data: bytes) -> List[str]:
    """Key names in a chunk read from a raw terminal.  An escape byte that
    starts no known sequence is Esc on its own (terminals send a whole
    sequence in one write, so it is not split across reads in practice)."""
    text = data.decode("utf-8", errors="replace")
    keys: List[str] = []
    i = 0
    while i < len(text):
        for seq, name in SEQUENCES.items():
            if text.startswith(seq, i):
                keys.append(name)
                i += len(seq)
                break
        else:
            if text[i] == "\x1b" and text.startswith("\x1b[", i):
                i = _skip_csi(text, i)  # an unknown sequence: ignore it whole
                continue
            keys.append(SINGLE.get(text[i], text[i]))
            i += 1
    return keys


def _skip_csi(text: str, i: int) -> int:
    j = i + 2
    while j < len(text) and not ("@" <= text[j] <= "~"):
        j += 1
    return j + 1


ACTIONS: Dict[str, Callable[[TopState], None]] = {
    "q": lambda s: setattr(s, "quit", True),
    "Q": lambda s: setattr(s, "quit", True),
    " ": TopState.toggle_pause,
    "s": lambda s: s.next_sort(1),
    "S": lambda s: s.next_sort(-1),
    "r": TopState.toggle_reverse,
    "f": TopState.begin_filter,
    "/": TopState.begin_filter,
    "tab": TopState.switch_view,
    "backtab": TopState.switch_view,
    "up": lambda s: s.move(-1),
    "k": lambda s: s.move(-1),
    "down": lambda s: s.move(1),
    "j": lambda s: s.move(1),
    "pgup": lambda s: s.move(-PAGE),
    "pgdn": lambda s: s.move(PAGE),
    "home": lambda s: s.move_to(False),
    "end": lambda s: s.move_to(True),
    "enter": TopState.open_detail,
    "esc": TopState.close,
    "+": lambda s: s.change_interval(1),
    "=": lambda s: s.change_interval(1),
    "-": lambda s: s.change_interval(-1),
    "c": TopState.toggle_cumulative,
    "?": TopState.toggle_help,
    "h": TopState.toggle_help,
}

# The help overlay's text, in the order shown.
HELP = [
    ("q", "quit (Ctrl-C too)"),
    ("space", "pause / resume sampling"),
    ("s / S", "sort by the next / previous column"),
    ("r", "reverse the sort order"),
    ("f or /", "filter by pid/tid or comm/function/cgroup regex (Esc cancels)"),
    ("Tab", "switch view: tasks / callbacks / cgroups"),
    ("Up / Down", "select a row (j / k, PgUp / PgDn, Home / End)"),
    ("Enter", "detail of the selected row: histograms, who queues (Esc)"),
    ("+ / -", "longer / shorter refresh interval"),
    ("c", "latency columns: last interval / since tracing began"),
    ("?", "this help (any key closes it)"),
]


def handle(state: TopState, key: str) -> None:
    """Apply one key to the state."""
    if state.editing is not None:
        state.filter_key(key)
        return
    if state.help and key not in ("q", "Q"):
        state.help = False  # any other key just closes the help
        return
    action = ACTIONS.get(key)
    if action is not None:
        action(state)
