"""LiveSource against a fake loader: the live path's plumbing (loader ->
model.Snapshotter -> Sample -> TopState) without bcc or root."""
from __future__ import annotations

import types

import pytest

from twtrace.errors import UserError
from twtrace.top import sources
from twtrace.top.state import FUNCS, TASKS, TopState

FPUT, CID = 0x1000, 0x2000
NAMES = {FPUT: "____fput", CID: "task_mm_cid_work"}


class FakeLoader:
    instances: list = []

    def __init__(self, cfg):
        self.cfg = cfg
        self.start_ns = 0
        self.stack = None
        self.syms = types.SimpleNamespace(name=NAMES.get)
        self.features = types.SimpleNamespace(callbacks_unprobed={}, probe_mode="kprobe")
        self.reads = 0
        self.probes = 0
        self.closed = False
        self.run_time_ns = 1_000_000
        FakeLoader.instances.append(self)

    def start(self):
        return self.features

    def probed(self, addr):
        return True

    def probe_new_callbacks(self, funcs):
        self.probes += 1
        return []

    def inflight(self):
        return {}

    def task_runs(self, tasks):
        return {}

    def reading(self):
        import contextlib
        return contextlib.nullcontext()

    def forget_items(self, items):
        return {}

    def bpf_stats(self):
        self.run_time_ns += 5_000_000
        return {"run_time_ns": self.run_time_ns, "run_cnt": self.reads}

    def drain(self, skipped=True):
        """Each drain holds what happened since the last one: 10 more items."""
        self.reads += 1

        def agg(adds, pid, comm, max_depth):
            return {"pid": pid, "comm": comm, "adds": adds, "failed_adds": 0, "cancels": 0,
                    "cancels_matched": 0, "callbacks": adds, "matched": adds, "timed": adds,
                    "queue_sum": adds * 1000, "queue_max": 1000, "run_sum": adds * 100,
                    "run_max": 100, "run_cnt": adds, "notify_mask": 2,
                    "max_depth": max_depth, "runs": adds}

        first = self.reads == 1
        return {
            "aggs": {(7, 1, FPUT): agg(10, 7, "worker", 2),
                     **({(8, 2, CID): agg(1, 7, "helper", 1)} if first else {})},
            "hists": {(7, 1, FPUT, 0): {200: 10}, (7, 1, FPUT, 1): {100: 10},
                      **({(8, 2, CID, 0): {200: 1}, (8, 2, CID, 1): {100: 1}} if first else {})},
            "pairs": {(7, 7, 1, FPUT): {"adds": 10, "adder_comm": "worker"},
                      **({(1, 8, 2, CID): {"adds": 1, "adder_comm": "init"}} if first else {})},
            "retired": {},
            "stats": {"lost": 0, "full": {}, "unmatched": 0},
        }

    def close(self):
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    import twtrace.doctor
    import twtrace.loader

    monkeypatch.setattr(twtrace.doctor, "can_trace_reason", lambda: None)
    monkeypatch.setattr(twtrace.loader, "Loader", FakeLoader)
    FakeLoader.instances.clear()
    return FakeLoader


def test_live_source_feeds_the_view(fake):
    src = sources.LiveSource(probe_mode="kprobe", pids=[7])
    loader = fake.instances[0]
    assert loader.cfg.events is False  # no per-event stream: cost independent of the rate
    assert loader.cfg.pids == [7] and loader.cfg.follow is True
    state = TopState(src.meta, baseline=src.baseline())
    first = src.next(1.0)
    state.push(first)
    second = src.next(1.0)
    state.push(second)
    assert loader.probes == 2 and loader.reads == 2
    assert [t["tid"] for t in second.tasks] == [7, 8]
    assert second.snapshot["seq"] == 1 and second.snapshot["final"] is False
    dt = second.ts_ns - first.ts_ns
    row = state.rows[TASKS][7]
    assert row.adds_s == pytest.approx(10 * 1e9 / dt)
    assert state.rows[FUNCS]["____fput"].line["adders"][0]["adder_comm"] == "worker"
    assert state.totals.bpf_pct == pytest.approx(100 * 5_000_000 / dt)
    assert state.totals.cpu_pct is not None and state.totals.lost == 0
    src.close()
    assert loader.closed


def test_live_func_filter_narrows_tasks_too(fake):
    src = sources.LiveSource(func="cid")
    s = src.next(1.0)
    assert [t["tid"] for t in s.tasks] == [8]
    assert [f["func"] for f in s.funcs] == ["task_mm_cid_work"]


def test_live_without_bpf_stats_shows_no_bpf_cost(fake, monkeypatch):
    monkeypatch.delattr(FakeLoader, "bpf_stats")
    src = sources.LiveSource()
    state = TopState(src.meta, baseline=src.baseline())
    state.push(src.next(1.0))
    assert state.totals.bpf_pct is None and state.totals.cpu_pct is not None


def test_live_refuses_a_host_that_cannot_trace(monkeypatch):
    import twtrace.doctor

    monkeypatch.setattr(twtrace.doctor, "can_trace_reason", lambda: "no kprobes")
    with pytest.raises(UserError, match="cannot trace this host: no kprobes") as e:
        sources.LiveSource()
    assert e.value.exit_code == 1
