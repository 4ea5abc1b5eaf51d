from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

import synth_record as sr
from twtrace import recordfile
from twtrace.errors import UserError
from twtrace.hist import Histogram
from twtrace.recordfile import RecordError, load_schema, read_record, validate_line

DOCS = Path(__file__).resolve().parents[2] / "docs" / "format.md"


@pytest.fixture
def full_validator():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture
def structural(monkeypatch):
    """Run validate_line as it does when jsonschema is not installed."""
    monkeypatch.setattr(recordfile, "_jsonschema_class", lambda: None)
    recordfile._checker.cache_clear()
    yield
    recordfile._checker.cache_clear()


def test_schema_has_no_duplicate_keys():
    """json.load keeps the last duplicate silently, which once hid a $defs clash."""
    def no_dups(pairs):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), keys
        return dict(pairs)

    text = (Path(recordfile.__file__).parent / recordfile.SCHEMA_FILE).read_text(encoding="utf-8")
    json.loads(text, object_pairs_hook=no_dups)


def test_sample_lines_valid_against_whole_schema(full_validator):
    lines = sr.sample_lines()
    assert {line["type"] for line in lines} == set(recordfile.line_types())
    for line in lines:
        full_validator.validate(line)
        validate_line(line)


def test_extra_fields_allowed_everywhere(full_validator):
    for line in sr.sample_lines():
        line = dict(line, future_field={"x": 1})
        full_validator.validate(line)
        validate_line(line)


@pytest.mark.parametrize("line, fragment", [
    (sr.header(schema=2), "schema"),
    (sr.header(clock="realtime"), "clock"),
    (sr.header(probe_mode="uprobe"), "probe_mode"),
    (sr.add(notify="loud"), "notify"),
    (sr.add(notify="unknown(x)"), "notify"),
    (sr.add(work="ffff8880"), "work"),
    (sr.add(ok="yes"), "ok"),
    (sr.callback(timing="approx"), "timing"),
    (sr.callback(queue_ns=-5), "queue_ns"),
    (sr.task(queue_ns=dict(sr.latency(), p50=5)), "queue_ns/p50"),
    (sr.task(run_ns=dict(sr.latency([5]), p99=None)), "run_ns/p99"),
    (sr.func(queue_ns=dict(sr.latency([5]), hist=[[4, 1, 2]])), "queue_ns/hist/0"),
    (sr.func(adders=[{"adder_pid": 1}]), "adders/0"),
    (sr.summary(complete=False), "complete"),
    (sr.summary(exit_status="0"), "exit_status"),
])
def test_invalid_lines_rejected(full_validator, line, fragment):
    with pytest.raises(jsonschema.ValidationError):
        full_validator.validate(line)
    with pytest.raises(RecordError) as info:
        validate_line(line)
    message = str(info.value)
    assert "\n" not in message and fragment in message
    assert message.startswith(f"invalid {line['type']} line: ")


def test_notify_unknown_code_and_failed_add_allowed():
    validate_line(sr.add(notify="unknown(7)", ok=False, error=-3))
    validate_line(sr.callback(queue_ns=None, run_ns=None, timing="batch"))


@pytest.mark.parametrize("obj, message", [
    ([], "not a JSON object"),
    ({"ts_ns": 1}, 'no "type" field'),
    ({"type": "bogus"}, "unknown line type 'bogus'"),
])
def test_validate_line_shape(obj, message):
    with pytest.raises(RecordError, match=re.escape(message)):
        validate_line(obj)


def test_structural_fallback(structural, tmp_path):
    assert recordfile.validator_backend() == "structural"
    for line in sr.sample_lines():
        validate_line(line)
    assert read_record(sr.write_jsonl(tmp_path / "r.jsonl", sr.sample_lines())).lost == 3
    bad = sr.add()
    del bad["tid"], bad["notify"]
    with pytest.raises(RecordError, match="invalid add line: missing 'tid', 'notify'"):
        validate_line(bad)
    with pytest.raises(RecordError, match="invalid header line: schema: 1 was expected, got 2"):
        validate_line(sr.header(schema=2))
    with pytest.raises(RecordError, match="unknown line type"):
        validate_line({"type": "bogus"})


def test_required_lists_match_builders():
    """Every required field is produced by the builders, and every builder
    field is declared: the schema and the test data describe the same format."""
    schema = load_schema()
    for line in sr.sample_lines():
        definition = schema["$defs"][line["type"]]
        declared = set(definition["properties"])
        assert set(definition["required"]) <= set(line)
        assert set(line) <= declared, line["type"]


def test_docs_mention_every_field():
    docs = DOCS.read_text(encoding="utf-8")
    schema = load_schema()
    for name in recordfile.line_types():
        assert f'"{name}"' in docs
        for field in schema["$defs"][name]["properties"]:
            assert f"`{field}`" in docs, (name, field)
    for field in schema["$defs"]["latency"]["properties"]:
        assert f"`{field}`" in docs


def test_read_sample(tmp_path):
    path = sr.write_jsonl(tmp_path / "rec.jsonl", sr.sample_lines())
    rec = read_record(path)
    assert rec.path == str(path)
    assert rec.header["kernel"] == "6.8.0-test"
    assert [e["type"] for e in rec.events] == ["add", "add", "cancel", "run", "callback", "callback"]
    assert [(s.seq, s.final, len(s.tasks), len(s.funcs)) for s in rec.snapshots] == \
        [(0, False, 1, 1), (1, True, 2, 3)]
    assert rec.final_snapshot() is rec.snapshots[1]
    assert rec.lost == 3
    assert rec.summary["items"] == 51

    rec = read_record(path, keep_events=False)
    assert rec.events == [] and len(rec.snapshots) == 2


def test_final_snapshot_falls_back_to_last(tmp_path):
    lines = [sr.header(), sr.snapshot(seq=0, final=False), sr.task([5], [6]),
             sr.snapshot(seq=1, final=False, ts_ns=sr.START + 9), sr.summary()]
    rec = read_record(sr.write_jsonl(tmp_path / "r.jsonl", lines))
    assert rec.final_snapshot().seq == 1 and rec.final_snapshot().tasks == []
    rec = read_record(sr.write_jsonl(tmp_path / "r2.jsonl", [sr.header(), sr.summary()]))
    assert rec.final_snapshot() is None and rec.snapshots == []


def test_blank_lines_tolerated(tmp_path):
    text = "\n" + sr.dumps([sr.header()]) + "\n  \n" + sr.dumps([sr.summary()]) + "\n"
    rec = read_record(sr.write_jsonl(tmp_path / "r.jsonl", [], text=text))
    assert rec.summary["complete"] is True


def _good() -> str:
    return sr.dumps(sr.sample_lines())


CORRUPT = {
    "not_json": (
        lambda: sr.dumps([sr.header()]) + "{not json\n" + sr.dumps([sr.summary()]),
        r"^{path}: line 2: not JSON \(.+\)$"),
    "first_not_header": (
        lambda: sr.dumps([sr.add(), sr.summary()]),
        r"^{path}: line 1 is not a twtrace header; this is not a twtrace recording$"),
    "first_not_object": (
        lambda: "[1, 2]\n",
        r"^{path}: line 1 is not a twtrace header; this is not a twtrace recording$"),
    "schema_2": (
        lambda: sr.dumps([{"type": "header", "schema": 2}, sr.summary()]),
        r"^{path}: recorded with schema 2; this twtrace reads schema 1$"),
    "unknown_type": (
        lambda: sr.dumps([sr.header(), {"type": "frobnicate"}, sr.summary()]),
        r"^{path}: line 2: unknown line type 'frobnicate'$"),
    "no_summary": (
        lambda: sr.dumps(sr.sample_lines()[:-1]),
        r"^{path}: truncated: no summary line; the recording was cut short$"),
    "cut_mid_line": (
        lambda: _good()[:-40],
        r"^{path}: truncated: line 18 is incomplete; the recording was cut short$"),
    "after_summary": (
        lambda: _good() + sr.dumps([sr.lost(1)]),
        r"^{path}: line 19: data after the summary line$"),
    "second_header": (
        lambda: sr.dumps([sr.header(), sr.header(), sr.summary()]),
        r"^{path}: line 2: a second header line$"),
    "task_outside_snapshot": (
        lambda: sr.dumps([sr.header(), sr.task(), sr.summary()]),
        r"^{path}: line 2: task line before any snapshot line$"),
    "invalid_line": (
        lambda: sr.dumps([sr.header(), {k: v for k, v in sr.add().items() if k != "tid"},
                          sr.summary()]),
        r"^{path}: line 2: invalid add line: missing 'tid'$"),
    "invalid_aggregate": (
        lambda: sr.dumps([sr.header(), sr.snapshot(), sr.func(probed="yes"), sr.summary()]),
        r"^{path}: line 3: invalid func line: probed: 'yes' is not of type 'boolean'$"),
    "empty": (
        lambda: "",
        r"^{path}: empty file; this is not a twtrace recording$"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_files(tmp_path, case):
    make, pattern = CORRUPT[case]
    path = sr.write_jsonl(tmp_path / f"{case}.jsonl", [], text=make())
    with pytest.raises(UserError) as info:
        read_record(path)
    message = str(info.value)
    assert re.match(pattern.format(path=re.escape(str(path))), message), message
    assert "\n" not in message and info.value.exit_code == 2


def test_strict_checks_event_fields(tmp_path):
    path = sr.write_jsonl(tmp_path / "r.jsonl", [sr.header(), sr.add(notify="loud"), sr.summary()])
    assert len(read_record(path).events) == 1  # events get the structural check by default
    with pytest.raises(UserError, match=r"line 2: invalid add line: notify: 'loud' does not match"):
        read_record(path, strict=True)


def test_unreadable_files(tmp_path):
    with pytest.raises(UserError, match=r"nope\.jsonl: no such file$"):
        read_record(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match=r": cannot read: "):
        read_record(tmp_path)
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(json.dumps(sr.header()).encode() + b"\n\xff\xfe\n")
    with pytest.raises(UserError, match=r"line 2: not UTF-8 text$"):
        read_record(binary)


def test_docs_example_is_valid(full_validator, tmp_path):
    """The example in docs/format.md is a complete, consistent recording."""
    docs = DOCS.read_text(encoding="utf-8")
    block = re.search(r"## Example\n\n```json\n(.*?)```", docs, re.S).group(1)
    path = sr.write_jsonl(tmp_path / "example.jsonl", [], text=block)
    rec = read_record(path)
    for line in block.splitlines():
        full_validator.validate(json.loads(line))
    snap = rec.final_snapshot()
    for agg in snap.tasks + snap.funcs:
        for key in ("queue_ns", "run_ns"):
            lat = agg[key]
            assert Histogram.from_pairs(lat["hist"]).summary(lat["max"], lat["sum"]) == lat


def test_task_totals_are_each_tasks_latest_line(tmp_path):
    """record --interval: intermediate snapshots list changed tasks only, and
    an exited task is let go after one listing."""
    lines = sr.sample_lines()
    head, rest = lines[0], lines[1:]
    summary = rest[-1]
    def task(tid, gen, adds, exited=False):
        return {"type": "task", "tid": tid, "gen": gen, "pid": tid, "comm": "w", "adds": adds,
                "failed_adds": 0, "cancels": 0, "callbacks": adds, "runs": 1, "depth": 0,
                "max_depth": 1, "queue_ns": sr.latency(), "run_ns": sr.latency(),
                "busiest": None, "exited": exited}
    def snap(seq, final):
        return {"type": "snapshot", "ts_ns": head["start_ns"] + seq + 1, "seq": seq,
                "final": final}
    body = [snap(0, False), task(7, 1, 2), task(8, 1, 1),
            snap(1, False), task(7, 1, 5, exited=True),
            snap(2, False), task(7, 3, 1),  # the tid again, a new task
            snap(3, True), task(8, 1, 4)]
    path = sr.write_jsonl(tmp_path / "i.jsonl", [head, *body, summary])
    got = sorted((t["tid"], t["gen"], t["adds"], t["exited"]) for t in read_record(path).task_totals())
    assert got == [(7, 1, 5, True), (7, 3, 1, False), (8, 1, 4, False)]
