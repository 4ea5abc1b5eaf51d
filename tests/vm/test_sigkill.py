"""SIGKILL of `record` and `top` mid-trace leaves the kernel as it was:
kprobe_events, BPF programs, maps, links and pins all back to before.

Everything fd-owned (BPF programs, maps, links, pins, fentry/fexit and
perf-event kprobes) must be gone right after the kill.  Return probes need
room for many threads at once (maxactive), which bcc can only ask for through
the text interface, and those lines outlive a killed process: they must be
exactly the dead run's (named *_bcc_PID), and the next start's tidying
(twtrace/leftovers.py) must bring kprobe_events back to before."""
import json
import time

import pytest

# Each test: a compile (~20 s emulated, 5.10 slower), a kill, a settle; well
# inside a cell's budget, and below the harness's default per-test timeout.
pytestmark = pytest.mark.timeout(600, method="signal")

STATE = ["python3", "tests/vm/guest/kernel_state.py"]
SETTLE_S = 20  # the kernel frees programs and maps after an RCU grace period
COMPILE_TIMEOUT = 400  # compile + attach in an emulated guest: ~20 s, 5.10 slower

WORKLOAD = "python3 examples/close_batch.py --files 8 --rounds 1000 --gap-ms 20 > /dev/null"


def state(vm):
    r = vm.run(STATE, timeout=60).check()
    return json.loads(r.stdout)


FD_OWNED = lambda st: {k: v for k, v in st.items() if k != "kprobe_events"}  # noqa: E731


def settled(vm, before):
    """The state once its fd-owned part equals before's, or the last one
    after SETTLE_S."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        now = state(vm)
        if FD_OWNED(now) == FD_OWNED(before) or time.monotonic() > deadline:
            return now
        time.sleep(1)


def tidied(vm, before, after):
    """Text-interface leftovers are the dead run's alone, and go at the next
    start's tidying."""
    left = [x for x in after["kprobe_events"] if x not in before["kprobe_events"]]
    assert all("_bcc_" in x for x in left), left
    vm.run(["python3", "-c", "from twtrace.leftovers import remove_stale_probes as r; r()"],
           timeout=60).check()
    assert state(vm)["kprobe_events"] == before["kprobe_events"]


def kill_mid_trace(vm, tmp_path, cmd, started):
    """Run cmd in the background next to a workload, wait until `started`
    (a shell test) holds, i.e. it is attached and tracing, let it trace for a
    second, then SIGKILL it; returns what its stderr said."""
    err = tmp_path / "err"
    script = (f"{WORKLOAD} & wl=$!; {cmd} 2> {err} & t=$!; "
              f"n=0; until {started}; do n=$((n+1)); [ $n -gt {COMPILE_TIMEOUT * 5} ] && break; "
              f"kill -0 $t 2>/dev/null || break; sleep 0.2; done; "
              f"sleep 1; kill -KILL $t; wait $t; echo killed=$? ; kill $wl; wait $wl; true")
    r = vm.run(["sh", "-c", script], timeout=COMPILE_TIMEOUT + 120)
    assert "killed=137" in r.stdout, (r.stdout, r.stderr, err.read_text())
    return err.read_text()


def assert_as_before(before, after):
    for key in FD_OWNED(before):
        assert after[key] == before[key], (
            f"{key} changed by a SIGKILLed twtrace: before {before[key]}, after {after[key]}")


def test_sigkill_record_leaves_nothing(vm, tmp_path):
    before = state(vm)
    out = tmp_path / "rec.jsonl"
    err = kill_mid_trace(vm, tmp_path, f"twtrace record --events -o {out}",
                         f"grep -q 'tracing task_work' {tmp_path}/err")
    assert "tracing task_work" in err, err
    after = settled(vm, before)
    assert_as_before(before, after)
    tidied(vm, before, after)
    assert not out.exists()  # never a partial recording under the final name


def test_sigkill_top_leaves_nothing(vm, tmp_path):
    before = state(vm)
    out = tmp_path / "top.out"
    kill_mid_trace(vm, tmp_path, f"twtrace top 1 > {out}", f"[ -s {out} ]")
    assert out.read_text().strip(), "top never showed an interval"
    after = settled(vm, before)
    assert_as_before(before, after)
    tidied(vm, before, after)


def test_leftovers_of_a_killed_run_are_found_and_removed(vm, tmp_path):
    """What a SIGKILLed run leaves in kprobe_events (bcc's text interface;
    nothing once every probe is fd-owned) doctor reports, and start-up's
    tidying (leftovers.remove_stale_probes) removes, back to before."""
    before = state(vm)
    kill_mid_trace(vm, tmp_path, f"twtrace record -o {tmp_path}/r.jsonl",
                   f"grep -q 'tracing task_work' {tmp_path}/err")
    left = [x for x in state(vm)["kprobe_events"] if x not in before["kprobe_events"]]
    doc = json.loads(vm.run(["twtrace", "doctor", "--json"], timeout=300).stdout)
    (check,) = [c for c in doc["checks"] if c["name"] == "leftover probes"]
    assert (check["status"] == "warn") == bool(left), (check, left)
    tidy = vm.run(["python3", "-c", "from twtrace.leftovers import remove_stale_probes as r; "
                   "print(r())"], timeout=60).check()
    assert int(tidy.stdout) == len(left)
    assert state(vm)["kprobe_events"] == before["kprobe_events"]
