"""twtrace top's screen, rendered to a recording rich Console."""
from __future__ import annotations

import io
import json
import re

import pytest
from rich.cells import cell_len
from rich.console import Console

import synth_record as sr
from twtrace.top import keys, plain
from twtrace.top.render import MIN_H, MIN_W, screen, screen_lines, too_small
from twtrace.top.sample import Meta, Sample
from twtrace.top.sources import ReplaySource
from twtrace.top.state import FUNCS, TASKS, TopState
from twtrace.units import format_ns


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return str(sr.write_jsonl(tmp_path_factory.mktemp("top") / "r.jsonl", sr.top_lines(6)))


@pytest.fixture
def make_state(recording):
    """A state that has seen every snapshot of the recording, as replay does."""
    def make():
        src = ReplaySource(recording, speed=0)
        st = TopState(src.meta, baseline=src.baseline())
        while not src.done:
            st.push(src.next(1.0))
        return st
    return make


def draw(st, width=80, height=24):
    console = Console(record=True, width=width, height=height, color_system=None,
                      force_terminal=False)
    console.print(screen(st, width, height))
    return console.export_text().rstrip("\n").split("\n")


def row_line(lines, word):
    found = [line for line in lines if re.search(rf"\b{re.escape(word)}\b", line)]
    assert found, f"{word!r} not on screen"
    return found[0]


def test_80x24_screen_fits_and_shows_the_essentials(make_state):
    st = make_state()
    lines = draw(st)
    assert len(lines) == 24
    assert all(len(line) <= 80 for line in lines)
    assert "db1" in lines[0] and "6.1.0-18-amd64" in lines[0] and "fentry" in lines[0]
    assert "every 1s" in lines[0] and "REPLAY" in lines[0]
    assert "items 225/s" in lines[1] and "lost 5" in lines[1] and "full 0" in lines[1] and "unmatched 0" in lines[1]
    assert lines[2].startswith("Tasks: 6")
    head = lines[3]
    for col in ("PID", "COMM", "ADD/s▼", "CB/s", "DEP", "Q99", "R99"):
        assert col in head
    assert row_line(lines, "postgres").split()[:5] == [">4242", "4242", "postgres", "120", "120"]
    assert "q quit" in lines[-1]


def test_numbers_are_right_aligned_under_their_heads(make_state):
    lines = draw(make_state())
    head = lines[3]
    end = head.index("CB/s") + len("CB/s")
    for comm in ("postgres", "pg_worker", "nginx", "python3"):
        line = row_line(lines, comm)
        assert line[end - 1] != " " and (end == len(line) or line[end] == " "), line
    q99 = head.index("Q99") + len("Q99")
    cells = [row_line(lines, c)[q99 - 6:q99] for c in ("postgres", "python3")]
    assert all(re.fullmatch(r" *[0-9.]+(ns|µs|ms|s)", c) for c in cells), cells


def test_units_scale(make_state):
    lines = draw(make_state())
    py = row_line(lines, "python3")
    pg = row_line(lines, "postgres")
    assert re.search(r"\d ?ms\b", py) and "µs" in pg  # ~2.5 ms queue vs µs
    task = make_state().rows[TASKS][1200]
    assert format_ns(task.queue["p99"]) in py


@pytest.mark.parametrize("width", [60, 70, 80, 100, 140, 200])
def test_columns_drop_by_priority_as_width_shrinks(make_state, width):
    st = make_state()
    lines = draw(st, width)
    assert all(len(line) <= width for line in lines)
    head = lines[3]
    for col in ("PID", "COMM", "ADD/s▼", "CB/s"):
        assert col in head
    if width >= 140:
        for col in ("TID", "Q50", "R50", "FAIL", "CNCL", "BUSIEST"):
            assert col in head
    if width <= 80:
        assert "R50" not in head and "Q50" not in head  # the least important go first


def test_callbacks_view(make_state):
    st = make_state()
    keys.handle(st, "tab")
    lines = draw(st)
    assert lines[2].startswith("Callbacks: 4")
    assert "FUNC" in lines[3] and "TOP ADDER" in lines[3]
    fput = row_line(lines, "____fput")
    assert fput.split()[1:3] == ["180", "180"]
    assert "postgres[4242]" in fput


def test_sort_marker_and_reverse(make_state):
    st = make_state()
    keys.handle(st, "s")
    head = draw(st)[3]
    assert "CB/s▼" in head and "ADD/s▼" not in head
    keys.handle(st, "r")
    assert "CB/s▲" in draw(st)[3]


def test_selection_marker_moves(make_state):
    st = make_state()
    assert row_line(draw(st), "postgres").startswith(">")
    keys.handle(st, "down")
    lines = draw(st)
    assert row_line(lines, "pg_worker").startswith(">")
    assert not row_line(lines, "postgres").startswith(">")


def test_detail_pane_has_histograms_and_who_queues(make_state):
    st = make_state()
    keys.handle(st, "enter")
    text = "\n".join(draw(st, 80, 60))
    assert "postgres" in text and "tid 4242" in text
    assert "queue latency (last interval)  120 samples" in text
    assert text.count("range : count distribution") == 2
    assert re.search(r"µs -> .*µs : +\d+ \|\*+ *\|", text)
    assert "postgres[4242] → postgres[4242]  ____fput  ×720" in text


def test_detail_scrolls_within_24_lines(make_state):
    st = make_state()
    keys.handle(st, "enter")
    first = draw(st)
    keys.handle(st, "down")
    second = draw(st)
    assert first[3] != second[3] and second[3] == first[4]


def test_help_overlay(make_state):
    st = make_state()
    keys.handle(st, "?")
    text = "\n".join(draw(st))
    assert "Keys" in text and "pause / resume" in text and "switch view" in text


def test_filter_prompt_and_applied_filter(make_state):
    st = make_state()
    for k in "fpg_":
        keys.handle(st, k)
    assert "filter (pid, comm or cgroup regex): pg_" in draw(st)[-1]
    keys.handle(st, "enter")
    lines = draw(st)
    assert "filter: pg_" in lines[2] and lines[2].startswith("Tasks: 1")
    assert [line for line in lines if "postgres" in line] == []


def test_paused_and_quiet_rows_styles(make_state):
    st = make_state()
    keys.handle(st, " ")
    assert "PAUSED" in draw(st)[0]
    styled = screen_lines(st, 80, 24)
    keyctl = [t for t in styled if "keyctl" in t.plain][0]
    assert "dim" in str(keyctl.style) or any("dim" in str(s.style) for s in keyctl.spans)
    postgres = [t for t in styled if "postgres" in t.plain][0]
    assert "dim" not in str(postgres.style)


def test_markup_in_names_is_shown_as_is(make_state):
    meta = Meta(start_ns=sr.START)
    st = TopState(meta)
    st.push(Sample(sr.snapshot(), [sr.task([1000], [10], comm="[red]x[/]")]))
    assert "[red]x[/]" in "\n".join(draw(st))


def test_live_header_shows_cost(make_state):
    meta = Meta(hostname="h", start_ns=sr.START)
    st = TopState(meta, baseline=Sample({"ts_ns": sr.START}, bpf={"run_time_ns": 0}, cpu_s=0.0))
    s = Sample(sr.snapshot(ts_ns=sr.START + 1_000_000_000), [sr.task([1000], [10])],
               lost=0, evicted=0, bpf={"run_time_ns": 1_230_000}, cpu_s=0.02)
    st.push(s)
    lines = draw(st)
    assert "LIVE" in lines[0] and "cost: bpf 0.12% cpu 2.00%" in lines[1]


@pytest.mark.parametrize("size", [(59, 24), (80, 9), (20, 5)])
def test_too_small_terminal_shows_a_message(make_state, size):
    st = make_state()
    assert too_small(*size)
    lines = draw(st, *size)
    assert "too small" in " ".join(lines)
    assert too_small(MIN_W, MIN_H) is None


def test_empty_and_waiting_states(make_state):
    st = TopState(Meta(start_ns=sr.START))
    assert "waiting for the first snapshot" in "\n".join(draw(st))
    st.push(Sample(sr.snapshot()))
    assert "No task received task_work yet." in "\n".join(draw(st))


def test_plain_frame_under_80_columns(make_state):
    st = make_state()
    out = [t.plain for t in plain.frame(st, 79)]
    assert all(len(line) <= 79 for line in out)
    assert out[0].startswith("+6.00s items 225/s")
    assert any(line.startswith("FUNC") for line in out)
    assert not any(line.startswith(">") for line in out)
    assert all(line == line.rstrip() for line in out)


@pytest.mark.parametrize("width", [79, 40, 12])
def test_plain_text_for_a_pipe_is_what_rich_prints(make_state, width):
    st = make_state()
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False,
                      highlight=False)
    for line in plain.frame(st, width):
        console.print(line, no_wrap=True, overflow="ellipsis")
    text = plain.frame_text(st, width)
    assert text == console.file.getvalue()
    assert text.startswith(("+6.00s items 225/s" if width > 40 else "+6.00s item")) and "PID" in text


@pytest.mark.parametrize("s", ["plain ascii line that is long", "wide 漢字漢字漢字漢字 comm", "é" * 30])
def test_fitting_a_line_counts_cells(s):
    for width in (8, 15, 29, 40):
        fitted = plain._fit(s, width)
        assert cell_len(fitted) <= width
        assert fitted == s or fitted.endswith("…")


def test_skipped_probe_runs_show_once_there_are_some(make_state):
    """The kernel's count of skipped probe runs is shown in the header and the
    JSON snapshot; the header leaves it out while it is 0 or unknown."""
    meta = Meta(hostname="h", start_ns=sr.START)
    for skipped, shown in ((None, False), (0, False), (3, True)):
        st = TopState(meta, baseline=Sample({"ts_ns": sr.START}, lost=0))
        st.push(Sample(sr.snapshot(ts_ns=sr.START + 1_000_000_000), [sr.task([1000], [10])],
                       lost=0, evicted=0, skipped=skipped))
        header = draw(st)[1]
        assert ("skipped 3" in header) == shown, header
        assert ("skipped 3" in plain.frame(st, 80)[0].plain) == shown
        assert plain.json_group(st)[0]["skipped_runs"] == skipped


def test_json_lines_reuse_unchanged_lines_and_say_the_same():
    """The live --json writer keeps the text of a line object it has
    encoded; what it writes is exactly json_text's, tick after tick."""
    meta = Meta(hostname="h", start_ns=sr.START)
    st = TopState(meta, baseline=Sample({"ts_ns": sr.START}, lost=0))
    idle, busy = sr.task([1000], [10], tid=7), sr.task([1000], [10], tid=8)
    writer = plain.JsonLines()
    for n in range(1, 4):
        busy = dict(busy, adds=busy["adds"] + 1, callbacks=busy["callbacks"] + 1)
        st.push(Sample(sr.snapshot(ts_ns=sr.START + n * 1_000_000_000, seq=n), [idle, busy],
                       lost=0, evicted=0))
        text = writer.text(st)
        assert text == plain.json_text(st)
        assert [json.loads(x)["type"] for x in text.splitlines()] == ["snapshot", "task", "task"]
    assert {id(line) for line, _ in writer._cache.values()} == {id(idle), id(busy)}


def test_items_top_caused_itself_are_shown_as_a_rate_beside_its_cost():
    """The kernel counts adds to twtrace's own threads apart from the view;
    the header shows their rate over the interval, and the JSON snapshot too."""
    meta = Meta(hostname="h", start_ns=sr.START)
    st = TopState(meta, baseline=Sample(dict(sr.snapshot(ts_ns=sr.START), self_adds=4), lost=0,
                                        bpf={"run_time_ns": 0, "run_cnt": 0}, cpu_s=0.0))
    st.push(Sample(dict(sr.snapshot(ts_ns=sr.START + 2_000_000_000), self_adds=10),
                   [sr.task([1000], [10])], lost=0, evicted=0,
                   bpf={"run_time_ns": 1000, "run_cnt": 1}, cpu_s=0.1))
    assert st.totals.self_s == 3.0
    assert "self 3.00/s" in draw(st)[1]
    assert "self 3.00/s" in plain.frame(st, 80)[0].plain
    assert plain.json_group(st)[0]["self_adds_per_s"] == 3.0
    assert plain.json_group(st)[0]["self_adds"] == 10  # cumulative, like the other counters
    # a recording from before they were counted: unknown, not 0
    old = TopState(meta, baseline=Sample(sr.snapshot(ts_ns=sr.START), lost=0))
    old.push(Sample(sr.snapshot(ts_ns=sr.START + 10**9), [sr.task([1000], [10])], lost=0))
    assert old.totals.self_s is None and "self" not in draw(old)[1]
