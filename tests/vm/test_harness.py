"""The VM harness itself, and a first end-to-end trace through it."""
import json
import sys
from pathlib import Path

import pytest

from twtrace.vm.machine import Machine, VMError

HERE = Path(__file__).resolve().parent


def test_guest_runs_its_own_kernel_and_userspace(vm, cell):
    r = vm.run(["uname", "-rm"]).check()
    release, machine = r.stdout.split()
    assert release == vm.guest.kernel_release
    assert machine == cell.arch_info.uname
    r = vm.run(["python3", "-c", "import bcc, sys; print(bcc.__version__)"]).check()
    assert r.stdout.strip() == vm.guest.info["bcc"]


def test_guest_clock_is_fine_grained(vm):
    """Every timing assertion needs a clock finer than the 4 ms timer tick:
    a guest whose TSC calibration failed must fail here, not in timing tests."""
    r = vm.run(["sh", "-c", "cat /sys/devices/system/clocksource/clocksource0/current_clocksource; "
                "python3 -c 'import time; a=time.monotonic_ns(); b=time.monotonic_ns(); print(b-a)'"]
               ).check()
    source, step = r.stdout.split()
    assert source not in ("jiffies", "refined-jiffies"), source
    assert 0 < int(step) < 1_000_000


def test_exit_status_output_and_files_cross_over(vm, tmp_path):
    r = vm.run(f"echo out; echo err >&2; echo from-guest > {tmp_path}/f; exit 7")
    assert (r.rc, r.stdout, r.stderr) == (7, "out\n", "err\n")
    assert (tmp_path / "f").read_text() == "from-guest\n"
    (tmp_path / "g").write_text("from-host")
    assert vm.run(["cat", str(tmp_path / "g")]).check().stdout == "from-host"


def test_command_that_hangs_is_killed_at_its_timeout(vm):
    r = vm.run(["sleep", "600"], timeout=2)
    assert r.timed_out and r.rc != 0
    assert vm.run(["true"]).rc == 0  # the guest is still usable


def test_panic_fails_fast_and_shows_the_console(cell, guest):
    with Machine(cell, guest=guest) as m:
        with pytest.raises(VMError) as err:
            m.run("echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger; sleep 60",
                  timeout=60)
    assert "Kernel panic" in str(err.value) or "sysrq" in str(err.value).lower()


def test_kprobes_count_close_range_exactly(vm):
    """The BPF program from bpf/ with kprobes on task_work_add/run sees exactly
    the K files each close_range(2) closes, on the workload's own thread."""
    k, rounds = 12, 4
    r = vm.run([sys.executable if False else "python3", str(HERE / "guest/trace_workload.py"),
                "kprobe", "examples/close_batch.py", "--files", str(k), "--rounds", str(rounds)],
               timeout=300).check()
    got = json.loads(r.stdout)
    assert got["probe_mode"] == "kprobe" and got["rc"] == 0
    truth = got["truth"]
    tid = truth["tid"]
    for rnd in truth["rounds"]:
        lo, hi = rnd["t_start_ns"], rnd["t_end_ns"]
        inside = [e for e in got["events"] if lo <= e["ts"] <= hi and e["tid"] == tid]
        adds = [e for e in inside if e["kind"] == "add" and e["func_name"] == "____fput"]
        cbs = [e for e in inside if e["kind"] == "callback" and e["func_name"] == "____fput"]
        assert len(adds) == k, rnd
        assert all(e["adder_tid"] == tid and e["ret"] == 0 and e["notify"] == 1 for e in adds)
        assert len(cbs) == k, rnd
        # every callback ran an item added in this window, after its add
        assert {e["work"] for e in cbs} == {e["work"] for e in adds}
        for e in cbs:
            assert e["flags"] & 1 and lo <= e["ts"] - e["queue_ns"] and e["ts"] + e["dur_ns"] <= hi
    agg = [a for a in got["aggs"] if a["func"] == "____fput"][0]
    assert agg["adds"] >= k * rounds and agg["callbacks"] == agg["adds"]
    assert got["task"]["max_depth"] >= k and got["task"]["depth"] == 0
    assert got["stats"]["lost"] == 0
