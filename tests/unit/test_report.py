from __future__ import annotations

import re

import jsonschema
import pytest
from rich.console import Console

import synth_record as sr
from twtrace.hist import Histogram, log2_rows
from twtrace.recordfile import load_schema, read_record
from twtrace.report import BAR_MAX, histogram_lines, render_report
from twtrace.units import format_count, format_ns

LAT_KEYS = ("p50", "p90", "p99", "max")


def render(record, width, **kw):
    console = Console(record=True, width=width, color_system=None, force_terminal=False)
    render_report(record, console, **kw)
    return console.export_text()


@pytest.fixture
def sample(tmp_path):
    lines = sr.sample_lines()
    validator = jsonschema.Draft202012Validator(load_schema())
    for line in lines:
        validator.validate(line)
    return lines, read_record(sr.write_jsonl(tmp_path / "sample.jsonl", lines))


def final_aggregates(lines):
    start = max(i for i, line in enumerate(lines) if line["type"] == "snapshot" and line["final"])
    tail = lines[start + 1:-1]
    return [t for t in tail if t["type"] == "task"], [f for f in tail if f["type"] == "func"]


@pytest.mark.parametrize("width", [200, 80])
def test_report_shows_final_snapshot_numbers(sample, width):
    lines, record = sample
    text = render(record, width)
    assert all(len(line) <= width for line in text.splitlines())

    for word in ("6.8.0-test", "x86_64", "fentry", "testhost", "1.50s", "sleep 1"):
        assert word in text
    assert "3 events were lost; 2 entries did not fit in kernel maps" in text

    tasks, funcs = final_aggregates(lines)
    for t in tasks:
        assert t["comm"] in text
        for key in ("queue_ns", "run_ns"):
            for k in LAT_KEYS:
                assert format_ns(t[key][k]) in text, (t["comm"], key, k)
    for f in funcs:
        assert f["func"] in text
        for key in ("queue_ns", "run_ns"):
            for k in LAT_KEYS:
                assert format_ns(f[key][k]) in text, (f["func"], key, k)

    # Table rows carry the counts in column order, whatever the width.
    rows = [line.split() for line in text.splitlines()]
    fput = next(r for r in rows if r and r[0] == "__fput" and len(r) > 5)
    assert fput[1:5] == ["41", "0", "41", "0"]  # ADD FAIL CB CNCL
    sleep = next(r for r in rows if r[:3] == ["100", "100", "sleep"])
    assert sleep[3:10] == ["44", "1", "1", "43", "43", "2", "7"]
    worker = next(r for r in rows if r[:3] == ["100", "101", "worker"])
    assert worker[3:5] == ["7", "0"]

    assert "sleep[100]→sleep[100] ×30" in text
    assert "swapper/0[0]→sleep[100] ×3" in text
    io_row = next(r for r in rows if r and r[0] == "io_task_work_run" and "no" in r)
    assert io_row  # unprobed: run times are batch-level

    # The busiest-first order of the task table.
    assert text.index("100 sleep") < text.index("101 worker")


def test_report_histograms(sample):
    lines, record = sample
    _, funcs = final_aggregates(lines)
    fput = next(f for f in funcs if f["func"] == "__fput")
    text = render(record, 120, histograms=1)
    assert "__fput: queue latency" in text and "__fput: run time, 41 samples" in text
    assert "task_mm_cid_work: queue latency" not in text
    for row in log2_rows(Histogram.from_pairs(fput["queue_ns"]["hist"])):
        pattern = rf"{re.escape(format_ns(row.lo))} -> +{re.escape(format_ns(row.hi))} : +{row.count} \|"
        assert re.search(pattern, text), pattern
    text = render(record, 120, histograms=0)
    assert "distribution" not in text


def test_histogram_lines_bars():
    h = Histogram()
    h.add(1500, n=100)
    h.add(9000, n=1)
    lines = [t.plain for t in histogram_lines(h, width=80)]
    assert "count distribution" in lines[0]
    body = lines[1:]
    assert len(body) == 4  # [1024,2048) ... [8192,16384)
    assert body[0].count("*") == BAR_MAX
    assert body[1].count("*") == 0 and body[2].count("*") == 0
    assert body[3].count("*") == 1  # a single hit still shows
    assert len({len(line) for line in body}) == 1
    narrow = [t.plain for t in histogram_lines(h, width=40)]
    assert max(len(line) for line in narrow) <= 40
    assert histogram_lines(Histogram()) == []


def test_top_limits_rows(sample):
    _, record = sample
    text = render(record, 200, top=1)
    assert "Tasks: top 1 of 2" in text and "Callbacks: top 1 of 3" in text
    assert "worker" not in text.split("Callbacks:")[0]
    text = render(record, 200, top=None)
    assert "Tasks: 2, by adds" in text and "Callbacks: 3, by adds" in text


def test_non_final_and_missing_snapshot(tmp_path):
    lines = [sr.header(), sr.snapshot(seq=4, final=False, ts_ns=sr.START + 2_000_000_000),
             sr.task([1000], [2000]), sr.func([1000], [2000]),
             sr.summary(interrupted=True, exit_status=None)]
    text = render(read_record(sr.write_jsonl(tmp_path / "a.jsonl", lines)), 100)
    assert "#4 at +2.00s (not final)" in text and "interrupted" in text
    assert "lower bounds" not in text

    lines = [sr.header(), sr.summary()]
    text = render(read_record(sr.write_jsonl(tmp_path / "b.jsonl", lines)), 80)
    assert "No aggregate snapshot in this recording." in text

    lines = [sr.header(), sr.snapshot(), sr.summary()]
    text = render(read_record(sr.write_jsonl(tmp_path / "c.jsonl", lines)), 80)
    assert "No task received task_work." in text and "No task_work callbacks seen." in text


def test_names_are_not_markup(tmp_path):
    lines = [sr.header(filters={"pids": [], "tids": [], "comm": "[bold]x", "command": None}),
             sr.snapshot(), sr.task([5], [5], comm="[red]evil"),
             sr.func([5], [5], func="[blink]f"), sr.summary()]
    text = render(read_record(sr.write_jsonl(tmp_path / "m.jsonl", lines)), 200)
    assert "[red]evil" in text and "[blink]f" in text and "[bold]x" in text


def test_lost_and_evicted_highlighted(sample):
    _, record = sample
    console = Console(record=True, width=200, color_system="standard", force_terminal=True)
    render_report(record, console)
    styled = console.export_text(styles=True).split("\n", 1)[1]  # past the path, which names the test
    def value_and_style(label):
        """The first word after label, and the last SGR code set before it."""
        m = re.search(re.escape(label) + r"((?:\x1b\[[0-9;]*m|\s)*)(\w+)", styled)
        return m.group(2), re.findall(r"\x1b\[([0-9;]*)m", m.group(1))[-1]

    assert value_and_style("lost events") == ("3", "1;31")
    assert value_and_style("maps full") == ("2", "1;31")
    assert value_and_style("unmatched") == ("1", "33")
    assert value_and_style("cancels") == ("1", "0")


def test_long_names_and_big_numbers_fit_80_columns(tmp_path):
    big = [10**5 * (i + 1) for i in range(300)]
    lines = [sr.header(), sr.snapshot()]
    lines += [sr.task(big, big, tid=4194000 + i, pid=4194000, comm="averylongcomm15",
                      adds=12_345_678, failed_adds=99_999, cancels=123_456, callbacks=1_234_567,
                      runs=7_654_321, depth=123, max_depth=4567,
                      busiest="io_req_task_work_add_remote") for i in range(3)]
    lines += [sr.func(big, big, func=f"0xffffffff8123456{i}") for i in range(3)]
    lines.append(sr.summary())
    text = render(read_record(sr.write_jsonl(tmp_path / "big.jsonl", lines)), 80)
    assert all(len(line) <= 80 for line in text.splitlines())
    for number in ("12.3M", "100k", "123k", "1.23M", "7.65M", "4567",
                   format_count(300), format_ns(big[-1])):
        assert number in text
    assert "…" in text  # names were shortened, numbers were not


@pytest.mark.parametrize("fields, shown", [
    ({}, "skipped runs unknown"),  # recordings from kernels before 5.12, or older twtrace
    ({"skipped_runs": 0, "recovered": 0}, "skipped runs 0"),
    ({"skipped_runs": 2}, "skipped runs 2"),
    ({"full": {"aggs": 2, "tasks": 0}}, "maps full aggs 2"),  # which map ran out of room
])
def test_skipped_probe_runs_and_full_maps(tmp_path, fields, shown):
    lines = sr.sample_lines()
    lines[-1] = {**lines[-1], **fields}
    text = render(read_record(sr.write_jsonl(tmp_path / "s.jsonl", lines)), 200)
    assert shown in re.sub(r" +", " ", text)
