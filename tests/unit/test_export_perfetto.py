"""twtrace export --perfetto: the trace read back with Perfetto's own protobuf
definitions says what the recording's event lines say."""
import os
import stat
from collections import Counter

import pytest

import synth_record as s
from test_cli import one_line_error, twtrace

pb = pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2")

T = s.START
W = {n: f"0xffff8880000000{n:02x}" for n in range(1, 10)}


def events():
    """Two processes' threads; exact, batch and unmatched callbacks; a failed
    add, a cancel, an item still queued at the end, and a cross-task add."""
    app = dict(tid=100, pid=100, comm="app")
    worker = dict(tid=101, pid=100, comm="app-worker")
    by_app = dict(adder_tid=100, adder_pid=100, adder_comm="app")
    by_kw = dict(adder_tid=7, adder_pid=7, adder_comm="kworker/0:1")
    by_worker = dict(adder_tid=101, adder_pid=100, adder_comm="app-worker")
    return [
        s.add(ts_ns=T + 10, work=W[1], func="____fput", **app, **by_app),
        s.add(ts_ns=T + 20, work=W[2], func="____fput", **app, **by_app),
        s.add(ts_ns=T + 30, work=W[3], func="key_change_session_keyring", **worker, **by_kw),
        s.add(ts_ns=T + 40, work=W[8], func="____fput", ok=False, error=-3, **worker, **by_kw),
        s.run(ts_ns=T + 100, dur_ns=500, callbacks=2, **app),
        s.callback(ts_ns=T + 150, work=W[1], func="____fput", queue_ns=140, run_ns=100, **app),
        s.callback(ts_ns=T + 300, work=W[2], func="____fput", queue_ns=280, run_ns=250, **app),
        s.add(ts_ns=T + 700, work=W[4], func="task_mm_cid_work", **worker, **by_worker),
        s.cancel(ts_ns=T + 800, work=W[4], func="task_mm_cid_work", tid=101, pid=100),
        s.run(ts_ns=T + 890, dur_ns=100, callbacks=1, **worker),
        s.callback(ts_ns=T + 900, work=W[9], func="____fput", queue_ns=None, run_ns=50, **worker),
        s.run(ts_ns=T + 1000, dur_ns=30, callbacks=1, **worker),
        s.callback(ts_ns=T + 1000, work=W[3], func="key_change_session_keyring", queue_ns=970,
                   run_ns=None, timing="batch", **worker),
        s.add(ts_ns=T + 1200, work=W[5], func="____fput", **app, **by_app),
    ]


def recording(tmp_path, evs=None, **header):
    lines = [s.header(**header), *(events() if evs is None else evs), s.snapshot(),
             s.summary(duration_ns=1_500_000_000)]
    return s.write_jsonl(tmp_path / "rec.jsonl", lines)


def export(tmp_path, rec):
    out = tmp_path / "out.pftrace"
    r = twtrace("export", "--perfetto", str(rec), "-o", str(out))
    assert r.returncode == 0, r.stderr
    trace = pb.Trace()
    trace.ParseFromString(out.read_bytes())
    return trace, out


class Read:
    """The trace's tracks and events, slices rebuilt from begin/end pairs."""

    def __init__(self, trace):
        self.tracks, self.slices, self.instants, self.counters = {}, [], [], {}
        self.packets = list(trace.packet)
        open_ = {}
        for p in self.packets:
            if p.HasField("track_descriptor"):
                self.tracks[p.track_descriptor.uuid] = p.track_descriptor
            if not p.HasField("track_event"):
                continue
            e = p.track_event
            assert p.timestamp_clock_id == pb.BUILTIN_CLOCK_MONOTONIC
            if e.type == e.TYPE_SLICE_BEGIN:
                open_.setdefault(e.track_uuid, []).append((p.timestamp, e))
            elif e.type == e.TYPE_SLICE_END:
                ts, begin = open_[e.track_uuid].pop()
                self.slices.append((begin.track_uuid, ts, p.timestamp, begin))
            elif e.type == e.TYPE_INSTANT:
                self.instants.append((e.track_uuid, p.timestamp, e))
            elif e.type == e.TYPE_COUNTER:
                self.counters.setdefault(e.track_uuid, []).append((p.timestamp, e.counter_value))
        assert not any(open_.values()), "every slice begun is ended"

    def thread_of(self, uuid):
        """The tid whose thread track is uuid or an ancestor of it."""
        while uuid:
            d = self.tracks[uuid]
            if d.HasField("thread"):
                return d.thread.tid
            uuid = d.parent_uuid
        return None

    def slices_named(self, name):
        return [x for x in self.slices if x[3].name == name]

    def queue_waits(self):
        return [x for x in self.slices if self.tracks[x[0]].name.startswith("queue wait")]


def args(e):
    return {a.name: (a.string_value or a.int_value) for a in e.debug_annotations}


def test_slices_instants_and_names_match_the_recording(tmp_path):
    evs = events()
    trace, _ = export(tmp_path, recording(tmp_path, evs))
    r = Read(trace)
    threads = {d.thread.tid: d for d in r.tracks.values() if d.HasField("thread")}
    assert {t: (d.thread.pid, d.thread.thread_name) for t, d in threads.items()} == {
        100: (100, "app"), 101: (100, "app-worker"), 7: (7, "kworker/0:1")}
    procs = {d.process.pid: d.process.process_name for d in r.tracks.values()
             if d.HasField("process")}
    assert procs == {100: "app", 7: "kworker/0:1"}

    runs = [e for e in evs if e["type"] == "run"]
    assert sorted((r.thread_of(u), a, b) for u, a, b, _ in r.slices_named("task_work_run")) == \
        sorted((e["tid"], e["ts_ns"], e["ts_ns"] + e["dur_ns"]) for e in runs)
    timed = [e for e in evs if e["type"] == "callback" and e["run_ns"] is not None]
    got = sorted((r.thread_of(u), a, b, x.name) for u, a, b, x in r.slices
                 if x.name != "task_work_run" and r.thread_of(u) == r.tracks[u].thread.tid
                 and r.tracks[u].HasField("thread"))
    assert got == sorted((e["tid"], e["ts_ns"], e["ts_ns"] + e["run_ns"], e["func"]) for e in timed)
    # instants: every add on the adder's thread, batch callbacks and cancels on the target's
    kinds = Counter(x.name.split(":")[0] if ":" in x.name else "callback" for _, _, x in r.instants)
    adds = [e for e in evs if e["type"] == "add"]
    assert kinds == {"add": sum(e["ok"] for e in adds), "failed add": 1, "cancel": 1,
                     "callback": 1}
    (failed,) = [(r.thread_of(u), ts, args(x)) for u, ts, x in r.instants
                 if x.name == "failed add: ____fput"]
    assert failed[:2] == (7, T + 40) and failed[2]["error"] == -3 and failed[2]["target_tid"] == 101
    (batch,) = [(r.thread_of(u), ts, x) for u, ts, x in r.instants if "add" not in x.name
                and "cancel" not in x.name]
    assert batch[:2] == (101, T + 1000) and batch[2].name == "key_change_session_keyring"


def test_callbacks_nest_inside_their_run(tmp_path):
    trace, _ = export(tmp_path, recording(tmp_path))
    r = Read(trace)
    runs = r.slices_named("task_work_run")
    for u, a, b, x in r.slices_named("____fput"):
        if not r.tracks[u].HasField("thread"):
            continue
        assert any(ru == u and ra <= a and b <= rb for ru, ra, rb, _ in runs)


def test_flows_link_each_add_to_its_callback(tmp_path):
    evs = events()
    trace, _ = export(tmp_path, recording(tmp_path, evs))
    r = Read(trace)
    starts = {fid: (r.thread_of(u), ts, args(x)["work"]) for u, ts, x in r.instants
              for fid in x.flow_ids}
    ends = {}
    for u, a, _, x in r.slices:
        for fid in x.terminating_flow_ids:
            ends[fid] = (r.thread_of(u), a, args(x)["work"])
    for u, ts, x in r.instants:
        for fid in x.terminating_flow_ids:
            ends[fid] = (r.thread_of(u), ts, args(x)["work"])
    assert set(starts) == set(ends)
    pairs = sorted((starts[f], ends[f]) for f in starts)
    by_work = {e["work"]: e for e in evs if e["type"] == "add" and e["ok"]}
    want = sorted(((by_work[c["work"]]["adder_tid"], by_work[c["work"]]["ts_ns"], c["work"]),
                   (c["tid"], c["ts_ns"], c["work"]))
                  for c in evs if c["type"] == "callback" and c["queue_ns"] is not None)
    assert pairs == want and len(pairs) == 3  # the unmatched callback has no flow


def test_queue_waits_and_lanes(tmp_path):
    trace, _ = export(tmp_path, recording(tmp_path))
    r = Read(trace)
    end = T + 1_500_000_000
    waits = sorted((r.thread_of(u), a, b, x.name, args(x)["outcome"])
                   for u, a, b, x in r.queue_waits())
    assert waits == [
        (100, T + 10, T + 150, "____fput", "ran"),
        (100, T + 20, T + 300, "____fput", "ran"),
        (100, T + 1200, end, "____fput", "still queued"),
        (101, T + 30, T + 1000, "key_change_session_keyring", "ran"),
        (101, T + 700, T + 800, "task_mm_cid_work", "cancelled"),
    ]
    lanes = {}
    for u, a, b, _ in r.queue_waits():
        lanes.setdefault(u, []).append((a, b))
    for spans in lanes.values():  # no two waits overlap within a lane
        spans.sort()
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
    assert len([u for u in lanes if r.thread_of(u) == 100]) == 2  # two waits at once at most


def test_depth_counter_values_and_times(tmp_path):
    trace, _ = export(tmp_path, recording(tmp_path))
    r = Read(trace)
    depth = {r.thread_of(u): v for u, v in r.counters.items()
             if r.tracks[u].name == "task_work depth"}
    assert depth == {
        100: [(T, 0), (T + 10, 1), (T + 20, 2), (T + 150, 1), (T + 300, 0), (T + 1200, 1)],
        101: [(T, 0), (T + 30, 1), (T + 700, 2), (T + 800, 1), (T + 1000, 0)],
    }


def test_clock_and_sequence(tmp_path):
    trace, out = export(tmp_path, recording(tmp_path))
    first = trace.packet[0]
    assert first.clock_snapshot.primary_trace_clock == pb.BUILTIN_CLOCK_MONOTONIC
    assert first.sequence_flags == pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
    assert {p.trusted_packet_sequence_id for p in trace.packet} == {1}
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_skewed_callback_is_cut_at_its_runs_end(tmp_path):
    evs = [s.add(ts_ns=T + 10, work=W[1]), s.run(ts_ns=T + 100, dur_ns=50),
           s.callback(ts_ns=T + 120, work=W[1], queue_ns=110, run_ns=60)]
    trace, _ = export(tmp_path, recording(tmp_path, evs))
    r = Read(trace)
    (cb,) = [x for x in r.slices if x[3].name == "__fput" and r.tracks[x[0]].HasField("thread")]
    assert cb[1:3] == (T + 120, T + 150) and args(cb[3])["clipped_ns"] == 30


def test_export_of_the_sample_recording_counts(tmp_path):
    lines = s.sample_lines()
    rec = s.write_jsonl(tmp_path / "sample.jsonl", lines)
    r = Read(export(tmp_path, rec)[0])
    assert len(r.slices_named("task_work_run")) == sum(x["type"] == "run" for x in lines)


@pytest.mark.parametrize("case,words", [
    ("not a recording", ["not a twtrace recording"]),
    ("no events", ["without --events"]),
    ("empty events", ["nothing to export"]),
    ("unwritable", ["cannot write"]),
    ("no format", ["--perfetto"]),
    ("missing", ["no such file"]),
])
def test_bad_input_is_one_line(tmp_path, case, words):
    rec = recording(tmp_path)
    out = tmp_path / "o.pftrace"
    args_ = ["export", "--perfetto", str(rec), "-o", str(out)]
    if case == "not a recording":
        (tmp_path / "x.jsonl").write_text('{"hello": 1}\n')
        args_[2] = str(tmp_path / "x.jsonl")
    elif case == "no events":
        args_[2] = str(recording(tmp_path, [], events=False))
    elif case == "empty events":
        args_[2] = str(recording(tmp_path, []))
    elif case == "unwritable":
        args_[4] = "/nonexistent-dir/o.pftrace"
    elif case == "no format":
        args_.remove("--perfetto")
    elif case == "missing":
        args_[2] = str(tmp_path / "none.jsonl")
    r = twtrace(*args_)
    one_line_error(r, *words)
    assert r.returncode == 2
    assert not out.exists()
