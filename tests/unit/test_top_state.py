"""twtrace top's view model and maths, from synthetic snapshot groups."""
from __future__ import annotations

import re

import pytest

import synth_record as sr
from twtrace.top import keys, metrics
from twtrace.top.sample import Meta, Sample, group_samples
from twtrace.recordfile import read_record
from twtrace.top.sources import ReplaySource
from twtrace.top.state import (FUNCS, INTERVALS, TASKS, Filters, TopState, step_interval,
                               text_matcher)

SEC = 1_000_000_000


def meta(**kw):
    return Meta(hostname="h", kernel="k", arch="x86_64", probe_mode="kprobe",
                start_ns=sr.START, **kw)


def group(ts_ns, tasks=(), funcs=()):
    return Sample({"type": "snapshot", "ts_ns": ts_ns, "seq": 0, "final": False},
                  list(tasks), list(funcs))


def top_state(snapshots=6, **kw):
    st = TopState(meta(replay="x", speed=1), **kw)
    for s in group_samples(sr.top_lines(snapshots)):
        st.push(s)
    return st


def keys_of(rows):
    return [r.key for r in rows]


# -- maths ---------------------------------------------------------------------

def test_delta_and_rate():
    assert metrics.delta(150, 100) == 50
    assert metrics.delta(30, 100) == 30  # a restarted counter counts from zero
    assert metrics.delta(None, None) == 0
    assert metrics.per_second(50, SEC // 2) == 100.0
    assert metrics.per_second(5, 0) is None


def test_first_interval_is_against_the_start_of_tracing():
    st = TopState(meta())
    st.push(group(sr.START + 2 * SEC, [sr.task(range(1000, 1010), range(10), tid=5, pid=5)]))
    row = st.rows[TASKS][5]
    assert row.adds_s == 5.0 and row.cb_s == 5.0
    assert st.totals.items_s == 5.0 and st.totals.dt_ns == 2 * SEC


def test_rates_are_deltas_over_the_snapshot_gap():
    st = TopState(meta())
    t0 = sr.task(range(1000, 1100), range(80), tid=5, pid=5)  # 100 adds, 80 callbacks
    t1 = sr.task(range(1000, 1400), range(200), tid=5, pid=5, failed_adds=10)
    st.push(group(sr.START + SEC, [t0]))
    st.push(group(sr.START + SEC + SEC // 4, [t1]))  # 0.25 s later
    row = st.rows[TASKS][5]
    assert row.adds_s == pytest.approx(300 / 0.25)
    assert row.cb_s == pytest.approx(120 / 0.25)
    assert st.totals.items_s == pytest.approx((300 - 10) / 0.25)


def test_interval_latency_is_that_of_the_new_samples_only():
    old = [1_000 + i for i in range(100)]
    new = [50_000 + 1_000 * i for i in range(20)]
    prev, cur = sr.latency(old), sr.latency(old + new)
    got = metrics.interval_latency(cur, prev)
    want = sr.latency(new)
    assert got["count"] == 20 and got["sum"] == sum(new)
    assert (got["p50"], got["p99"], got["hist"]) == (want["p50"], want["p99"], want["hist"])
    assert got["max"] == max(new)  # the cumulative max grew: exact


def test_interval_latency_max_estimated_when_the_max_did_not_grow():
    prev = sr.latency([9_000_000, 1_000])
    cur = sr.latency([9_000_000, 1_000, 2_000, 2_010])
    got = metrics.interval_latency(cur, prev)
    assert got["count"] == 2
    assert abs(got["max"] - 2_010) <= 2_010 / 32  # within a bucket, not the old 9 ms
    assert metrics.interval_latency(prev, prev)["count"] == 0
    assert metrics.interval_latency(prev, prev)["p99"] is None


def test_interval_latency_shortcut_only_when_nothing_changed():
    prev = sr.latency([1_000, 1_000])
    assert metrics.interval_latency(dict(prev), prev) == metrics.interval_latency(
        dict(prev, hist=[list(p) for p in prev["hist"]]), sr.latency([1_000, 1_000]))
    assert metrics.interval_latency(dict(prev), prev)["count"] == 0
    # the same count, other buckets (a counter that restarted): the long way
    cur = sr.latency([1_000, 200_000])
    got = metrics.interval_latency(cur, prev)
    assert cur["count"] == prev["count"] and got["count"] == 1
    assert abs(got["p50"] - 200_000) <= 200_000 / 32


def test_cgroup_rows_reuse_a_cgroup_whose_lines_did_not_change():
    from twtrace.top.state import Row, cgroup_rows

    def task(tid, cg, lat):
        return Row(key=tid, line={"tid": tid, "pid": tid, "comm": "t", "cgroup": cg, "adds": 3,
                                  "callbacks": 3, "failed_adds": 0, "cancels": 0, "depth": 0,
                                  "max_depth": 1, "queue_ns": sr.latency(lat),
                                  "run_ns": sr.latency(lat)},
                   deltas={c: 1 for c in metrics.COUNTERS}, adds_s=1.0, cb_s=1.0)
    rows = [task(1, "/a", [1_000]), task(2, "/a", [5_000]), task(3, "/b", [9_000])]
    cache = {}
    first = cgroup_rows(rows, SEC, cache)
    plain = {k: (r.line, r.deltas, r.adds_s) for k, r in cgroup_rows(rows, SEC).items()}
    assert {k: (r.line, r.deltas, r.adds_s) for k, r in first.items()} == plain
    again = cgroup_rows(rows, 2 * SEC, cache)  # the same line objects: reused, rates anew
    assert {k: r.line for k, r in again.items()} == {k: v[0] for k, v in plain.items()}
    assert again["/a"].adds_s == first["/a"].adds_s / 2
    rows[2] = task(3, "/b", [9_000, 70_000])  # a new line: summed again
    third = cgroup_rows(rows, SEC, cache)
    assert third["/b"].line["queue_ns"]["count"] == 2 and third["/a"].line == plain["/a"][0]
    assert set(cache) == {"/a", "/b"}


def test_cost_percentages():
    assert metrics.bpf_cost_pct({"run_time_ns": 30_000_000, "run_cnt": 9},
                                {"run_time_ns": 10_000_000, "run_cnt": 1}, SEC) == pytest.approx(2.0)
    assert metrics.bpf_cost_pct(None, {"run_time_ns": 1}, SEC) is None
    assert metrics.cpu_pct(1.5, 1.0, 2 * SEC) == pytest.approx(25.0)
    assert metrics.cpu_pct(1.0, None, SEC) is None


def test_totals_carry_cost_lost_and_evicted():
    st = TopState(meta(), baseline=Sample({"ts_ns": sr.START}, bpf={"run_time_ns": 0},
                                          cpu_s=2.0))
    s = group(sr.START + SEC)
    s.bpf, s.cpu_s, s.lost, s.evicted = {"run_time_ns": 5_000_000}, 2.1, 7, 2
    st.push(s)
    t = st.totals
    assert t.bpf_pct == pytest.approx(0.5) and t.cpu_pct == pytest.approx(10.0)
    assert (t.lost, t.evicted) == (7, 2)


# -- sort, filter, selection ------------------------------------------------------

def test_default_sort_is_adds_per_second_descending_and_reverse_flips():
    st = top_state()
    assert keys_of(st.visible()) == [4242, 4243, 901, 1200, 77, 3100]  # ties by tid
    keys.handle(st, "r")
    assert keys_of(st.visible()) == [77, 3100, 1200, 901, 4243, 4242]
    assert st.descending() is False


def test_sort_columns_cycle_both_ways():
    st = top_state()
    names = [st.sort_col().name]
    for _ in range(3):
        keys.handle(st, "s")
        names.append(st.sort_col().name)
    assert names == ["ADD/s", "CB/s", "DEP", "MAXD"]
    keys.handle(st, "S")
    assert st.sort_col().name == "DEP"
    assert keys_of(st.visible())[0] == 3100  # the stuck task has 3 queued


def test_sort_by_name_is_ascending():
    st = top_state()
    while st.sort_col().name != "COMM":
        st.next_sort(1)
    comms = [r.line["comm"] for r in st.visible()]
    assert comms == sorted(comms, key=str.lower)


def test_selection_follows_the_row_across_refreshes_and_resorts():
    lines = sr.top_lines(6)
    groups = group_samples(lines)
    st = TopState(meta())
    st.push(groups[0])
    keys.handle(st, "down")
    keys.handle(st, "down")
    chosen = st.selected_row().key
    for g in groups[1:]:
        st.push(g)
    assert st.selected_row().key == chosen
    keys.handle(st, "s")  # another order: still the same row
    assert st.selected_row().key == chosen
    keys.handle(st, "end")
    assert st.selected_index() == len(st.visible()) - 1
    keys.handle(st, "home")
    assert st.selected_index() == 0


def test_typed_filter_pid_comm_regex_escape_and_clear():
    st = top_state()
    for k in "f4242":
        keys.handle(st, k)
    assert st.editing == "4242" and keys_of(st.visible())[0] == 4242  # not applied yet
    assert len(st.visible()) > 2
    keys.handle(st, "enter")
    assert sorted(keys_of(st.visible())) == [4242, 4243]  # pid 4242 and its thread
    for k in ["f", "backspace", "backspace", "backspace", "backspace", *"^p", "enter"]:
        keys.handle(st, k)
    assert st.text_filter == "^p"
    assert {r.line["comm"] for r in st.visible()} == {"postgres", "pg_worker", "python3"}
    for k in ["f", *"zzz", "esc"]:
        keys.handle(st, k)
    assert st.text_filter == "^p" and st.editing is None  # Esc cancels the edit
    for k in ["f", "backspace", "backspace", "enter"]:
        keys.handle(st, k)
    assert st.text_filter == "" and len(st.visible()) >= 5  # empty clears


def test_text_matcher_invalid_regex_is_a_substring_and_funcs_match_by_adder():
    st = top_state()
    rows = st.rows[TASKS].values()
    assert [r.key for r in rows if text_matcher("pg_w(", TASKS)(r)] == []
    assert [r.key for r in rows if text_matcher("PG_W", TASKS)(r)] == [4243]
    frows = st.rows[FUNCS].values()
    assert [r.key for r in frows if text_matcher("76", FUNCS)(r)] == ["key_change_session_keyring"]


def test_command_line_filters():
    f = Filters(pids=[4242], comm=re.compile("worker"))
    assert f.task_ok({"pid": 4242, "tid": 4243, "comm": "pg_worker"})
    assert not f.task_ok({"pid": 4242, "tid": 4242, "comm": "postgres"})
    assert not f.task_ok({"pid": 1, "tid": 1, "comm": "worker"})
    assert Filters(tids=[7]).task_ok({"pid": 1, "tid": 7, "comm": "x"})
    st = TopState(meta(), filters=Filters(func=re.compile("fput")))
    for s in group_samples(sr.top_lines(2)):
        st.push(s)
    assert list(st.rows[FUNCS]) == ["____fput"]


# -- fading and ageing --------------------------------------------------------------

def test_quiet_rows_fade_then_age_out_but_queued_and_selected_rows_stay():
    st = TopState(meta(), age_out=3)
    groups = group_samples(sr.top_lines(8))
    st.push(groups[0])
    st.push(groups[1])
    keyctl = st.rows[TASKS][77]
    assert keyctl.quiet == 0  # active in snapshots 1 and 2
    st.push(groups[2])
    assert st.rows[TASKS][77].quiet == 1 and 77 in keys_of(st.visible())  # dimmed, shown
    for g in groups[3:5]:
        st.push(g)
    assert st.rows[TASKS][77].quiet == 3 and 77 in keys_of(st.visible())
    st.push(groups[5])
    assert 77 not in keys_of(st.visible()) and st.hidden_count() == 1
    assert 3100 in keys_of(st.visible())  # quiet, but 3 items still queued
    # the selected row is never hidden under the reader
    st2 = TopState(meta(), age_out=1)
    st2.push(groups[0])
    st2.push(groups[1])
    st2.selected[TASKS], st2.picked[TASKS] = 77, True
    for g in groups[2:6]:
        st2.push(g)
    assert 77 in keys_of(st2.visible())


def test_a_row_missing_from_the_snapshot_is_kept_then_dropped():
    st = TopState(meta(), age_out=2)
    t = sr.task([1000], [500], tid=9, pid=9)
    st.push(group(sr.START + SEC, [t]))
    st.push(group(sr.START + 2 * SEC, []))
    row = st.rows[TASKS][9]
    assert row.gone and row.adds_s == 0.0 and 9 in keys_of(st.visible())
    for n in range(3, 6):
        st.push(group(sr.START + n * SEC, []))
    assert 9 not in st.rows[TASKS]


# -- other actions ------------------------------------------------------------------

def test_view_detail_pause_help_interval_and_quit():
    st = top_state()
    keys.handle(st, "tab")
    assert st.view == FUNCS and st.selected_row().key == "____fput"
    keys.handle(st, "enter")
    assert st.detail
    keys.handle(st, "down")  # scrolls the detail, not the selection
    assert st.detail_scroll == 1 and st.selected_row().key == "____fput"
    keys.handle(st, "esc")
    assert not st.detail
    keys.handle(st, " ")
    assert st.paused
    keys.handle(st, " ")
    assert not st.paused
    keys.handle(st, "?")
    assert st.help
    keys.handle(st, "x")
    assert not st.help
    before = st.interval
    keys.handle(st, "+")
    assert st.interval > before
    keys.handle(st, "-")
    keys.handle(st, "-")
    assert st.interval < before
    keys.handle(st, "c")
    assert st.cumulative
    keys.handle(st, "q")
    assert st.quit


def test_step_interval_bounds():
    assert step_interval(1.0, 1) == 2.0 and step_interval(1.0, -1) == 0.5
    assert step_interval(INTERVALS[-1], 1) == INTERVALS[-1]
    assert step_interval(INTERVALS[0], -1) == INTERVALS[0]
    assert step_interval(3.0, 1) == 5.0 and step_interval(3.0, -1) == 2.0


def test_cumulative_latency_window():
    st = top_state()
    row = st.rows[TASKS][4242]
    assert st.latency(row)[0]["count"] == 120
    st.toggle_cumulative()
    assert st.latency(row)[0]["count"] == 720


def test_decode_keys():
    assert keys.decode(b"\x1b[A\x1b[Bq") == ["up", "down", "q"]
    assert keys.decode(b"\x1b") == ["esc"]
    assert keys.decode(b"\t\r \x7f") == ["tab", "enter", " ", "backspace"]
    assert keys.decode(b"\x1b[5~\x1b[6~\x1b[Z") == ["pgup", "pgdn", "backtab"]
    assert keys.decode(b"\x1b[99;5Xs") == ["s"]  # unknown sequences are skipped whole
    assert keys.decode("é".encode()) == ["é"]


# -- sources ------------------------------------------------------------------------

def test_group_samples_splits_snapshot_groups():
    groups = group_samples(sr.sample_lines())
    assert [len(g.tasks) for g in groups] == [1, 2]
    assert [len(g.funcs) for g in groups] == [1, 3]


def test_replay_paces_by_recorded_time(tmp_path):
    path = sr.write_jsonl(tmp_path / "r.jsonl", sr.top_lines(6))
    src = ReplaySource(str(path), speed=1)
    assert src.meta.hostname == "db1" and src.meta.replay == str(path)
    seqs = [src.next(1.0).snapshot["seq"]]
    seqs += [src.next(2.0).snapshot["seq"] for _ in range(2)]  # 2 s ticks skip one
    assert seqs == [0, 2, 4]
    assert src.next(0.25) is None  # nothing recorded in the next quarter second
    assert src.pace(1.0) == 1.0
    fast = ReplaySource(str(path), speed=0)
    got = []
    while not fast.done:
        got.append(fast.next(1.0).snapshot["seq"])
    assert got == list(range(6)) and fast.pace(1.0) == 0.0
    assert fast.samples[-1].evicted == 0 and fast.samples[0].evicted is None


def test_replay_double_speed_and_lost_per_snapshot(tmp_path):
    path = sr.write_jsonl(tmp_path / "r.jsonl", sr.top_lines(6))
    src = ReplaySource(str(path), speed=2)
    assert [src.next(1.0).snapshot["seq"] for _ in range(3)] == [0, 2, 4]
    assert [s.lost for s in read_record(str(path)).snapshots] == [0, 0, 5, 5, 5, 5]
    assert [s.lost for s in src.samples] == [0, 0, 5, 5, 5, 5]


def test_replay_of_a_single_final_snapshot_shows_at_once(tmp_path):
    lines = [sr.header(), sr.snapshot(), sr.task([1000], [10]), sr.summary()]
    src = ReplaySource(str(sr.write_jsonl(tmp_path / "one.jsonl", lines)), speed=1)
    s = src.next(1.0)
    assert s is not None and s.tasks[0]["tid"] == 100 and src.done


def test_replay_carries_each_snapshots_skipped_runs(tmp_path):
    lines = sr.top_lines(3)
    for n, line in enumerate(x for x in lines if x["type"] == "snapshot"):
        line["skipped_runs"] = n * 2
    lines[-1]["skipped_runs"] = 7  # the summary's count is the last word
    src = ReplaySource(str(sr.write_jsonl(tmp_path / "r.jsonl", lines)), speed=0)
    assert [x.skipped for x in src.samples] == [0, 2, 7]
