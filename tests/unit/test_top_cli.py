"""`twtrace top` through the command line: plain tables, JSON Lines, replay,
and bad input as one line on stderr."""
from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

import synth_record as sr
from test_cli import one_line_error
from twtrace.recordfile import load_schema


def twtrace(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "twtrace", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return str(sr.write_jsonl(tmp_path_factory.mktemp("top") / "r.jsonl", sr.top_lines(6)))


def blocks(stdout):
    """The plain output's per-interval blocks, each starting with its stamp line."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("+"):
            out.append([])
        out[-1].append(line)
    return out


def test_plain_replay_prints_one_block_per_snapshot(rec):
    r = twtrace("top", "--replay", rec, "--speed", "max")
    assert r.returncode == 0, r.stderr
    got = blocks(r.stdout)
    assert [b[0].split()[0] for b in got] == ["+1.00s", "+2.00s", "+3.00s", "+4.00s",
                                              "+5.00s", "+6.00s"]
    assert all(len(line) < 80 for line in r.stdout.splitlines())
    last = got[-1]
    assert "items 225/s" in last[0] and "lost 5" in last[0]
    pg = [line for line in last if " postgres " in line][0]
    assert pg.split()[:5] == ["4242", "4242", "postgres", "120", "120"]
    assert any(line.startswith("FUNC") for line in last)
    assert "\x1b[" not in r.stdout  # no colour codes into a pipe


def test_count_limits_the_blocks(rec):
    r = twtrace("top", "1", "2", "--replay", rec, "--speed", "max")
    assert r.returncode == 0, r.stderr
    assert len(blocks(r.stdout)) == 2


def test_recorded_pace(rec):
    import time

    t0 = time.monotonic()
    r = twtrace("top", "0.25", "2", "--replay", rec, "--speed", "4")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    # first block at once, the second one tick (0.25 s = 1 recorded second) later
    assert [b[0].split()[0] for b in blocks(r.stdout)] == ["+1.00s", "+2.00s"]
    assert took >= 0.25


def test_json_lines_are_record_lines_plus_rates(rec):
    r = twtrace("top", "--replay", rec, "--speed", "max", "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    validator = jsonschema.Draft202012Validator(load_schema())
    for line in lines:
        validator.validate(line)
    snaps = [x for x in lines if x["type"] == "snapshot"]
    assert len(snaps) == 6 and snaps[-1]["final"] is True
    assert snaps[-1]["items_per_s"] == 225.0 and snaps[-1]["interval_ns"] == 1_000_000_000
    assert snaps[2]["lost_events"] == 5
    last_tasks = lines[lines.index(snaps[-1]) + 1:]
    pg = [x for x in last_tasks if x["type"] == "task" and x["tid"] == 4242][0]
    assert pg["adds"] == 720 and pg["adds_per_s"] == 120.0
    fput = [x for x in last_tasks if x["type"] == "func" and x["func"] == "____fput"][0]
    assert fput["callbacks_per_s"] == 180.0


def test_replay_filters(rec):
    r = twtrace("top", "--replay", rec, "--speed", "max", "--json", "-p", "4242",
                "--func", "fput")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert {x["comm"] for x in lines if x["type"] == "task"} == {"postgres", "pg_worker"}
    assert {x["func"] for x in lines if x["type"] == "func"} == {"____fput"}
    r = twtrace("top", "--replay", rec, "--speed", "max", "--comm", "^ng")
    assert " nginx " in r.stdout and "postgres " not in r.stdout.replace("postgres[", "")


def test_single_final_snapshot_recording(tmp_path):
    path = sr.write_jsonl(tmp_path / "one.jsonl", sr.sample_lines()[:8] + sr.sample_lines()[11:])
    r = twtrace("top", "--replay", str(path))  # speed 1, but only one snapshot: no wait
    assert r.returncode == 0, r.stderr
    assert len(blocks(r.stdout)) == 1 and "worker" in r.stdout


@pytest.mark.parametrize("lines,words", [
    (lambda ls: ls[:-1], ["truncated"]),
    (lambda ls: [dict(ls[0], schema=2)] + ls[1:], ["schema 2"]),
    (lambda ls: [ls[0], ls[-1]], ["no snapshot"]),
])
def test_bad_recordings(tmp_path, lines, words):
    path = sr.write_jsonl(tmp_path / "bad.jsonl", lines(sr.top_lines(2)))
    one_line_error(twtrace("top", "--replay", str(path)), *words)


def test_corrupt_and_missing_recordings(tmp_path):
    bad = tmp_path / "corrupt.jsonl"
    bad.write_text(sr.dumps(sr.top_lines(2)[:3]) + "{not json\n")
    one_line_error(twtrace("top", "--replay", str(bad)), "not JSON")
    cut = tmp_path / "cut.jsonl"
    cut.write_text(sr.dumps(sr.top_lines(2))[:-40])
    one_line_error(twtrace("top", "--replay", str(cut)), "truncated")
    one_line_error(twtrace("top", "--replay", str(tmp_path / "none.jsonl")), "no such file")


@pytest.mark.parametrize("args,words", [
    (["top", "0"], ["interval"]),
    (["top", "--interval", "-1"], ["interval"]),
    (["top", "1", "0"], ["COUNT"]),
    (["top", "2", "--interval", "3"], ["INTERVAL", "--interval"]),
    (["top", "--speed", "fast"], ["--speed"]),
    (["top", "--speed", "-2"], ["--speed"]),
    (["top", "--comm", "("], ["--comm"]),
    (["top", "--func", "[x"], ["--func"]),
    (["top", "--probe-mode", "magic"], ["probe-mode"]),
    (["top", "--bogus"], ["bogus"]),
    (["top", "-p", "999999999"], ["no process with pid 999999999"]),
    (["top", "abc"], ["abc"]),
])
def test_bad_flags_are_one_line(args, words):
    one_line_error(twtrace(*args), *words)


def test_live_on_a_host_that_cannot_trace_says_why():
    from twtrace.doctor import can_trace_reason

    reason = can_trace_reason()
    if reason is None:
        pytest.skip("this host can trace; the live path is covered by tests/vm")
    one_line_error(twtrace("top", "1", "1"), "cannot trace this host")
