"""twtrace serve's metric maths, without a kernel: buckets, counters built
from cumulative samples, task-name folding, names, and the exposition
checked by promtool."""
import random
import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

import synth_record as s
from twtrace.hist import Histogram
from twtrace.serve import buckets
from twtrace.serve.exposition import Collector, families
from twtrace.serve.main import Server
from twtrace.serve.metrics import Aggregator, interval_max_depth
from twtrace.top.sample import Meta, Sample, group_samples

META = Meta(hostname="h", kernel="6.1.0-test", arch="x86_64", probe_mode="fentry",
            start_ns=s.START)


def test_bounds_are_powers_of_two_minus_one_ns_in_seconds():
    assert buckets.BOUNDS_NS[0] == 1023 and buckets.BOUNDS_NS[-1] == (1 << 34) - 1
    assert buckets.LE[0] == "1.023e-06" and buckets.LE[-1] == "17.179869183"
    assert len(buckets.LE) == 25


def test_cumulative_buckets_are_exact_counts_of_samples():
    rng = random.Random(7)
    values = [rng.choice([0, 5, 1023, 1024, 2047, 2048, 999_999, 1 << 30, (1 << 30) - 1,
                          (1 << 34) - 1, 1 << 34, 10 ** 12])
              for _ in range(300)] + [rng.randrange(0, 1 << 36) for _ in range(3000)]
    h = Histogram()
    for v in values:
        h.add(v)
    got = buckets.cumulative(h.counts)
    assert got[-1] == ("+Inf", len(values))
    for (le, n), bound in zip(got, buckets.BOUNDS_NS):
        assert n == sum(v <= bound for v in values), le


def samples(n=4):
    return group_samples(s.top_lines(n))


def agg_of(samples_, label_comm=0):
    agg = Aggregator(META, "0.1.0", label_comm)
    agg.push(Sample({"type": "snapshot", "ts_ns": s.START}, lost=0))
    for x in samples_:
        agg.push(x)
    return agg


def test_func_counters_and_histograms_equal_the_last_cumulative_line():
    groups = samples()
    agg = agg_of(groups)
    for line in groups[-1].funcs:
        t = agg.funcs[line["func"]]
        assert {k: t.counters[k] for k in ("adds", "failed_adds", "cancels", "callbacks")} == \
            {k: line[k] for k in ("adds", "failed_adds", "cancels", "callbacks")}
        assert t.queue.counts == Histogram.from_pairs(line["queue_ns"]["hist"]).counts
        assert t.queue.sum_ns == line["queue_ns"]["sum"]


def test_counters_never_go_back_when_a_row_restarts_or_a_task_leaves():
    groups = samples(3)
    agg = agg_of(groups[:2])
    before = agg.funcs["____fput"].counters["adds"]
    # the kernel entry was evicted and re-created: its cumulative count restarts small
    restarted = [dict(f, adds=3, callbacks=3) if f["func"] == "____fput" else f
                 for f in groups[2].funcs]
    agg.push(Sample(groups[2].snapshot, groups[2].tasks[:1], restarted))
    assert agg.funcs["____fput"].counters["adds"] == before + 3


def test_label_comm_keeps_n_names_and_folds_the_rest_into_other():
    groups = samples()
    agg = agg_of(groups, label_comm=2)
    last = groups[-1].tasks
    by_comm = {}
    for t in last:
        by_comm[t["comm"]] = by_comm.get(t["comm"], 0) + t["adds"]
    top2 = sorted(by_comm, key=lambda c: -by_comm[c])[:2]
    assert sorted(agg.groups) == sorted(top2 + ["other"])
    assert agg.groups["other"].counters["adds"] == sum(v for c, v in by_comm.items()
                                                       if c not in top2)
    assert sum(g.counters["adds"] for g in agg.groups.values()) == sum(by_comm.values())


def test_a_labelled_name_stays_labelled_so_other_never_shrinks():
    agg = Aggregator(META, "0.1.0", 1)
    a = s.task(tid=1, pid=1, comm="a", adds=5)
    b = s.task(tid=2, pid=2, comm="b", adds=1)
    agg.push(Sample({}, [a, b]))
    agg.push(Sample({}, [dict(a, adds=6), dict(b, adds=100)]))  # b is now far busier
    assert agg.comms.named == ["a"]
    assert agg.groups["other"].counters["adds"] == 100 and agg.groups["a"].counters["adds"] == 6


def test_max_depth_over_the_interval():
    prev = s.task(depth=2, max_depth=9)
    assert interval_max_depth(dict(prev, depth=1, max_depth=12), prev) == 12  # new high: exact
    assert interval_max_depth(dict(prev, depth=4), prev) == 4  # no new high: lower bound
    assert interval_max_depth(prev, None) == 9


def test_depth_max_resets_at_each_scrape():
    agg = Aggregator(META, "0.1.0")
    agg.push(Sample({}, [s.task(depth=0, max_depth=7)]))
    agg.push(Sample({}, [s.task(depth=1, max_depth=7)]))
    assert agg.take_depth_max() == {None: 7}
    agg.push(Sample({}, [s.task(depth=0, max_depth=7)]))
    assert agg.take_depth_max() == {None: 1}
    assert agg.take_depth_max() == {None: 1}  # no new sample: the latest interval's


class FakeSource:
    """LiveSource's surface over a recording's snapshot groups."""

    def __init__(self, groups):
        self.meta = META
        self.groups = list(groups)
        self.reads = 0

    def baseline(self):
        return Sample({"type": "snapshot", "ts_ns": s.START}, lost=0, evicted=0,
                      bpf={"run_time_ns": 0, "run_cnt": 0}, cpu_s=0.0)

    def next(self, interval):
        self.reads += 1
        g = self.groups[min(self.reads, len(self.groups)) - 1]
        return Sample(dict(g.snapshot, self_adds=3 * self.reads), g.tasks, g.funcs, lost=2,
                      evicted=1,
                      bpf={"run_time_ns": 1_500_000 * self.reads, "run_cnt": 10 * self.reads},
                      cpu_s=0.25 * self.reads)


def registry(label_comm=0):
    return Server(FakeSource(samples()), label_comm).registry()


def parsed(reg):
    return {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}


def test_names_types_and_values():
    fams = parsed(registry())
    assert {n: f.type for n, f in fams.items()} == {
        "twtrace_adds": "counter", "twtrace_failed_adds": "counter",
        "twtrace_callbacks": "counter", "twtrace_cancels": "counter",
        "twtrace_queue_latency_seconds": "histogram", "twtrace_run_time_seconds": "histogram",
        "twtrace_queue_depth_max": "gauge", "twtrace_queued_items": "gauge",
        "twtrace_lost_events": "counter", "twtrace_map_full": "counter",
        "twtrace_bpf_run_seconds": "counter", "twtrace_bpf_runs": "counter",
        "twtrace_cpu_seconds": "counter", "twtrace_self_adds": "counter",
        "twtrace_info": "gauge"}
    first = samples()[0]
    adds = {x.labels["func"]: x.value for x in fams["twtrace_adds"].samples}
    assert adds == {f["func"]: f["adds"] for f in first.funcs}
    own = {x.name: x.value for n in ("twtrace_bpf_run_seconds", "twtrace_cpu_seconds",
                                     "twtrace_lost_events", "twtrace_self_adds")
           for x in fams[n].samples}
    assert own == {"twtrace_bpf_run_seconds_total": 0.0015, "twtrace_cpu_seconds_total": 0.25,
                   "twtrace_lost_events_total": 2, "twtrace_self_adds_total": 3}
    (info,) = fams["twtrace_info"].samples
    assert info.labels == {"version": "0.1.0", "kernel": "6.1.0-test", "arch": "x86_64",
                           "probe_mode": "fentry"}
    assert not [x for f in fams.values() for x in f.samples if "tid" in x.labels]


def test_histogram_series_are_cumulative_and_in_seconds():
    fams = parsed(registry())
    fput = [x for x in fams["twtrace_queue_latency_seconds"].samples
            if x.labels["func"] == "____fput"]
    counts = [x.value for x in fput if x.name.endswith("_bucket")]
    assert counts == sorted(counts) and len(counts) == 26
    (total,) = [x.value for x in fput if x.name.endswith("_count")]
    (sum_s,) = [x.value for x in fput if x.name.endswith("_sum")]
    line = [f for f in samples()[0].funcs if f["func"] == "____fput"][0]
    assert total == line["queue_ns"]["count"] == counts[-1]
    assert sum_s == pytest.approx(line["queue_ns"]["sum"] / 1e9)


def promtool():
    tool = shutil.which("promtool")
    if not tool:
        pytest.skip("promtool not installed (scripts/setup installs Debian's prometheus)")
    return tool


@pytest.mark.parametrize("label_comm", [0, 3])
def test_promtool_accepts_the_exposition(label_comm):
    text = generate_latest(registry(label_comm))
    r = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                       timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    # "check metrics" prints lint problems (naming, units) even when it passes
    assert not (r.stdout + r.stderr).strip(), (r.stdout + r.stderr).decode()


def test_openmetrics_when_the_scraper_asks():
    from prometheus_client import start_http_server

    reg = registry(2)
    httpd = start_http_server(0, addr="127.0.0.1", registry=reg)
    try:
        port = httpd[0].server_address[1]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={
            "Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.rstrip().endswith("# EOF")
        assert "# TYPE twtrace info" in body and 'twtrace_task_adds_total{comm="other"}' in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
    finally:
        httpd[0].shutdown()


def test_openmetrics_text_parses():
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om

    names = {f.name for f in om(generate_openmetrics(registry(1)).decode())}
    assert {"twtrace_adds", "twtrace_task_queue_latency_seconds", "twtrace"} <= names


@pytest.mark.parametrize("args,words", [
    (["--listen", "localhost"], ["ADDR:PORT"]),
    (["--listen", "127.0.0.1:0"], ["port"]),
    (["--listen", "127.0.0.1:70000"], ["port"]),
    (["--listen", "example.org:80"], ["not an IP address"]),
    (["--interval", "nan"], ["--interval"]),
    (["--interval", "0"], ["--interval"]),
    (["--label-comm", "-1"], ["--label-comm"]),
    (["--textfile", "/tmp/x.txt"], [".prom"]),
    (["--textfile", "/nonexistent-dir/x.prom"], ["no such directory"]),
    (["--textfile", "/tmp/x.prom", "--listen", "127.0.0.1:1"], ["one of"]),
    (["--comm", "("], ["--comm"]),
    (["--probe-mode", "magic"], ["probe-mode"]),
])
def test_bad_flags_are_one_line(args, words):
    from test_cli import one_line_error, twtrace

    r = twtrace("serve", *args)
    one_line_error(r, *words)
    assert r.returncode == 2


def test_listen_forms():
    from twtrace.serve.main import parse_listen

    assert parse_listen("127.0.0.1:19868") == ("127.0.0.1", 19868)
    assert parse_listen("[::1]:9") == ("::1", 9)
    assert parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_listen("localhost:1") == ("localhost", 1)


def test_map_full_per_map_when_the_snapshot_says():
    agg = Aggregator(META, "0.1.0")
    agg.push(Sample({"full": {"tasks": 0, "aggs": 0}}, evicted=0))
    agg.push(Sample({"full": {"tasks": 2, "aggs": 5}}, evicted=7))
    agg.push(Sample({"full": {"tasks": 3, "aggs": 5}}, evicted=8))
    assert agg.map_full == {"tasks": 3, "aggs": 5}
    total = Aggregator(META, "0.1.0")
    total.push(Sample({}, evicted=4))
    assert total.map_full == {"all": 4}


def test_skipped_runs_counted_from_growth_and_absent_while_unknown():
    base = {"type": "snapshot", "ts_ns": s.START}
    unknown = Aggregator(META, "0.1.0")
    for _ in range(2):
        unknown.push(Sample(base, skipped=None))
    assert "twtrace_skipped_runs" not in {f.name for f in families(unknown)}
    agg = Aggregator(META, "0.1.0")
    for n in (0, 2, 5, 1):  # 1: the source restarted its count
        agg.push(Sample(base, skipped=n))
    (fam,) = [f for f in families(agg) if f.name == "twtrace_skipped_runs"]
    assert fam.type == "counter" and fam.samples[0].value == 6
