"""Bad input: one clear line on stderr, a non-zero exit, no traceback."""
import os
import subprocess
import sys

import pytest

from synth_record import sample_lines, write_jsonl


def twtrace(*args, user=None):
    cmd = [sys.executable, "-m", "twtrace", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def one_line_error(r, *words):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("twtrace: "), r.stderr
    for w in words:
        assert w in lines[0]


@pytest.mark.parametrize("args,words", [
    (["record"], ["-o"]),
    (["record", "-o", "x", "--duration", "-1"], ["--duration"]),
    (["record", "-o", "x", "--interval", "0"], ["--interval"]),
    (["record", "-o", "x", "--duration", "abc"], ["abc"]),
    (["record", "-o", "x", "--probe-mode", "magic"], ["probe-mode"]),
    (["record", "-o", "x", "-p", "999999999"], ["no process with pid 999999999"]),
    (["record", "-o", "x", "-t", "999999999"], ["no thread"]),
    (["record", "-o", "x", "--comm", "("], ["--comm"]),
    (["record", "-o", "/nonexistent-dir/x.jsonl"], ["cannot write"]),
    (["record", "--bogus"], ["bogus"]),
    (["record", "-o", "x", "--nice", "20"], ["--nice"]),
    (["report", "/nonexistent.jsonl"], ["no such file"]),
    (["vm", "--kernel", "2.6"], ["no guest for kernel"]),
])
def test_bad_input_is_one_line(args, words):
    one_line_error(twtrace(*args), *words)


def test_corrupt_and_truncated_recordings(tmp_path):
    lines = sample_lines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    one_line_error(twtrace("report", str(bad)), "not JSON")
    cut = tmp_path / "cut.jsonl"
    write_jsonl(cut, lines[:-1])
    one_line_error(twtrace("report", str(cut)), "truncated")
    other = tmp_path / "v2.jsonl"
    write_jsonl(other, [dict(lines[0], schema=2)] + lines[1:])
    one_line_error(twtrace("report", str(other)), "schema 2")


def test_report_renders_a_recording(tmp_path):
    good = tmp_path / "good.jsonl"
    write_jsonl(good, sample_lines())
    r = twtrace("report", str(good))
    assert r.returncode == 0, r.stderr
    assert "Callbacks" in r.stdout


def test_record_on_a_host_that_cannot_trace_says_why(tmp_path):
    from twtrace.doctor import can_trace_reason

    reason = can_trace_reason()
    if reason is None:
        pytest.skip("this host can trace")
    out = tmp_path / "r.jsonl"
    r = twtrace("record", "-o", str(out), "--duration", "1")
    one_line_error(r, "cannot trace this host")
    assert not out.exists() and not (tmp_path / "r.jsonl.partial").exists()
