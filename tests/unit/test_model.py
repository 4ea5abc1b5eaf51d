"""The pure model: drained kernel deltas in, cumulative totals, record lines out."""
from twtrace import model
from twtrace.hist import bucket_index
from twtrace.recordfile import validate_line
from twtrace.totals import Totals, narrowed

FPUT, KEY = 0xffffffff81000010, 0xffffffff81000020
NAMES = {FPUT: "____fput", KEY: "key_change_session_keyring"}


def hist(values):
    h = {}
    for v in values:
        h[bucket_index(v)] = h.get(bucket_index(v), 0) + 1
    return h


def agg(adds, callbacks, queue, run, failed=0, cancels=0, notify=1, pid=100, comm="worker",
        max_depth=0, matched=None, cancels_matched=0, runs=0):
    return {"pid": pid, "comm": comm, "adds": adds, "failed_adds": failed, "cancels": cancels,
            "cancels_matched": cancels_matched, "callbacks": callbacks,
            "matched": len(queue) if matched is None else matched, "timed": len(queue),
            "queue_sum": sum(queue), "queue_max": max(queue, default=0),
            "run_sum": sum(run), "run_max": max(run, default=0), "run_cnt": len(run),
            "notify_mask": 1 << notify, "max_depth": max_depth, "runs": runs}


DELTA = {
    "aggs": {
        (100, 1, FPUT): agg(18, 16, [1000] * 16, [200] * 15 + [5000], max_depth=16, runs=3),
        (100, 1, KEY): agg(1, 1, [300_000_000], [700]),
        (200, 2, FPUT): agg(2, 1, [50], [60], failed=1, pid=200, comm="bash", max_depth=1,
                            matched=1),
    },
    "hists": {
        (100, 1, FPUT, 0): hist([1000] * 16), (100, 1, FPUT, 1): hist([200] * 15 + [5000]),
        (100, 1, KEY, 0): hist([300_000_000]), (100, 1, KEY, 1): hist([700]),
        (200, 2, FPUT, 0): hist([50]), (200, 2, FPUT, 1): hist([60]),
    },
    "pairs": {(300, 100, 1, KEY): {"adds": 1, "adder_comm": "keyctl"},
              (100, 100, 1, FPUT): {"adds": 18, "adder_comm": "worker"}},
    "retired": {},
}
STATS = {"lost": 0, "full": {"tasks": 0, "aggs": 0}, "unmatched": 0}


def snap(comm=None, deltas=(DELTA,)):
    tot = Totals(comm)
    for d in deltas:
        tot.apply(d)
    s = model.Snapshotter(NAMES.get, lambda a: a in NAMES)
    return s.lines(tot.view(), STATS, ts_ns=99, seq=0, final=True)  # as Session does


def by(lines, kind, key):
    return {x[key]: x for x in lines if x["type"] == kind}


def test_lines_validate_and_sum_per_task_and_per_callback():
    lines = snap()
    for line in lines:
        validate_line(line)
    tasks = by(lines, "task", "tid")
    assert tasks[100]["adds"] == 19 and tasks[100]["callbacks"] == 17
    assert tasks[100]["busiest"] == "____fput" and tasks[100]["runs"] == 3
    assert tasks[100]["queue_ns"]["count"] == 17 and tasks[100]["queue_ns"]["max"] == 300_000_000
    assert tasks[100]["run_ns"]["max"] == 5000 and tasks[100]["max_depth"] == 16
    # depth: 19 adds, 17 of them started -> 2 queued
    assert tasks[100]["depth"] == 2 and tasks[200]["depth"] == 0
    funcs = by(lines, "func", "func")
    assert funcs["____fput"]["adds"] == 20 and funcs["____fput"]["failed_adds"] == 1
    assert funcs["key_change_session_keyring"]["adders"] == [
        {"adder_pid": 300, "adder_comm": "keyctl", "tid": 100, "comm": "worker", "adds": 1}]
    assert funcs["____fput"]["notify"] == ["resume"]


def test_deltas_accumulate_across_drains():
    lines = snap(deltas=(DELTA, DELTA))
    tasks = by(lines, "task", "tid")
    assert tasks[100]["adds"] == 38 and tasks[100]["callbacks"] == 34
    assert tasks[100]["max_depth"] == 16 and tasks[100]["depth"] == 4
    assert tasks[100]["queue_ns"]["count"] == 34


def test_a_recycled_tid_starts_from_zero():
    old = {"aggs": {(500, 7, FPUT): agg(5, 5, [10] * 5, [10] * 5, pid=500, comm="old",
                                        max_depth=5)},
           "retired": {(500, 7): {"depth": 0, "ts": 1}}}
    new = {"aggs": {(500, 9, FPUT): agg(1, 0, [], [], pid=500, comm="new", max_depth=1,
                                        matched=0)}}
    lines = snap(deltas=(old, new))
    rows = [x for x in lines if x["type"] == "task" and x["tid"] == 500]
    assert [(r["comm"], r["adds"], r["max_depth"], r["exited"]) for r in rows] == [
        ("old", 5, 5, True), ("new", 1, 1, False)]


def test_exited_tasks_fold_into_function_totals_when_not_kept():
    tot = Totals(keep_exited=False)
    tot.apply({"aggs": {(500, 7, FPUT): agg(5, 5, [10] * 5, [10] * 5)},
               "hists": {(500, 7, FPUT, 0): hist([10] * 5)},
               "pairs": {(1, 500, 7, FPUT): {"adds": 5, "adder_comm": "x"}},
               "retired": {(500, 7): {"depth": 0, "ts": 1}}})
    assert (500, 7) in tot.tasks
    tot.apply({})  # (record --interval drains between snapshots)
    assert (500, 7) in tot.tasks  # never let go before a snapshot showed it exited
    tot.fold_shown()  # the snapshot showed it
    tot.apply({})
    assert not tot.tasks and not tot.aggs and not tot.pairs and tot.gone_tasks == 1
    s = model.Snapshotter(NAMES.get, lambda a: True)
    (func,) = [x for x in s.lines(tot, STATS, 1, 0, False) if x["type"] == "func"]
    assert func["adds"] == 5 and func["queue_ns"]["count"] == 5


def test_comm_filter_keeps_matching_tasks_only():
    lines = snap(comm="^bas")
    assert [t["tid"] for t in lines if t["type"] == "task"] == [200]
    funcs = [f for f in lines if f["type"] == "func"]
    assert [f["func"] for f in funcs] == ["____fput"] and funcs[0]["adds"] == 2


def test_narrowed_keeps_only_wanted_functions():
    tot = Totals()
    tot.apply(DELTA)
    got = narrowed(tot, lambda addr: addr == KEY)
    assert list(got.tasks) == [(100, 1)] and list(got.aggs) == [((100, 1), KEY)]
    assert list(got.pairs) == [(300, (100, 1), KEY)]


def test_summary_counts_items_unmatched_and_each_full_map():
    lines = snap()
    tasks = [x for x in lines if x["type"] == "task"]
    funcs = [x for x in lines if x["type"] == "func"]
    st = {"lost": 2, "full": {"tasks": 1, "aggs": 3}, "skipped": None, "noret": 1}
    s = model.summary_line(tasks, funcs, st, 10, False, 0)
    validate_line(s)
    assert (s["adds"], s["failed_adds"], s["items"], s["unmatched"]) == (21, 1, 20, 0)
    assert s["evicted"] == 4 and s["full"] == {"tasks": 1, "aggs": 3}
    assert s["skipped_runs"] is None and s["no_run_time"] == 1


def test_unmatched_is_callbacks_whose_add_was_not_seen():
    d = {"aggs": {(100, 1, FPUT): agg(3, 5, [10] * 3, [1] * 5, matched=3)}}
    (t,) = [x for x in snap(deltas=(d,)) if x["type"] == "task"]
    assert t["unmatched"] == 2 and t["callbacks"] == 5 and t["depth"] == 0


def test_notify_names_mask_flag_bits():
    assert model.notify_name(0x101) == "resume"
    assert [model.notify_name(i) for i in range(5)] == [
        "none", "resume", "signal", "signal_no_ipi", "nmi_current"]
    assert model.notify_name(9) == "unknown(9)"


EV = {"kind": "add", "ts": 5, "work": 0xffff8880deadbeef, "func": KEY, "queue_ns": 0,
      "dur_ns": 0, "tid": 100, "pid": 100, "gen": 1, "adder_tid": 300, "adder_pid": 300,
      "ret": -3, "notify": 1, "count": 0, "flags": 0, "comm": "worker", "adder_comm": "keyctl"}


def test_event_lines():
    line = model.event_line(EV, lambda a: NAMES[a], lambda a: True)
    validate_line(line)
    assert line["ok"] is False and line["error"] == -3 and line["work"] == "0xffff8880deadbeef"
    cb = model.event_line(dict(EV, kind="callback", flags=0, dur_ns=7), lambda a: NAMES[a],
                          lambda a: True)
    validate_line(cb)
    assert cb["queue_ns"] is None and cb["run_ns"] == 7  # add not seen: no queue latency
    assert cb["matched"] is False
    cb = model.event_line(dict(EV, kind="callback", flags=model.CB_MATCHED | model.CB_NORUN,
                               queue_ns=9), lambda a: NAMES[a], lambda a: True)
    assert cb["queue_ns"] == 9 and cb["run_ns"] is None  # return not reported


def test_unseen_callback_event_gives_bounds_not_a_point():
    ev = dict(EV, kind="callback", ts=500, queue_ns=40, dur_ns=90,
              flags=model.CB_MATCHED | model.CB_UNTIMED)
    line = model.event_line(ev, hex, lambda a: False)
    validate_line(line)
    assert (line["timing"], line["queue_ns"], line["run_ns"]) == ("batch", None, None)
    assert line["queue_ns_bounds"] == [40, 90]


def runs(gen=1, level=0, ts=50, end=55):
    return {"gen": gen, "level": level, "last_run_ts": ts, "last_run_end": end}


def item(ts, task, gen=1, tid=100):
    return {"ts": ts, "func": 0x99, "task": task, "tid": tid, "gen": gen, "pid": tid, "flags": 0}


def test_items_settle_once_their_task_completed_a_later_run():
    inflight = {1: item(10, 0xA),   # before that run: ran
                2: item(60, 0xA),   # after: still queued
                3: item(10, 0xB),   # run not over yet
                4: item(10, 0xC),   # task let go (freed): ran at exit
                5: item(10, 0xD, gen=3)}  # the task_struct is another task now
    got = model.stale_items(inflight, {0xA: runs(), 0xB: runs(level=1, end=40),
                                       0xD: runs(gen=4)})
    assert sorted(got) == [1, 4, 5]
    lines = model.batch_callback_lines({1: got[1]}, hex, now_ns=1000)
    (line,) = lines
    validate_line(line)
    assert line["timing"] == "batch" and line["queue_ns"] is None
    assert line["queue_ns_bounds"] == [40, 45]  # it started between run entry and run end
    (line,) = model.batch_callback_lines({4: got[4]}, hex, now_ns=1000)
    assert line["queue_ns_bounds"] == [0, 990]  # only the drain bounds it


def test_settled_items_count_and_leave_the_queue():
    tot = Totals()
    tot.apply({"aggs": {(100, 1, 0x99): agg(3, 0, [], [], matched=0)}})
    tot.settle([item(10, 0xA), item(20, 0xA), item(20, 0xE, tid=999)])  # 999: never seen
    assert tot.aggs[((100, 1), 0x99)]["callbacks"] == 2 and tot.tasks[(100, 1)]["depth"] == 1


def test_snapshot_line_carries_lost_and_full_maps():
    s = model.Snapshotter(lambda a: None, lambda a: True)
    (line,) = s.lines(Totals(), {"lost": 3, "full": {"aggs": 2}}, 10, 0, True)
    validate_line(line)
    assert (line["lost_events"], line["evicted"], line["full"]) == (3, 2, {"aggs": 2})


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
    s = model.Snapshotter(names.get, lambda a: True, stack={1: ["task_work_add", "fput"]}.get)
    tot = Totals()
    tot.apply({"aggs": {(100, 1, 0x99): agg(1, 1, [5], [7])}, "stacks": {(0x99, 1): 1}})
    lines = s.lines(tot, STATS, 10, 0, True)
    for line in lines:
        validate_line(line)
    (func,) = [x for x in lines if x["type"] == "func"]
    assert func["stacks"] == [{"adds": 1, "stack": ["task_work_add", "fput"]}]
    ev = dict(EV, func=0x99, ret=0, stack=["task_work_add", "fput"])
    line = model.event_line(ev, hex, lambda a: True)
    validate_line(line)
    assert line["stack"] == ["task_work_add", "fput"]


def test_comm_filter_decides_again_after_exec_renames_a_task():
    """The shell that starts a workload queues its first items (closing a
    redirection) under its own name; after exec the task matches the filter."""
    before = {"aggs": {(300, 3, FPUT): agg(1, 1, [10], [10], pid=300, comm="sh")}}
    after = {"aggs": {(300, 3, FPUT): agg(8, 8, [10] * 8, [10] * 8, pid=300, comm="python3")}}
    lines = snap(comm="^python", deltas=(before, after))
    (task,) = [t for t in lines if t["type"] == "task"]
    # every count it has, those from before the exec too: a view, not a gate
    assert (task["tid"], task["comm"], task["adds"]) == (300, "python3", 9)
    assert snap(comm="^python", deltas=(before,)) == [x for x in snap(comm="^python", deltas=(before,))
                                                      if x["type"] not in ("task", "func")]


def test_activity_of_a_task_let_go_counts_for_its_function():
    """The exit notice and the task's last aggregates can be one drain apart."""
    tot = Totals(keep_exited=False)
    tot.apply({"aggs": {(500, 7, FPUT): agg(5, 5, [10] * 5, [10] * 5)},
               "retired": {(500, 7): {"depth": 0, "ts": 1}}})
    tot.fold_shown()
    tot.apply({})
    tot.apply({"aggs": {(500, 7, FPUT): agg(2, 2, [10] * 2, [10] * 2)},
               "hists": {(500, 7, FPUT, 0): hist([10] * 2)}})
    assert not tot.tasks and tot.gone[FPUT]["adds"] == 7
    assert tot.gone_hists[(FPUT, 0)].count == 2 and tot.gone_tasks == 1


def test_intermediate_snapshots_can_list_only_changed_tasks():
    tot = Totals()
    tot.apply(DELTA)
    assert tot.take_touched() == {(100, 1), (200, 2)}
    tot.apply({"aggs": {(200, 2, FPUT): agg(1, 1, [5], [5], pid=200, comm="bash")}})
    changed = tot.take_touched()
    s = model.Snapshotter(NAMES.get, lambda a: True)
    lines = s.lines(tot, STATS, 1, 0, False, only=changed)
    tasks = [x for x in lines if x["type"] == "task"]
    assert [(t["tid"], t["gen"], t["adds"]) for t in tasks] == [(200, 2, 3)]
    funcs = {f["func"]: f for f in lines if f["type"] == "func"}
    assert funcs["____fput"]["adds"] == 18 + 2 + 1  # functions: every task, always
    assert not tot.take_touched()


def test_tasks_the_comm_filter_hides_leave_no_trace_when_let_go():
    tot = Totals("^bas", keep_exited=False)
    tot.apply({**DELTA, "retired": {(100, 1): {"depth": 0, "ts": 1}, (200, 2): {"depth": 0, "ts": 1}}})
    tot.fold_shown()
    tot.apply({})
    # only bash (200) counts: 2 adds of ____fput; worker (100) is gone unseen
    assert not tot.tasks and tot.gone_tasks == 1
    assert tot.gone[FPUT]["adds"] == 2 and KEY not in tot.gone


def test_fresh_lines_rebuild_only_changed_tasks_and_equal_a_full_build():
    tot = Totals(keep_exited=False)
    cached = model.Snapshotter(NAMES.get, lambda a: True)
    full = model.Snapshotter(NAMES.get, lambda a: True)
    steps = [DELTA,
             {"aggs": {(200, 2, FPUT): agg(1, 1, [5], [5], pid=200, comm="bash")}},
             {},
             {"retired": {(200, 2): {"depth": 0, "ts": 1}}},
             {"aggs": {(100, 1, KEY): agg(2, 2, [9, 9], [9, 9])}}]
    before = {}
    for seq, d in enumerate(steps):
        tot.apply(d)
        fresh = tot.take_touched()
        got = cached.lines(tot, STATS, seq, seq, False, fresh=fresh)
        assert got == full.lines(tot, STATS, seq, seq, False), seq
        tasks = {(x["tid"], x["gen"]): x for x in got if x["type"] == "task"}
        for tk, line in tasks.items():  # an unchanged task keeps its very line
            assert (line is before.get(tk)) == (tk in before and tk not in fresh), (seq, tk)
        before = tasks
        tot.fold_shown()
    assert set(before) == {(100, 1)}  # the exited task was listed once, then let go
