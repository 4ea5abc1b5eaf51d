"""Live `twtrace top` in a real kernel: what it shows for a workload whose
counts the workload itself knows."""
import json

K, ROUNDS = 24, 4


def test_live_top_json_shows_the_workload(vm, tmp_path):
    out, err = tmp_path / "top.jsonl", tmp_path / "top.err"
    script = (
        f"twtrace top 1 40 --json --comm '^python' > {out} 2> {err} & top=$!; "
        f"while ! [ -s {out} ]; do sleep 0.2; done; "  # attached: the first interval is out
        f"python3 examples/close_batch.py --files {K} --rounds {ROUNDS} --gap-ms 200 "
        f"> {tmp_path}/truth; sleep 2.5; kill -INT $top; wait $top")
    r = vm.run(["sh", "-c", script], timeout=600)
    assert r.rc == 0, err.read_text()
    truth = json.loads((tmp_path / "truth").read_text().strip().splitlines()[-1])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    groups = [i for i, x in enumerate(lines) if x["type"] == "snapshot"]
    assert len(groups) >= 3
    # top shows an exited task for one more interval, then folds it into the
    # per-callback totals: its last line is the one after it exited
    seen = [i for i, x in enumerate(lines) if x["type"] == "task" and x["tid"] == truth["tid"]]
    task = lines[seen[-1]]
    assert task["exited"] is True
    assert all(x["tid"] != truth["tid"] for x in lines[seen[-1] + 1:] if x["type"] == "task")
    last = lines[max(g for g in groups if g < seen[-1]):]
    # every close_range batch of K files queued K items at once, all run; other
    # work queued on the thread (6.12's tick queues task_mm_cid_work) can add to it
    other = sum(a["adds"] for f in last if f["type"] == "func" and f["func"] != "____fput"
                for a in f["adders"] if a["tid"] == truth["tid"])
    assert K <= task["max_depth"] <= K + other and task["depth"] == 0
    # every add seen ran; a callback without its add is one the kernel skipped
    # and counted (an interrupt's add inside twtrace's own program)
    snap = lines[groups[-1]]
    assert task["adds"] >= K * ROUNDS and task["callbacks"] - task["unmatched"] == task["adds"]
    assert task["unmatched"] <= (snap["skipped_runs"] or 0), snap
    assert task["comm"].startswith("python")
    # per-interval rates add up to the cumulative count
    per_interval = [x for x in lines if x["type"] == "task" and x["tid"] == truth["tid"]]
    total = sum(round(x["adds_per_s"] * x["interval_ns"] / 1e9) for x in per_interval)
    first_adds = per_interval[0]["adds"] - round(per_interval[0]["adds_per_s"]
                                                 * per_interval[0]["interval_ns"] / 1e9)
    assert total + first_adds == task["adds"]
    assert snap["lost_events"] == 0 and snap["evicted"] == 0
    # top's own closes (it reads its programs' fdinfo every interval) queue
    # ____fput on it: counted apart from the view
    assert snap["self_adds"] > 0 and snap["self_adds_per_s"] is not None, snap

    # twtrace's own cost is measured: BPF run time from the kernel's statistics
    assert any(lines[i].get("bpf_pct") is not None for i in groups)
    assert not [x for x in lines if x["type"] == "task" and not x["comm"].startswith("python")]
