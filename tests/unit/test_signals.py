"""twtrace.signals: SIGTERM/SIGINT honoured while start-up is stuck in C."""
import signal
import subprocess
import sys
import time

import pytest

CHILD = r"""
import hashlib, sys, time
from twtrace.signals import Stop
marker, mode = sys.argv[1], sys.argv[2]
stop = Stop(on_abort=lambda: open(marker, "w").write("aborted"))
try:
    print("ready", flush=True)
    if mode == "c":        # a long C call that releases the GIL, like bcc's compile
        hashlib.pbkdf2_hmac("sha256", b"x", b"y", 40_000_000)
    elif mode == "python":
        time.sleep(30)
    else:                  # start-up done: the signal is a flag
        stop.running()
        print("running", flush=True)
        while not stop:
            time.sleep(0.02)
        print("stopped", stop.signal, flush=True)
        sys.exit(0)
    print("returned", flush=True)
finally:
    if mode == "python":
        print("unwound", flush=True)
"""


def start(tmp_path, mode):
    marker = tmp_path / "marker"
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), mode],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    return p, marker


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_stuck_in_c_aborts_at_once(tmp_path, signo):
    p, marker = start(tmp_path, "c")
    time.sleep(0.2)
    t0 = time.monotonic()
    p.send_signal(signo)
    out, err = p.communicate(timeout=20)
    assert time.monotonic() - t0 < 3, "waited for the C call to end"
    assert p.returncode == 128 + signo
    assert marker.read_text() == "aborted"  # the caller's clean-up ran
    assert "returned" not in out and "Traceback" not in err


def test_signal_in_python_unwinds_cleanly(tmp_path):
    p, marker = start(tmp_path, "python")
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 128 + signal.SIGTERM
    assert "unwound" in out and "Traceback" not in err
    assert not marker.exists()  # finally blocks did the work, no hard exit


def test_after_start_up_a_signal_is_a_flag(tmp_path):
    p, _ = start(tmp_path, "flag")
    assert p.stdout.readline() == "running\n"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert out.strip() == f"stopped {int(signal.SIGTERM)}"


EARLY = r"""
import os, signal, sys, time
import twtrace.__main__  # what both entry points run first (run() is not called here)
print("ready", flush=True)
os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # as if it came during an import
time.sleep(10)
print("not reached", flush=True)
"""


@pytest.mark.parametrize("name,signo", [("SIGINT", signal.SIGINT), ("SIGTERM", signal.SIGTERM)])
def test_a_signal_before_any_twtrace_module_loaded_exits_quietly(name, signo):
    p = subprocess.run([sys.executable, "-c", EARLY, name], capture_output=True, text=True,
                       timeout=60)
    assert p.stdout == "ready\n" and p.stderr == "" and p.returncode == 128 + signo


def test_a_swallowed_raise_during_imports_is_acted_on_at_the_next_check():
    """quiet_exit's raise can land in a callback whose exception Python only
    prints (importlib's module-lock callbacks): the signal is not lost."""
    from twtrace import signals

    try:
        try:
            signals.quiet_exit(signal.SIGTERM, None)
        except signals.Interrupted:
            pass  # what "Exception ignored in ..." amounts to
        with pytest.raises(signals.Interrupted) as e:
            signals.Stop()
        assert e.value.code == 143
        with pytest.raises(signals.Interrupted):
            signals.check_pending()
    finally:
        signals._pending.clear()
    signals.check_pending()  # nothing pending: no raise


def test_a_swallowed_raise_during_start_up_ends_it_when_start_up_is_over():
    from twtrace import signals

    stop = signals.Stop()
    try:
        try:
            stop._handle(signal.SIGINT, None)
        except signals.Interrupted:
            pass  # swallowed, as above: start-up went on
        with pytest.raises(signals.Interrupted) as e:
            stop.running()
        assert e.value.code == 130
    finally:
        for s, old in stop._old.items():
            signal.signal(s, old)
