"""The benchmark harness's pure parts: its arithmetic and its parsers.
(Benchmarks are not tests: nothing here times anything.)"""
import os
import sys

import pytest

sys.path.insert(0, os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..")))

from benchmarks import bpfmaps, figures, lossless, procfs, recfile, stats, table  # noqa: E402

STAT = ("1234 (tw trace) (x)) S 1 1234 1234 0 -1 4194560 2345 0 0 0 "
        "250 50 0 0 20 0 3 0 12345 100000000 5000 18446744073709551615")


def test_stat_cpu_counts_from_the_last_paren():
    assert procfs.parse_stat_cpu(STAT, clk_tck=100) == pytest.approx(3.0)


def test_status_rss():
    text = "Name:\tpython3\nVmPeak:\t  300000 kB\nVmRSS:\t  227340 kB\nThreads:\t3\n"
    assert procfs.parse_status_kb(text) == 227340
    assert procfs.parse_status_kb(text, "VmSwap") is None


def test_fdinfo_program_and_link():
    prog = ("pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t26\n"
            "prog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\nprog_id:\t42\n"
            "run_time_ns:\t123456\nrun_cnt:\t789\nrecursion_misses:\t0\n")
    info = procfs.parse_fdinfo(prog)
    assert info["prog_id"] == 42 and info["run_time_ns"] == 123456 and info["run_cnt"] == 789
    assert info["flags"] == "02000002" and info["prog_tag"] == "0123456789abcdef"
    link = procfs.parse_fdinfo("pos:\t0\nlink_type:\ttracing\nlink_id:\t7\nprog_tag:\tab\n"
                               "prog_id:\t42\n")
    assert link["prog_id"] == 42 and "run_cnt" not in link


def test_median_min_ratio():
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 2, 3]) == 2.5
    assert stats.median([None]) is None
    assert stats.minimum([None, 5, 2]) == 2
    assert stats.ratio(1, 0) is None and stats.ratio(None, 1) is None
    assert stats.slowdown(100.0, 50.0) == 2.0
    assert stats.summary([2, None, 1, 3]) == {"median": 2, "min": 1, "max": 3, "n": 3}


def test_prog_deltas_new_program_counts_from_zero():
    before = {1: (100, 10)}
    after = {1: (250, 25), 2: (40, 4)}
    assert stats.prog_deltas(before, after) == {1: (150, 15), 2: (40, 4)}


def test_slope_and_growth():
    flat = [(t, 100.0) for t in range(10)]
    assert stats.slope(flat) == 0 and stats.growth(flat) == 0
    rising = [(t, 100.0 + 10 * t) for t in range(11)]
    assert stats.slope(rising) == pytest.approx(10.0)
    assert stats.growth(rising) == pytest.approx(100.0 / 150.0)
    assert stats.slope([(1, 2)]) is None


def _win(kind, rnd, rate, bpf=None, cpu=None, up=None, seen=None, items=1000):
    return {"kind": kind, "round": rnd, "items_per_s": rate, "bpf_ns_per_item": bpf,
            "cpu_frac": cpu, "startup_s": up, "seen": seen, "items": items, "seconds": 10.0,
            "progs": {"p": {"run_time_ns": 2000 * items, "run_cnt": items}} if bpf else {}}


def test_figures_pair_each_round():
    wins = [_win("untraced", 0, 1000), _win("top", 0, 500, 20, 0.2, 50),
            _win("bpftrace", 0, 800, 10, 0.05, 5, seen=1005),
            _win("untraced", 1, 900), _win("top", 1, 300, 30, 0.3, 70),
            _win("bpftrace", 1, 900, 10, 0.1, 7, seen=1500)]
    f = figures.figures(wins)
    assert f["top"]["slowdown"]["median"] == pytest.approx((2.0 + 3.0) / 2)
    assert f["top"]["slowdown"]["min"] == pytest.approx(2.0)
    assert f["top"]["bpf_vs_bpftrace"]["min"] == pytest.approx(2.0)
    assert f["top"]["cpu_vs_bpftrace"]["median"] == pytest.approx((4.0 + 3.0) / 2)
    assert f["top"]["startup_vs_bpftrace"]["min"] == pytest.approx(10.0)
    # 5 extra adds are the tick's, 500 are not
    assert f["bpftrace"]["exact"] == {"exact": 1, "checked": 2, "task_excess": [5, 500]}
    assert f["bpftrace"]["progs"]["p"]["ns_per_item"] == pytest.approx(2000)
    text = table.main_table(f)
    assert "2.50× (min 2.00×)" in text and "1/2" in text


def test_events_exact_needs_every_add_line_and_no_loss():
    ok = {"task_adds": 1003, "add_lines": 1000, "lost": 0}
    assert figures.exactness("events", [_win("events", 0, 1, seen=ok)])["exact"] == 1
    lossy = dict(ok, lost=3)
    assert figures.exactness("events", [_win("events", 0, 1, seen=lossy)])["exact"] == 0


RECORD = [
    '{"type":"header","schema":1,"start_ns":100}',
    '{"type":"add","ts_ns":150,"work":"0x1","func":"____fput","tid":7,"pid":7,"comm":"s",'
    '"adder_tid":7,"adder_pid":7,"adder_comm":"s","notify":"resume","ok":true}',
    '{"type":"add","ts_ns":160,"work":"0x2","func":"task_mm_cid_work","tid":7,"pid":7,"comm":"s",'
    '"adder_tid":7,"adder_pid":7,"adder_comm":"s","notify":"resume","ok":true}',
    '{"type":"add","ts_ns":170,"work":"0x3","func":"____fput","tid":8,"pid":8,"comm":"o",'
    '"adder_tid":7,"adder_pid":7,"adder_comm":"s","notify":"resume","ok":true}',
    '{"type": "add", "ts_ns": 250, "work": "0x4", "func": "____fput", "tid": 7, "pid": 7}',
    '{"type":"callback","ts_ns":151,"work":"0x1","func":"____fput","tid":7,"pid":7}',
    '{"type":"lost","ts_ns":300,"count":4}',
    '{"type":"snapshot","ts_ns":400,"seq":0,"final":true}',
    '{"type":"task","tid":7,"pid":7,"comm":"s","adds":3}',
    '{"type":"task","tid":8,"pid":8,"comm":"o","adds":1}',
    '{"type":"summary","adds":4,"evicted":0,"complete":true}',
]


def test_scan_record_counts_the_workloads_fputs_per_window():
    scan = recfile.scan_record(RECORD, 7, [(100, 200), (200, 300)])
    # only ____fput adds targeting pid 7 (adder_pid 7 on tid 8 is not one)
    assert scan["window_adds"] == [1, 1]
    assert scan["task"]["adds"] == 3 and scan["summary"]["adds"] == 4
    assert scan["lost"] == [(300, 4)] and scan["snapshots"] == [400]
    assert recfile.lost_between(scan["lost"], 200, 300) == 4
    assert recfile.lost_between(scan["lost"], 301, 900) == 0


def test_bpftrace_adds_line():
    assert recfile.bpftrace_adds("@adds[147, python3, 147, python3]: 56220\n", 147) == 56220
    assert recfile.bpftrace_adds("@adds[158, bpftrace, 147, python3]: 3", 147) is None
    assert recfile.bpftrace_adds("@depth[147]: 3", 147) is None


def test_bpftrace_ready_line():
    from benchmarks import tracers
    assert tracers.BPFTRACE_READY.search("Attaching 9 probes...").group(1) == "9"
    assert tracers.RECORD_READY.search("twtrace: tracing task_work (fentry; ...)")


def test_lossless_judge():
    steps = [{"rate_target": 1000, "items": 2048, "items_per_s": 1024.0,
              "t_begin_ns": 0, "t_end_ns": 2_000_000_000},
             {"rate_target": 4000, "items": 6848, "items_per_s": 3396.0,
              "t_begin_ns": 10_000_000_000, "t_end_ns": 12_000_000_000}]
    scan = {"window_adds": [2048, 6848], "lost": [(13_000_000_000, 5)]}
    res = lossless.judge(steps, scan)
    assert [s["lossless"] for s in res["steps"]] == [True, False]
    assert res["highest_lossless_items_per_s"] == 1024.0 and res["total_lost"] == 5


def test_possible_cpus():
    assert bpfmaps.possible_cpus("0\n") == 1
    assert bpfmaps.possible_cpus("0-3,6,8-9\n") == 7


def test_long_snapshot_reader_sums_each_childs_latest_line():
    from benchmarks.longrun import SnapshotReader
    rd = SnapshotReader()
    for line in ('{"type":"snapshot","ts_ns":5,"seq":0}',
                 '{"type":"task","tid":9,"gen":1,"pid":9,"comm":"busybox-twb","adds":1}',
                 '{"type":"task","tid":10,"gen":1,"pid":10,"comm":"busybox-twb","adds":1}',
                 '{"type":"task","tid":11,"gen":1,"pid":11,"comm":"python3","adds":7}',
                 '{"type":"snapshot","ts_ns":6,"seq":1,"full":{"aggs":3,"tasks":0}}',
                 '{"type":"task","tid":9,"gen":1,"pid":9,"comm":"busybox-twb","adds":2}',
                 '{"type":"task","tid":9,"gen":5,"pid":9,"comm":"busybox-twb","adds":1}',
                 '{"type":"summary","adds":9}'):
        rd("stdout", line, 0.0)
    assert rd.snaps == [5, 6] and rd.child_adds == 2 + 1 + 1 and rd.summary["adds"] == 9
    assert rd.full == {"aggs": 3, "tasks": 0}


def test_tail_lines_yields_whole_lines_as_a_file_grows(tmp_path):
    from benchmarks.tracers import tail_lines
    path = tmp_path / "out"
    path.write_text("")
    writes = iter(['{"a": 1}\n{"b"', ': 2}\n', '{"c": 3}'])
    state = {"alive": True}
    f = open(path)

    def alive():  # each empty read: the writer adds its next piece, then stops
        try:
            with open(path, "a") as w:
                w.write(next(writes))
        except StopIteration:
            state["alive"] = False
        return True if state["alive"] else False

    got = list(tail_lines(f, alive, pause=0))
    assert got == ['{"a": 1}\n', '{"b": 2}\n', '{"c": 3}']


def test_pipeline_benchmark_runs_and_reports_each_tenth():
    from benchmarks import pipeline
    per_tick = pipeline.run(forks=5, ticks=20, idle=100)
    assert len(per_tick) == 10 and all(x > 0 for x in per_tick)


@pytest.mark.parametrize("args", [["--ticks", "0"], ["--forks", "-1"], ["--idle", "x"]])
def test_pipeline_benchmark_refuses_bad_counts(args, capsys):
    from benchmarks import pipeline
    with pytest.raises(SystemExit) as e:
        pipeline.main(args)
    assert e.value.code == 2 and "needs a whole number" in capsys.readouterr().err


def test_programs_sharing_a_name_are_summed():
    from benchmarks.windows import prog_split
    got = prog_split({7: (100, 10), 8: (50, 10), 9: (5, 0), 10: (1, 1)},
                     {7: "____fput", 8: "____fput", 9: "idle"})
    assert got == {"____fput": {"run_time_ns": 150, "run_cnt": 20},
                   "id10": {"run_time_ns": 1, "run_cnt": 1}}
