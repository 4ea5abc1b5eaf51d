"""`twtrace vm` on the host: a signal stops the guest, no QEMU is left."""
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.timeout(420, method="signal")  # each: one boot, one signal


def qemu_children(pid):
    """QEMU processes whose parent is pid."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{p}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if int(fields[1]) == pid and comm.startswith("qemu-system"):
            out.append(int(p))
    return out


def gone(pid):
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        return True


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_signal_stops_the_guest(cell, guest, tmp_path, signo):
    ready = tmp_path / "ready"
    p = subprocess.Popen([sys.executable, "-m", "twtrace", "vm", "--kernel", cell.kernel,
                          "--arch", cell.arch, "--", "sh", "-c", f"touch {ready}; sleep 600"],
                         cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not ready.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ready.exists(), p.stderr.read().decode()[-2000:] if p.poll() is not None else "boot"
    (qemu,) = qemu_children(p.pid)
    p.send_signal(signo)
    p.wait(timeout=60)
    deadline = time.monotonic() + 30
    while not gone(qemu) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gone(qemu), f"QEMU {qemu} outlived twtrace vm after signal {signo}"
    if signo != signal.SIGKILL:
        assert p.returncode == 128 + signo
        assert b"Traceback" not in p.stderr.read()
