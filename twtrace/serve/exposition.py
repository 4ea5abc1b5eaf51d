"""The metric families twtrace serves, built from an Aggregator at scrape
time.  Names follow Prometheus conventions: twtrace_ prefix, base units
(seconds), _total on counters (prometheus_client appends it).  The list is
documented in docs/prometheus.md; keep the two in step."""
from __future__ import annotations

from typing import Callable, Iterator, List, Optional

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, InfoMetricFamily)

from twtrace.serve.metrics import Aggregator, Totals, histogram_buckets, seconds

FUNC_COUNTERS = (
    ("adds", "twtrace_adds", "task_work_add() calls queueing this callback, failed ones included"),
    ("failed_adds", "twtrace_failed_adds", "task_work_add() calls that failed (target exiting)"),
    ("callbacks", "twtrace_callbacks", "callbacks of this function that ran"),
    ("cancels", "twtrace_cancels", "queued items of this function cancelled before running"),
)
LATENCIES = (
    ("queue", "queue_latency_seconds", "time from task_work_add() to the callback's start"),
    ("run", "run_time_seconds", "callback run time"),
)


def _per_label(prefix: str, label: str, rows: List, what: str) -> Iterator:
    for key, name, doc in FUNC_COUNTERS:
        fam = CounterMetricFamily(f"{prefix}{name[len('twtrace_'):]}", f"{doc}, {what}",
                                  labels=[label])
        for value, totals in rows:
            fam.add_metric([value], totals.counters[key])
        yield fam
    for attr, name, doc in LATENCIES:
        fam = HistogramMetricFamily(f"{prefix}{name}", f"{doc}, {what}", labels=[label])
        for value, totals in rows:
            buckets, sum_s = histogram_buckets(getattr(totals, attr))
            fam.add_metric([value], buckets, sum_s)
        yield fam


def families(agg: Aggregator) -> Iterator:
    funcs = sorted(agg.funcs.items())
    yield from _per_label("twtrace_", "func", funcs, "per callback function")
    if agg.comms is not None:
        groups = sorted(agg.groups.items())
        yield from _per_label("twtrace_task_", "comm", groups,
                              f"per task name (the {agg.comms.n} busiest, the rest as other)")
    yield from _depth(agg)
    yield from _own(agg)


def _depth(agg: Aggregator) -> Iterator:
    labels = [] if agg.comms is None else ["comm"]

    def add(fam, group: Optional[str], value: int) -> None:
        fam.add_metric([] if group is None else [group], value)

    fam = GaugeMetricFamily("twtrace_queue_depth_max",
                            "largest queue depth of a task since the previous scrape "
                            "(docs/prometheus.md: exact when a new high was set)", labels=labels)
    window = agg.take_depth_max()
    for group in sorted(window, key=str):
        add(fam, group, window[group])
    if agg.comms is None and not window:
        add(fam, None, 0)
    yield fam
    fam = GaugeMetricFamily("twtrace_queued_items", "items queued now and not yet run",
                            labels=labels)
    for group in sorted(agg.queued, key=str):
        add(fam, group, agg.queued[group])
    if agg.comms is None and not agg.queued:
        add(fam, None, 0)
    yield fam


def _own(agg: Aggregator) -> Iterator:
    s = agg.scalars
    yield CounterMetricFamily("twtrace_lost_events", "events that did not reach user space "
                              "(aggregates are counted in the kernel and unaffected)",
                              value=s["lost"])
    fam = CounterMetricFamily("twtrace_map_full", "entries that did not fit a fixed-size "
                              "kernel map (non-zero means some counts are low)", labels=["map"])
    for name in sorted(agg.map_full) or ["all"]:
        fam.add_metric([name], agg.map_full.get(name, 0))
    yield fam
    if agg.skipped is not None:  # absent where the kernel keeps no count: unknown, not 0
        yield CounterMetricFamily("twtrace_skipped_runs", "runs of twtrace's BPF programs the "
                                  "kernel skipped because one was already running on that CPU "
                                  "(each skipped add shows later as an unmatched callback)",
                                  value=agg.skipped)
    yield CounterMetricFamily("twtrace_bpf_run_seconds", "run time of twtrace's BPF programs "
                              "(the kernel's statistics)", value=seconds(s["bpf_run_ns"]))
    yield CounterMetricFamily("twtrace_bpf_runs", "runs of twtrace's BPF programs",
                              value=s["bpf_runs"])
    yield CounterMetricFamily("twtrace_cpu_seconds", "CPU time of the twtrace process",
                              value=s["cpu_s"])
    yield CounterMetricFamily("twtrace_self_adds", "task_work items twtrace queued on its own "
                              "threads (its closes), left out of every other metric",
                              value=s["self_adds"])
    m = agg.meta
    yield InfoMetricFamily("twtrace", "what is tracing", value={
        "version": agg.version, "kernel": m.kernel, "arch": m.arch, "probe_mode": m.probe_mode})


class Collector:
    """prometheus_client collector: each scrape first asks refresh() for a
    fresh sample, so the values are the kernel's as of the scrape."""

    def __init__(self, agg: Aggregator, refresh: Callable[[], None], lock):
        self.agg, self.refresh, self.lock = agg, refresh, lock

    def describe(self):  # registering must not consume a scrape (depth window)
        return []

    def collect(self):
        with self.lock:
            self.refresh()
            return list(families(self.agg))
