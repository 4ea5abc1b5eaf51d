"""`twtrace record` in a real kernel, against ground truth the workloads
produce themselves (exact on their own thread and time window)."""
import json
from collections import Counter

import pytest

from twtrace.recordfile import read_record, validate_line


def record(vm, tmp_path, workload, *args, mode="auto", name="rec", extra=(), env=()):
    out = tmp_path / f"{name}.jsonl"
    r = vm.run(["env", *env, "twtrace", "record", "--events", "--probe-mode", mode, *extra, "-o", str(out), "--",
                "python3", f"examples/{workload}.py", *args], timeout=600)
    r.check()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    for line in lines:  # every line against the published schema
        validate_line(line)
    truth = json.loads(r.stdout.strip().splitlines()[-1])
    return lines, truth


def of(lines, kind, tid=None, func=None, lo=None, hi=None):
    return [x for x in lines if x["type"] == kind
            and (tid is None or x["tid"] == tid)
            and (func is None or x.get("func") == func)
            and (lo is None or lo <= x["ts_ns"] <= hi)]


def final(lines, kind):
    snaps = [i for i, x in enumerate(lines) if x["type"] == "snapshot" and x["final"]]
    return [x for x in lines[snaps[-1]:] if x["type"] == kind]


K = 24  # more than the interpreter's own start-up batch, so max depth is K exactly


@pytest.fixture(scope="module")
def close_batch_runs(vm_session, tmp_path_factory):
    """kprobe and auto runs. auto is the fentry run where this kernel, arch and
    bcc have fentry (and the kprobe run a second one); elsewhere auto is the
    kprobe run, twtrace must have said why it used kprobes, and --probe-mode
    fentry must refuse in words ("fentry_refused")."""
    vm = vm_session.get()
    tmp = tmp_path_factory.mktemp("close")
    runs = {"auto": record(vm, tmp, "close_batch", "--files", str(K), "--rounds", "4",
                           mode="auto", name="auto")}
    # where auto is already kprobes, a second kprobe run would repeat it
    runs["kprobe"] = (runs["auto"] if runs["auto"][0][0]["probe_mode"] == "kprobe" else
                      record(vm, tmp, "close_batch", "--files", str(K), "--rounds", "4",
                             mode="kprobe", name="kprobe"))
    runs["btf"] = vm.run(["test", "-e", "/sys/kernel/btf/vmlinux"], timeout=30).rc == 0
    runs["fentry"] = runs["auto"] if runs["auto"][0][0]["probe_mode"] == "fentry" else None
    if runs["fentry"] is None:
        runs["fentry_refused"] = vm.run(["twtrace", "record", "--probe-mode", "fentry", "-o",
                                         str(tmp / "refused.jsonl"), "--", "true"], timeout=300)
    return runs


def fentry_or_detected(runs):
    """The fentry run; where fentry is unavailable, assert that twtrace
    detected it and reported it, and return the auto (kprobe) run instead."""
    if runs["fentry"] is not None:
        return runs["fentry"], "fentry"
    header = runs["auto"][0][0]
    reason = header["features"]["probe_mode_reason"]
    assert header["probe_mode"] == "kprobe" and reason.startswith("kprobes used:"), reason
    assert "fentry" in reason, reason
    forced = runs["fentry_refused"]
    assert "Traceback" not in forced.stderr
    if "unavailable" in reason:  # bcc or the kernel cannot: asking for it is refused in words
        assert forced.rc != 0 and "fentry" in forced.stderr
    else:  # available but unsafe here (no recursion guard, preemptible): forcing it works
        assert forced.rc == 0, forced.stderr
    return runs["auto"], "kprobe"


@pytest.mark.parametrize("mode", ["fentry", "kprobe"])
def test_close_range_batches_exact(close_batch_runs, mode):
    if mode == "fentry":
        (lines, truth), mode = fentry_or_detected(close_batch_runs)
    else:
        lines, truth = close_batch_runs[mode]
    header = lines[0]
    assert header["probe_mode"] == mode and header["clock"] == "monotonic"
    # x86-64 reads the ring buffer's pages itself; elsewhere bcc's callback does
    feats = header["features"]
    assert feats["event_reader"] == ("ring pages" if feats["ringbuf"] and header["arch"] == "x86_64"
                                     else "bcc")
    # task_struct's layout from the kernel's BTF wherever the kernel has it
    assert header["features"]["task_offsets"] == ("btf" if close_batch_runs["btf"] else
                                                  "headers (no kernel BTF (No such file or directory))")
    tid = truth["tid"]
    for rnd in truth["rounds"]:
        lo, hi = rnd["t_start_ns"], rnd["t_end_ns"]
        adds = of(lines, "add", tid, "____fput", lo, hi)
        cbs = of(lines, "callback", tid, "____fput", lo, hi)
        assert len(adds) == K and len(cbs) == K
        assert all(a["ok"] and a["notify"] == "resume" and a["adder_tid"] == tid for a in adds)
        assert {c["work"] for c in cbs} == {a["work"] for a in adds}
        for c in cbs:  # added and finished inside the window
            assert c["timing"] == "exact"
            assert lo <= c["ts_ns"] - c["queue_ns"] and c["ts_ns"] + c["run_ns"] <= hi
        # LIFO: the last item added runs first
        order = {a["work"]: i for i, a in enumerate(adds)}
        assert [order[c["work"]] for c in cbs] == list(range(K - 1, -1, -1))
    task = [t for t in final(lines, "task") if t["tid"] == tid][0]
    # exactly K, unless other work was queued on the thread meanwhile (6.12's
    # tick queues task_mm_cid_work): then at most one more per such item
    other = len([a for a in of(lines, "add", tid) if a["func"] != "____fput"])
    assert K <= task["max_depth"] <= K + other and task["depth"] == 0
    assert lines[-1]["type"] == "summary" and lines[-1]["complete"]
    assert lines[-1]["lost_events"] == 0 and lines[-1]["exit_status"] == 0


def test_kprobe_and_fentry_count_the_same(close_batch_runs):
    counts = {}
    runs = {"fentry": fentry_or_detected(close_batch_runs)[0], "kprobe": close_batch_runs["kprobe"]}
    for mode, (lines, truth) in runs.items():
        tid = truth["tid"]
        counts[mode] = [(len(of(lines, "add", tid, "____fput", r["t_start_ns"], r["t_end_ns"])),
                         len(of(lines, "callback", tid, "____fput", r["t_start_ns"], r["t_end_ns"])))
                        for r in truth["rounds"]]
    assert counts["fentry"] == counts["kprobe"] == [(K, K)] * 4


def test_events_and_kernel_aggregates_agree(close_batch_runs):
    lines, truth = close_batch_runs["auto"]
    for t in final(lines, "task"):
        adds = of(lines, "add", t["tid"])
        cbs = of(lines, "callback", t["tid"])
        assert t["adds"] == len(adds) and t["callbacks"] == len(cbs)
        assert t["queue_ns"]["count"] == len([c for c in cbs if c["queue_ns"] is not None])
        if cbs:
            assert t["run_ns"]["max"] == max(c["run_ns"] for c in cbs)
    s = lines[-1]
    assert s["adds"] == len(of(lines, "add")) and s["callbacks"] == len(of(lines, "callback"))
    # who queued on whom, against the add lines: a task's adds to itself are
    # kept in its aggregate, other adders' in pair entries
    listed = 0
    for f in final(lines, "func"):
        by_pair = Counter((a["adder_pid"], a["tid"]) for a in of(lines, "add", func=f["func"]))
        for p in f["adders"]:
            assert p["adds"] == by_pair[(p["adder_pid"], p["tid"])], (f["func"], p)
            listed += p["adds"]
    assert listed >= K * 4  # the workload's own closes at least


def test_events_through_a_perf_buffer(vm, tmp_path):
    """Kernels before 5.8 have no BPF ring buffer: events come through a perf
    buffer instead.  Every cell has a ring buffer, so the test forces it."""
    lines, truth = record(vm, tmp_path, "close_batch", "--files", "8", "--rounds", "3",
                          name="perf", env=["TWTRACE_PERF_BUFFER=1"])
    assert lines[0]["features"]["ringbuf"] is False
    tid = truth["tid"]
    for rnd in truth["rounds"]:
        lo, hi = rnd["t_start_ns"], rnd["t_end_ns"]
        adds = of(lines, "add", tid, "____fput", lo, hi)
        cbs = of(lines, "callback", tid, "____fput", lo, hi)
        assert len(adds) == 8 and {c["work"] for c in cbs} == {a["work"] for a in adds}
        assert len(cbs) == 8 and all(c["timing"] == "exact" for c in cbs)
    s = lines[-1]
    assert s["lost_events"] == 0 and s["adds"] == len(of(lines, "add"))
    assert s["callbacks"] == len(of(lines, "callback"))



# Workloads that each need one recording of their own kind of task_work, run
# one after another under a single `record --events --stacks`: each workload
# knows its own threads and windows, and the tests below look only at those.
# (One start-up instead of six: compiling and attaching is most of a test's
# time in an emulated guest.)
SCENARIOS = {
    "cross": ["keyctl_parent", "--delay-ms", "300"],
    "slow": ["slow_fput", "--mb", "64", "--small", "5"],
    "uring": ["uring_timeout", "--count", "5", "--ms", "20"],
    "cancel": ["keyctl_parent", "--delay-ms", "50", "--calls", "3"],
    "timer": ["cpu_timer", "--ms", "400", "--interval-ms", "20"],
    # (enough close_range items that their stack ranks among ____fput's top
    # five next to every workload's interpreter start-up and exit closes)
    "stacks": ["close_batch", "--files", "32", "--rounds", "4"],
}


@pytest.fixture(scope="module")
def scenarios(vm_session, tmp_path_factory):
    vm = vm_session.get()
    tmp = tmp_path_factory.mktemp("scenarios")
    out = tmp / "all.jsonl"
    script = " && ".join(f"python3 examples/{w[0]}.py {' '.join(w[1:])} > {tmp}/{name}.truth"
                         for name, w in SCENARIOS.items())
    vm.run(["twtrace", "record", "--events", "--stacks", "-o", str(out), "--", "sh", "-c", script],
           timeout=600).check()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    for line in lines:
        validate_line(line)
    truths = {name: json.loads((tmp / f"{name}.truth").read_text().strip().splitlines()[-1])
              for name in SCENARIOS}
    return lines, truths


def test_cross_task_add_waits_for_the_blocked_parent(scenarios):
    lines, truth = scenarios[0], scenarios[1]["cross"]
    assert truth["session_changed"]
    parent, child = truth["tid"], truth["adder_tid"]
    adds = of(lines, "add", parent, "key_change_session_keyring")
    assert len(adds) == 1
    a = adds[0]
    assert a["adder_tid"] == child and a["adder_pid"] == child and a["ok"]
    assert truth["t_add_start_ns"] <= a["ts_ns"] <= truth["t_add_end_ns"]
    cbs = of(lines, "callback", parent, "key_change_session_keyring")
    assert len(cbs) == 1 and cbs[0]["work"] == a["work"]
    assert cbs[0]["queue_ns"] >= truth["min_latency_ns"]
    assert truth["t_child_done_ns"] <= cbs[0]["ts_ns"] <= truth["t_parent_wake_ns"]
    func = [f for f in final(lines, "func") if f["func"] == "key_change_session_keyring"][0]
    assert any(p["adder_pid"] == child and p["tid"] == parent for p in func["adders"])


def test_long_running_callback(scenarios):
    lines, truth = scenarios[0], scenarios[1]["slow"]
    tid, big = truth["tid"], truth["big"]
    cbs = of(lines, "callback", tid, "____fput", big["t_start_ns"], big["t_end_ns"])
    assert len(cbs) == 1
    # the whole callback ran inside the close, on return from it
    assert cbs[0]["ts_ns"] + cbs[0]["run_ns"] <= big["t_end_ns"]
    small = [of(lines, "callback", tid, "____fput", s["t_start_ns"], s["t_end_ns"])
             for s in truth["small"]]
    assert all(len(s) == 1 for s in small)
    assert cbs[0]["run_ns"] > 10 * max(s[0]["run_ns"] for s in small)


def test_io_uring_items_use_signal_notify(scenarios):
    """The timeout's hrtimer queues the item from an interrupt.  With kprobes
    the kernel runs no BPF program for an interrupt that lands while its CPU
    is inside a BPF map syscall (any process's, twtrace's own reads
    included): that add is not seen, its callback shows unmatched, and the
    kernel counts the skipped run where it keeps count (6.7+)."""
    lines, truth = scenarios[0], scenarios[1]["uring"]
    tid, its = truth["tid"], truth["iterations"]
    missed = 0
    for it in its:
        adds = of(lines, "add", tid, "tctx_task_work", it["t_start_ns"], it["t_end_ns"])
        cbs = of(lines, "callback", tid, "tctx_task_work", it["t_start_ns"], it["t_end_ns"])
        assert len(cbs) == 1
        if not adds and lines[0]["probe_mode"] == "kprobe" and not cbs[0]["matched"]:
            missed += 1
            continue
        assert len(adds) == 1 and adds[0]["notify"] == "signal"
        assert cbs[0]["work"] == adds[0]["work"] and cbs[0]["matched"]
    summary = lines[-1]
    skipped = summary["skipped_runs"]
    assert missed <= (summary["unmatched"] if skipped is None else skipped)
    assert missed < len(its) / 2, "most of the hrtimer's adds were not seen"


def test_sigint_mid_record_leaves_a_complete_file(vm, tmp_path):
    out, err = tmp_path / "int.jsonl", tmp_path / "int.err"
    script = (f"twtrace record --events -o {out} 2>{err} & rec=$!; "
              f"while ! grep -q 'tracing task_work' {err}; do sleep 0.2; done; "
              f"python3 examples/close_batch.py --files 4 --rounds 2 >/dev/null; "
              f"kill -INT $rec; wait $rec")
    r = vm.run(["sh", "-c", script], timeout=300)
    assert r.rc == 0, err.read_text()
    rec = read_record(out, strict=True)
    assert rec.summary["interrupted"] is True and rec.summary["complete"]
    assert rec.summary["adds"] >= 8
    assert not (tmp_path / "int.jsonl.partial").exists()


def test_cancelled_items_leave_the_queue(scenarios):
    """Each KEYCTL_SESSION_TO_PARENT after the first cancels the pending item."""
    lines, truth = scenarios[0], scenarios[1]["cancel"]
    parent = truth["tid"]
    adds = of(lines, "add", parent, "key_change_session_keyring")
    cancels = of(lines, "cancel", parent, "key_change_session_keyring")
    cbs = of(lines, "callback", parent, "key_change_session_keyring")
    assert len(adds) == 3 and all(a["ok"] for a in adds)
    assert [c["work"] for c in cancels] == [a["work"] for a in adds[:2]]
    assert [c["work"] for c in cbs] == [adds[2]["work"]]
    for c, a in zip(cancels, adds):
        assert truth["t_add_start_ns"] <= a["ts_ns"] <= c["ts_ns"] <= truth["t_add_end_ns"]
    (task,) = [t for t in final(lines, "task") if t["tid"] == parent]
    assert task["cancels"] == 2 and task["depth"] == 0
    # the function's totals: this workload's 3 adds, 2 cancels, 1 callback and
    # the cross-task workload's single add and callback
    (func,) = [f for f in final(lines, "func") if f["func"] == "key_change_session_keyring"]
    assert (func["adds"], func["cancels"], func["callbacks"]) == (4, 2, 2)
    assert lines[0]["features"]["cancel"]  # the variants found are recorded


def test_posix_cpu_timer_expiries_run_as_task_work(scenarios):
    lines, truth = scenarios[0], scenarios[1]["timer"]
    tid, lo, hi = truth["tid"], truth["t_start_ns"], truth["t_end_ns"]
    assert truth["signals"] >= 3
    adds = of(lines, "add", tid, "posix_cpu_timers_work", lo, hi)
    cbs = sorted(of(lines, "callback", tid, "posix_cpu_timers_work", lo, hi),
                 key=lambda c: c["ts_ns"])
    assert all(a["adder_tid"] == tid and a["notify"] == "resume" for a in adds)
    assert len(cbs) >= truth["signals"]
    # every signal the workload caught was sent by a callback that started before it
    prev = lo
    for stamp in truth["signal_times_ns"]:
        assert any(prev <= c["ts_ns"] <= stamp for c in cbs), stamp
        prev = stamp


def test_late_probed_callbacks_settle_at_batch_level(vm, tmp_path):
    """A callback function seen for the first time is probed only then: its
    first items run untimed and are settled at batch level, so counts and
    depth still balance exactly."""
    out = tmp_path / "late.jsonl"
    # (and task_struct's layout from the kernel headers rather than BTF: the
    # fallback for kernels without BTF gets its run on every cell)
    r = vm.run(["env", "TWTRACE_LATE_PROBES=1", "TWTRACE_TASK_OFFSETS=headers", "twtrace", "record",
                "--events", "-o", str(out), "--", "python3", "examples/close_batch.py",
                "--files", str(K), "--rounds", "6", "--gap-ms", "300"], timeout=600).check()
    truth = json.loads(r.stdout.strip().splitlines()[-1])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    for line in lines:
        validate_line(line)
    assert lines[0]["features"]["task_offsets"].startswith("headers"), lines[0]["features"]
    tid = truth["tid"]
    adds = of(lines, "add", tid, "____fput")
    cbs = of(lines, "callback", tid, "____fput")
    assert {c["work"] for c in cbs} == {a["work"] for a in adds}
    timing = {c["timing"] for c in cbs}
    assert timing == {"batch", "exact"}  # first untimed, later probed
    # no made-up point latency: the interval that was observed
    for c in cbs:
        if c["timing"] == "batch":
            lo, hi = c["queue_ns_bounds"]
            assert c["run_ns"] is None and c["queue_ns"] is None and 0 <= lo <= hi, c
    (task,) = [t for t in final(lines, "task") if t["tid"] == tid]
    assert task["depth"] == 0 and task["adds"] == len(of(lines, "add", tid))
    assert task["callbacks"] - task["unmatched"] == task["adds"]
    # every item of the workload was seen queued: an unmatched callback can only
    # be an interrupt's add the kernel skipped and counted (6.12's tick queueing
    # task_mm_cid_work inside twtrace's add program), never a close; and the
    # maximum depth counts only items that had not run: a round's K at once
    assert not [c for c in cbs if not c["matched"]]
    assert task["unmatched"] <= lines[-1]["unmatched"] <= (lines[-1]["skipped_runs"] or 0)
    other = len([a for a in of(lines, "add", tid) if a["func"] != "____fput"])
    assert K <= task["max_depth"] <= K + other


def test_stacks_name_the_code_path_that_queued(scenarios):
    lines, truth = scenarios[0], scenarios[1]["stacks"]
    tid = truth["tid"]
    rnd = truth["rounds"][0]
    adds = of(lines, "add", tid, "____fput", rnd["t_start_ns"], rnd["t_end_ns"])
    assert len(adds) == 32
    for a in adds:  # queued by close_range(2)'s final fput of each file
        assert a["stack"][0] == "task_work_add", a["stack"]
        assert any("close_range" in f for f in a["stack"]), a["stack"]
        # arm64 compiles fput's call as a tail call: its caller stands in its frame
        assert any("fput" in f or "filp_close" in f for f in a["stack"]), a["stack"]
    (func,) = [f for f in final(lines, "func") if f["func"] == "____fput"]
    assert sum(s["adds"] for s in func["stacks"]) <= func["adds"]
    assert any(s["stack"] and any("close_range" in f for f in s["stack"]) and s["adds"] >= 4 * 32
               for s in func["stacks"]), func["stacks"]


FORKER = """
import json, os, time
kids = []
for _ in range({n}):
    pid = os.fork()
    if pid == 0:
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range({k})]
        os.closerange(fds[0], fds[-1] + 1)  # each a final fput: {k} items on this child
        os._exit(0)
    os.waitpid(pid, 0)
    kids.append(pid)
    time.sleep(0.5)
time.sleep(3)  # the last children are let go too, a few intervals later
print(json.dumps({{"children": kids}}))
"""


def test_interval_recording_lets_exited_tasks_go_after_one_listing(vm, tmp_path):
    """record --interval: each exited child is listed once after its exit,
    then only the function totals hold it; its latest line is exact."""
    n, k = 10, 5
    out = tmp_path / "interval.jsonl"
    r = vm.run(["twtrace", "record", "--events", "--interval", "1", "-o", str(out), "--",
                "python3", "-c", FORKER.format(n=n, k=k)], timeout=600).check()
    kids = json.loads(r.stdout.strip().splitlines()[-1])["children"]
    rec = read_record(out, strict=True)
    snaps = rec.snapshots
    assert len(snaps) >= 3 and snaps[-1].final
    latest = {t["tid"]: t for t in rec.task_totals() if t["tid"] in kids}
    assert sorted(latest) == sorted(kids)
    for tid, t in latest.items():
        fputs = [e for e in rec.events if e["type"] == "add" and e["tid"] == tid
                 and e["func"] == "____fput"]
        assert len(fputs) == k and t["exited"], t
        assert t["adds"] == len([e for e in rec.events if e["type"] == "add" and e["tid"] == tid])
    # let go: listed once or twice around its exit, not in every snapshot, and
    # not in the final one (all but the last few exited seconds before it)
    times = {tid: sum(1 for s in snaps for t in s.tasks if t["tid"] == tid) for tid in kids}
    assert max(times.values()) <= 3 and len(snaps) >= 8, (times, len(snaps))
    assert not [t for t in snaps[-1].tasks if t["tid"] in kids[:-3]]
    assert rec.summary["tasks"] >= n + 1
    (fput,) = [f for f in snaps[-1].funcs if f["func"] == "____fput"]
    assert fput["adds"] >= n * k
