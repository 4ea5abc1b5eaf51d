"""Property-based: any single-field corruption of a valid recording gives
either a one-line UserError or a working reader, report, --replay, --json
and interactive screen.  Fixed seed (derandomize) and a bounded budget."""
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from rich.console import Console

import synth_record as sr
from twtrace.errors import UserError
from twtrace.recordfile import read_record
from twtrace.report import render_report
from twtrace.top import plain, render
from twtrace.top.sources import ReplaySource
from twtrace.top.state import Filters, TopState

# deadline: generous (the suite runs next to emulated guests), but a hang fails.
BUDGET = settings(derandomize=True, max_examples=60, deadline=30000, database=None,
                  suppress_health_check=[HealthCheck.too_slow,
                                         HealthCheck.function_scoped_fixture])
BASE = sr.top_lines(3)

VALUES = st.one_of(
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.sampled_from([2 ** 63, 2 ** 64 - 1, 2 ** 64, -1, 0, 10 ** 95]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e95, 1e308, -0.0, 0.5]),
    st.text(max_size=6), st.none(), st.booleans(),
    st.lists(st.integers(min_value=-3, max_value=2 ** 65), max_size=4),
    st.just({}),
)


def leaf_paths(obj, path=()):
    """Every place in a line a value can be swapped (dict keys and list items)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path + (k,)
            yield from leaf_paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield path + (i,)
            yield from leaf_paths(v, path + (i,))


def replaced(line, path, value):
    line = json.loads(json.dumps(line))
    target = line
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return line


def exercise(path):
    """What a user can do with a file; only UserError may escape."""
    try:
        rec = read_record(str(path), keep_events=False)
    except UserError as e:
        assert "\n" not in str(e) and str(e)
        return "refused"
    render_report(rec, Console(file=io.StringIO(), width=100), top=5, histograms=2)
    try:
        src = ReplaySource(str(path), speed=0)
    except UserError as e:
        assert "\n" not in str(e)
        return "refused"
    state = TopState(src.meta, 1.0, Filters(), baseline=src.baseline())
    while not src.done:
        state.push(src.next(1.0))
        plain.json_text(state)
        plain.frame(state, 79)
        for w, h in ((80, 24), (40, 12), (200, 50)):
            render.screen_lines(state, w, h)
        state.open_detail()
        render.screen_lines(state, 80, 24)
        state.close()
    return "shown"


@BUDGET
@given(data=st.data())
def test_one_field_corrupted(tmp_path, data):
    lines = list(BASE)
    i = data.draw(st.integers(min_value=0, max_value=len(lines) - 1), label="line")
    paths = list(leaf_paths(lines[i]))
    where = data.draw(st.sampled_from(paths), label="path")
    lines[i] = replaced(lines[i], where, data.draw(VALUES, label="value"))
    path = tmp_path / "fuzz.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    exercise(path)


RAW = st.sampled_from([
    '{"type":"header","x":' + "[" * 3000 + "]" * 3000 + "}",
    '{"type":"header","schema":' + "9" * 5000 + "}",
    '{"type":"header","schema":1e999}', '{"type":"header","schema":NaN}',
    '{"type":"header","schema":-Infinity}', "[" * 100000, '"' + "a" * 100 + '"',
    "\x00\xff", "{}", "[]", "null", "1",
])


@BUDGET
@given(line=st.integers(min_value=0, max_value=len(BASE)), raw=RAW)
def test_hostile_raw_line(tmp_path, line, raw):
    text = [json.dumps(x) for x in BASE]
    text.insert(line, raw)
    path = tmp_path / "raw.jsonl"
    path.write_text("\n".join(text) + "\n", errors="surrogateescape")
    assert exercise(path) == "refused"


def test_the_unchanged_recording_is_shown(tmp_path):
    path = sr.write_jsonl(tmp_path / "ok.jsonl", BASE)
    assert exercise(path) == "shown"  # so the property above can fail
