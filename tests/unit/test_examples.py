"""Fast checks of the ground-truth workloads in examples/.

Each workload runs for real (the syscalls work without tracing) with small
parameters; the tests check the JSON shape and sanity: windows ordered, counts
right, the kernel effect visible to user space.  A workload that exits 3
(io_uring / keyctl / close_range refused, e.g. by a container's seccomp
profile) is skipped, not failed.
"""

import ctypes
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples")
EXAMPLES = os.path.normpath(EXAMPLES)
sys.path.insert(0, EXAMPLES)

import _uring  # noqa: E402
import _wl  # noqa: E402

BASE_FIELDS = {"workload", "pid", "tid", "comm", "machine", "kernel", "python",
               "clock", "t_begin_ns", "t_finish_ns"}


def script(name):
    return os.path.join(EXAMPLES, name + ".py")


def run_wl(name, *args, timeout=20, cwd=None):
    """Run a workload; return (parsed JSON, completed process)."""
    proc = subprocess.run([sys.executable, script(name)] + [str(a) for a in args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout, cwd=cwd)
    if proc.returncode == _wl.EXIT_UNSUPPORTED:
        pytest.skip("%s unsupported here: %s" % (name, proc.stderr.strip()))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    data = json.loads(lines[-1])
    check_base(data, name)
    return data, proc


def check_base(d, name):
    assert BASE_FIELDS <= set(d), BASE_FIELDS - set(d)
    assert d["workload"] == name
    assert d["clock"] == "CLOCK_MONOTONIC"
    assert d["tid"] == d["pid"] > 0
    assert d["t_begin_ns"] <= d["t_finish_ns"]


def check_window(w, outer):
    assert outer["t_begin_ns"] <= w["t_start_ns"] <= w["t_end_ns"] <= outer["t_finish_ns"]


def check_sequential(windows):
    for a, b in zip(windows, windows[1:]):
        assert a["t_end_ns"] <= b["t_start_ns"]


# --------------------------------------------------------------- helpers

def test_syscall_tables_cover_both_machines():
    assert set(_wl.SYSCALLS) == {"x86_64", "aarch64"}
    assert set(_wl.SYSCALLS["x86_64"]) == set(_wl.SYSCALLS["aarch64"])
    for m in _wl.SYSCALLS.values():
        assert m["close_range"] == 436
        assert (m["io_uring_setup"], m["io_uring_enter"]) == (425, 426)
    assert _wl.SYSCALLS["x86_64"]["keyctl"] == 250
    assert _wl.SYSCALLS["aarch64"]["keyctl"] == 219
    assert _wl.SYSCALLS["x86_64"]["memfd_create"] == 319
    assert _wl.SYSCALLS["aarch64"]["memfd_create"] == 279


def test_uring_struct_layouts():
    assert ctypes.sizeof(_uring.Params) == 120
    assert _uring.Params.sq_off.offset == 40 and _uring.Params.cq_off.offset == 80
    assert ctypes.sizeof(_uring.Sqe) == 64 and ctypes.sizeof(_uring.Cqe) == 16
    assert _uring.Sqe.user_data.offset == 32 and _uring.Sqe.op_flags.offset == 28


def test_open_contiguous_skips_holes():
    # make a hole pattern: open 6, close every other one
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(6)]
    for fd in fds[::2]:
        os.close(fd)
    try:
        got = _wl.open_contiguous(5, "devnull")
        try:
            assert got == list(range(got[0], got[0] + 5))
        finally:
            _wl.close_fds(got)
    finally:
        _wl.close_fds(fds[1::2])


def test_uring_refused_maps_to_exit_3(monkeypatch):
    def refuse(name, *args):
        raise OSError(errno.EPERM, "refused")
    monkeypatch.setattr(_wl, "syscall", refuse)
    with pytest.raises(_wl.Unsupported) as ei:
        _uring.Ring()
    assert ei.value.code == _wl.EXIT_UNSUPPORTED


@pytest.mark.parametrize("name,err", [("uring_timeout", errno.EPERM),
                                      ("keyctl_parent", errno.ENOSYS),
                                      ("close_batch", errno.ENOSYS)])
def test_refused_syscall_exits_3(name, err):
    # every raw syscall fails as a seccomp filter or an old kernel would make it
    code = ("import errno, runpy, sys\n"
            "sys.path.insert(0, %r)\n"
            "import _wl\n"
            "def refuse(name, *args):\n"
            "    raise OSError(%d, name + ': refused')\n"
            "_wl.syscall = refuse\n"
            "sys.argv = [%r]\n"
            "runpy.run_path(%r, run_name='__main__')\n"
            % (EXAMPLES, err, name + ".py", script(name)))
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=20)
    assert proc.returncode == _wl.EXIT_UNSUPPORTED, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(name + ": ")


def test_run_wrapper_prints_one_line(capsys):
    def boom():
        raise _wl.WorkloadError("it broke\u2026 badly")
    with pytest.raises(SystemExit) as ei:
        _wl.run("x", boom)
    assert ei.value.code == _wl.EXIT_FAIL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("x: it broke")


# ------------------------------------------------------------- workloads

@pytest.mark.parametrize("source", ["auto", "memfd"])
def test_close_batch(tmp_path, source):
    d, _ = run_wl("close_batch", "--files", 5, "--rounds", 3, "--source", source,
                  cwd=str(tmp_path))
    assert d["files"] == 5 and len(d["rounds"]) == 3
    assert d["source"] in ("devnull", "memfd")
    e = d["expect"]
    assert (e["callback"], e["notify"], e["notify_name"]) == ("____fput", 1, "TWA_RESUME")
    assert e["adds_per_round"] == e["runs_per_round"] == e["max_depth"] == 5
    for i, r in enumerate(d["rounds"]):
        assert r["round"] == i and r["files"] == 5
        assert r["last_fd"] - r["first_fd"] + 1 == 5
        check_window(r, d)
    check_sequential(d["rounds"])


def test_close_batch_out_file(tmp_path):
    out = tmp_path / "gt.json"
    proc = subprocess.run([sys.executable, script("close_batch"), "--files", "2",
                           "--rounds", "1", "--out", str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=20)
    if proc.returncode == _wl.EXIT_UNSUPPORTED:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    d = json.loads(out.read_text())
    check_base(d, "close_batch")
    assert len(d["rounds"]) == 1


def test_bad_arguments_exit_2():
    proc = subprocess.run([sys.executable, script("close_batch"), "--files", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=20)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--files" in proc.stderr


def test_keyctl_parent():
    d, _ = run_wl("keyctl_parent", "--delay-ms", 50)
    assert d["keyctl_rc"] == 0
    assert d["session_changed"] is True and d["session_matches_child"] is True
    assert d["session_after"] == d["child_session"] != d["session_before"]
    assert d["target_pid"] == d["target_tid"] == d["pid"]
    assert d["adder_pid"] == d["adder_tid"] != d["target_tid"]
    assert d["parent_state_at_add"] in ("S", "D")
    assert d["delay_ms"] == 50 and d["min_latency_ns"] == 50 * 10**6
    assert (d["t_begin_ns"] <= d["t_wait_start_ns"] <= d["t_add_start_ns"]
            <= d["t_add_end_ns"] <= d["t_child_done_ns"] <= d["t_parent_wake_ns"]
            <= d["t_finish_ns"])
    assert d["t_parent_wake_ns"] - d["t_add_end_ns"] >= d["min_latency_ns"]
    assert d["child_exit_status"] == 0
    e = d["expect"]
    assert (e["callback"], e["notify"], e["target"]) == ("key_change_session_keyring", 1, "parent")


def test_keyctl_parent_repeated_calls_expect_cancels():
    d, _ = run_wl("keyctl_parent", "--delay-ms", 10, "--calls", 3)
    assert d["keyctl_rc"] == 0 and d["calls"] == 3 and d["session_changed"] is True
    e = d["expect"]
    assert (e["adds"], e["cancels"], e["runs"]) == (3, 2, 1)


@pytest.mark.parametrize("backing", ["auto", "memfd"])
def test_slow_fput(backing):
    d, _ = run_wl("slow_fput", "--mb", 16, "--small", 3, "--backing", backing)
    assert len(d["small"]) == 3
    for w in d["small"]:
        check_window(w, d)
    check_sequential(d["small"] + [d["big"]])
    big = d["big"]
    check_window(big, d)
    assert big["mb"] == 16 and big["size_bytes"] == 16 << 20
    assert big["backing"] in ("shm", "memfd")
    if backing == "memfd":
        assert big["backing"] == "memfd"
    assert d["big_window_ns"] == big["t_end_ns"] - big["t_start_ns"]
    # freeing 16 MiB of page cache takes far longer than closing /dev/null
    assert d["big_window_ns"] > d["small_window_median_ns"]
    assert d["expect"]["callback"] == "____fput"


@pytest.mark.parametrize("op,want", [("timeout", -62), ("poll", 1)])
def test_uring(op, want):
    d, _ = run_wl("uring_timeout", "--op", op, "--count", 3, "--ms", 10)
    assert d["op"] == op and d["expected_res"] == want and d["setup_flags"] == 0
    e = d["expect"]
    assert (e["callback"], e["notify"], e["notify_name"]) == ("tctx_task_work", 2, "TWA_SIGNAL")
    its = d["iterations"]
    assert [it["i"] for it in its] == [0, 1, 2]
    assert len({it["user_data"] for it in its}) == 3
    for it in its:
        assert it["res"] == want
        check_window(it, d)
        # neither a timeout nor the delayed write completes early
        assert it["t_end_ns"] - it["t_start_ns"] >= 10 * 10**6
        if op == "poll":
            assert it["writer_tid"] != d["tid"]
            assert it["t_start_ns"] <= it["t_write_start_ns"] <= it["t_end_ns"]
            assert it["t_write_start_ns"] <= it["t_write_end_ns"]
    check_sequential(its)


def test_cpu_timer():
    d, _ = run_wl("cpu_timer", "--ms", 150)
    assert d["t_end_ns"] - d["t_start_ns"] >= 150 * 10**6
    check_window(d, d)
    assert d["signals"] >= 1 and d["signals"] == len(d["signal_times_ns"])
    assert d["signal_times_ns"] == sorted(d["signal_times_ns"])
    assert all(d["t_start_ns"] <= t <= d["t_end_ns"] for t in d["signal_times_ns"])
    # 150 ms of spinning cannot earn more than ~15 expiries of 10 ms CPU time
    assert d["signals"] <= 20
    e = d["expect"]
    assert (e["callback"], e["notify"], e["min_runs"]) == ("posix_cpu_timers_work", 1, d["signals"])


def test_demo_runs_for_its_time():
    d, _ = run_wl("demo", "--seconds", 0.5, "--interval-ms", 10, "--slow-mb", 4)
    assert d["stopped_by"] == "time"
    assert 0.5 <= d["elapsed_s"] < 5
    assert d["steps"] == d["fput_batches"] > 0
    assert d["steps"] <= d["files_closed"] <= 32 * d["steps"]


def _catches(pid, signo):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signo - 1)))
    except OSError:
        pass
    return False


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_demo_stops_cleanly_on_signal(signo):
    proc = subprocess.Popen([sys.executable, script("demo"), "--seconds", "0",
                             "--interval-ms", "10", "--slow-mb", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    try:
        deadline = time.monotonic() + 10
        while not _catches(proc.pid, signo):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "demo never installed its handler"
            time.sleep(0.01)
        time.sleep(0.2)
        proc.send_signal(signo)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    d = json.loads(out.splitlines()[-1])
    check_base(d, "demo")
    assert d["stopped_by"] == signal.Signals(signo).name


def test_stress_threads_each_close_their_own_files():
    d, _ = run_wl("stress", "--threads", 4, "--files", 6, "--rounds", 3, "--no-helpers")
    assert len(d["threads"]) == 4 and len({t["tid"] for t in d["threads"]}) == 4
    assert all(t["adds"] == 18 and t["t_start_ns"] <= t["t_end_ns"] for t in d["threads"])
