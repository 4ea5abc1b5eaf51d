"""The pure model: raw kernel state in, record lines out."""
from twtrace import model
from twtrace.hist import bucket_index
from twtrace.recordfile import validate_line

FPUT, KEY = 0xffffffff81000010, 0xffffffff81000020
NAMES = {FPUT: "____fput", KEY: "key_change_session_keyring"}


def hist(values):
    h = {}
    for v in values:
        h[bucket_index(v)] = h.get(bucket_index(v), 0) + 1
    return h


def agg(adds, callbacks, queue, run, failed=0, cancels=0, notify=1):
    return {"adds": adds, "failed_adds": failed, "cancels": cancels, "callbacks": callbacks,
            "matched": len(queue), "queue_sum": sum(queue), "queue_max": max(queue, default=0),
            "run_sum": sum(run), "run_max": max(run, default=0), "notify_mask": 1 << notify}


RAW = {
    "tasks": {
        100: {"pid": 100, "comm": "worker", "depth": 2, "max_depth": 16, "runs": 3, "last_run_ts": 50},
        200: {"pid": 200, "comm": "bash", "depth": -1, "max_depth": 1, "runs": 1, "last_run_ts": 0},
    },
    "aggs": {
        (100, FPUT): agg(18, 16, [1000] * 16, [200] * 15 + [5000]),
        (100, KEY): agg(1, 1, [300_000_000], [700]),
        (200, FPUT): agg(2, 1, [50], [60], failed=1),
    },
    "hists": {
        (100, FPUT, 0): hist([1000] * 16), (100, FPUT, 1): hist([200] * 15 + [5000]),
        (100, KEY, 0): hist([300_000_000]), (100, KEY, 1): hist([700]),
        (200, FPUT, 0): hist([50]), (200, FPUT, 1): hist([60]),
    },
    "pairs": {(300, 100, KEY): {"adds": 1, "adder_comm": "keyctl"},
              (100, 100, FPUT): {"adds": 18, "adder_comm": "worker"}},
    "stats": {"lost": 0, "evicted": 0, "unmatched": 2, "nested": 0},
}


def snap(comm=None):
    s = model.Snapshotter(NAMES.get, lambda a: a in NAMES, comm)
    return s.lines(RAW, ts_ns=99, seq=0, final=True)


def test_lines_validate_and_sum_per_task_and_per_callback():
    lines = snap()
    for line in lines:
        validate_line(line)
    tasks = {t["tid"]: t for t in lines if t["type"] == "task"}
    assert tasks[100]["adds"] == 19 and tasks[100]["callbacks"] == 17
    assert tasks[100]["busiest"] == "____fput"
    assert tasks[100]["queue_ns"]["count"] == 17 and tasks[100]["queue_ns"]["max"] == 300_000_000
    assert tasks[100]["run_ns"]["max"] == 5000
    assert tasks[200]["depth"] == 0  # never negative
    funcs = {f["func"]: f for f in lines if f["type"] == "func"}
    assert funcs["____fput"]["adds"] == 20 and funcs["____fput"]["failed_adds"] == 1
    assert funcs["key_change_session_keyring"]["adders"] == [
        {"adder_pid": 300, "adder_comm": "keyctl", "tid": 100, "comm": "worker", "adds": 1}]
    assert funcs["____fput"]["notify"] == ["resume"]


def test_percentiles_come_from_the_kernel_histograms():
    t = [x for x in snap() if x["type"] == "task" and x["tid"] == 100][0]
    assert abs(t["run_ns"]["p50"] - 200) <= 200 / 32
    assert abs(t["run_ns"]["p99"] - 5000) <= 5000 / 32 and t["run_ns"]["max"] == 5000


def test_comm_filter_keeps_matching_tasks_only():
    lines = snap(comm="^bas")
    assert [t["tid"] for t in lines if t["type"] == "task"] == [200]
    funcs = [f for f in lines if f["type"] == "func"]
    assert [f["func"] for f in funcs] == ["____fput"] and funcs[0]["adds"] == 2


def test_summary_counts_items_as_successful_adds():
    tasks = [x for x in snap() if x["type"] == "task"]
    s = model.summary_line(tasks, RAW["stats"], 10, False, 0)
    validate_line(s)
    assert (s["adds"], s["failed_adds"], s["items"], s["unmatched"]) == (21, 1, 20, 2)


def test_notify_names_mask_flag_bits():
    assert model.notify_name(0x101) == "resume"
    assert [model.notify_name(i) for i in range(5)] == [
        "none", "resume", "signal", "signal_no_ipi", "nmi_current"]
    assert model.notify_name(9) == "unknown(9)"


def test_event_lines():
    ev = {"kind": "add", "ts": 5, "work": 0xffff8880deadbeef, "func": KEY, "queue_ns": 0,
          "dur_ns": 0, "tid": 100, "pid": 100, "adder_tid": 300, "adder_pid": 300, "ret": -3,
          "notify": 1, "count": 0, "flags": 0, "comm": "worker", "adder_comm": "keyctl"}
    line = model.event_line(ev, lambda a: NAMES[a], lambda a: True)
    validate_line(line)
    assert line["ok"] is False and line["error"] == -3 and line["work"] == "0xffff8880deadbeef"
    cb = model.event_line(dict(ev, kind="callback", flags=0, dur_ns=7), lambda a: NAMES[a],
                          lambda a: True)
    validate_line(cb)
    assert cb["queue_ns"] is None and cb["run_ns"] == 7  # add not seen: no queue latency


def test_items_settle_at_batch_level_once_their_task_ran_task_work():
    tasks = {100: {"pid": 100, "comm": "worker", "depth": 3, "max_depth": 3, "runs": 1,
                   "last_run_ts": 50, "last_run_end": 55},
             200: {"pid": 200, "comm": "busy", "depth": 1, "max_depth": 1, "runs": 1,
                   "last_run_ts": 50, "last_run_end": 40}}  # inside a run since 50
    inflight = {1: {"ts": 10, "func": 0x99, "tid": 100, "pid": 100},   # before that run: ran
                2: {"ts": 60, "func": 0x99, "tid": 100, "pid": 100},   # after: still queued
                3: {"ts": 10, "func": 0x99, "tid": 200, "pid": 200},   # run not over yet
                4: {"ts": 10, "func": 0x99, "tid": 300, "pid": 300}}   # task never seen
    stale = model.stale_items(inflight, tasks)
    assert list(stale) == [1]
    (line,) = model.batch_callback_lines(stale, tasks, hex)
    validate_line(line)
    assert line["timing"] == "batch" and line["queue_ns"] == 40 and line["run_ns"] is None


def test_settled_callbacks_count_and_leave_the_queue():
    raw = {"tasks": {100: {"pid": 100, "comm": "w", "depth": 3, "max_depth": 3, "runs": 1,
                           "last_run_ts": 50, "last_run_end": 55}},
           "aggs": {(100, 0x99): {"adds": 3, "callbacks": 0}}, "hists": {}, "pairs": {},
           "stats": {}}
    s = model.Settled()
    s.add({1: {"ts": 10, "func": 0x99, "tid": 100, "pid": 100}})
    s.add({2: {"ts": 20, "func": 0x99, "tid": 100, "pid": 100},
           5: {"ts": 20, "func": 0x77, "tid": 999, "pid": 999}})  # evicted task: ignored
    out = s.apply(raw)
    assert out["aggs"][(100, 0x99)]["callbacks"] == 2 and out["tasks"][100]["depth"] == 1
    assert raw["aggs"][(100, 0x99)]["callbacks"] == 0  # the kernel's numbers stay as read


def test_untimed_callback_event_is_batch_timed():
    ev = {"kind": "callback", "ts": 500, "work": 0x10, "func": 0x99, "queue_ns": 40,
          "dur_ns": 0, "tid": 100, "pid": 100, "adder_tid": 0, "adder_pid": 0, "ret": 0,
          "notify": 0, "count": 0, "flags": model.CB_MATCHED | model.CB_UNTIMED,
          "comm": "w", "adder_comm": ""}
    line = model.event_line(ev, hex, lambda a: False)
    validate_line(line)
    assert (line["timing"], line["queue_ns"], line["run_ns"]) == ("batch", 40, None)
    line = model.event_line(dict(ev, flags=model.CB_UNTIMED), hex, lambda a: False)
    assert line["queue_ns"] is None and line["timing"] == "batch"


def test_items_of_an_exited_task_have_run():
    tasks = {100: {"pid": 100, "comm": "w", "depth": 1, "max_depth": 1, "runs": 1,
                   "last_run_ts": 50, "last_run_end": 55}}
    inflight = {1: {"ts": 52, "func": 0x99, "tid": 100, "pid": 100}}  # added during the last run
    assert model.stale_items(inflight, tasks) == {}
    stale = model.stale_items(inflight, tasks, exited={100})
    assert list(stale) == [1]
    (line,) = model.batch_callback_lines(stale, tasks, hex)
    validate_line(line)
    assert line["ts_ns"] == 52 and line["queue_ns"] is None  # no run started after the add


def test_snapshot_line_carries_lost_and_evicted():
    snap = model.Snapshotter(lambda a: None, lambda a: True)
    raw = {"tasks": {}, "aggs": {}, "hists": {}, "pairs": {},
           "stats": {"lost": 3, "evicted": 2, "unmatched": 0}}
    (line,) = snap.lines(raw, 10, 0, True)
    validate_line(line)
    assert (line["lost_events"], line["evicted"]) == (3, 2)


def test_top_stacks_rank_and_group_unrecorded():
    frames = {1: ["task_work_add", "fput", "__x64_sys_close_range"],
              2: ["task_work_add", "fput", "__x64_sys_close"],
              3: ["task_work_add", "fput", "__x64_sys_close"]}  # same path, other id
    counts = {(0x99, 1): 5, (0x99, 2): 4, (0x99, 3): 3, (0x99, -14): 2, (0x77, 1): 100}
    got = model.top_stacks(counts, 0x99, frames.get)
    assert got == [{"adds": 7, "stack": frames[2]}, {"adds": 5, "stack": frames[1]},
                   {"adds": 2, "stack": None}]
    assert model.top_stacks(counts, 0x99, frames.get, n=1) == [{"adds": 7, "stack": frames[2]}]


def test_func_lines_carry_stacks_and_validate():
    names = {0x99: "____fput"}
    snap = model.Snapshotter(names.get, lambda a: True, stack={1: ["task_work_add", "fput"]}.get)
    raw = {"tasks": {100: {"pid": 100, "comm": "w", "depth": 0, "max_depth": 1, "runs": 1,
                           "last_run_ts": 0}},
           "aggs": {(100, 0x99): {"adds": 1, "failed_adds": 0, "cancels": 0, "callbacks": 1,
                                  "matched": 1, "queue_sum": 5, "queue_max": 5, "run_sum": 7,
                                  "run_max": 7, "notify_mask": 2}},
           "hists": {}, "pairs": {}, "stats": {"lost": 0, "evicted": 0},
           "stacks": {(0x99, 1): 1}}
    lines = snap.lines(raw, 10, 0, True)
    for line in lines:
        validate_line(line)
    (func,) = [x for x in lines if x["type"] == "func"]
    assert func["stacks"] == [{"adds": 1, "stack": ["task_work_add", "fput"]}]
    ev = {"kind": "add", "ts": 5, "work": 0x10, "func": 0x99, "tid": 100, "pid": 100,
          "comm": "w", "adder_tid": 100, "adder_pid": 100, "adder_comm": "w", "ret": 0,
          "notify": 1, "stack": ["task_work_add", "fput"]}
    line = model.event_line(ev, hex, lambda a: True)
    validate_line(line)
    assert line["stack"] == ["task_work_add", "fput"]
