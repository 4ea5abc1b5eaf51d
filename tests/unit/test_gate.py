"""record -- CMD: the command inherits no descriptor of twtrace's."""
import os
import subprocess
import sys

from twtrace import gate

FIRST_FREE = "import os; print(os.open('/dev/null', os.O_RDONLY))"


def test_command_first_free_fd_is_3():
    # Inheritable descriptors like the ones bcc's C side leaves open.
    extra = [os.open("/dev/null", os.O_RDONLY) for _ in range(20)]
    for fd in extra:
        os.set_inheritable(fd, True)
    try:
        proc, w = gate.start([sys.executable, "-c", FIRST_FREE], stdout=subprocess.PIPE)
        os.write(w, b"go\n")
        os.close(w)
        out, _ = proc.communicate(timeout=30)
    finally:
        for fd in extra:
            os.close(fd)
    assert proc.returncode == 0
    assert out.decode().strip() == "3"


def test_command_waits_for_the_gate():
    proc, w = gate.start([sys.executable, "-c", "print('ran')"], stdout=subprocess.PIPE)
    try:
        proc.wait(timeout=0.5)
        raise AssertionError("the command ran before the gate opened")
    except subprocess.TimeoutExpired:
        pass
    os.write(w, b"go\n")
    os.close(w)
    out, _ = proc.communicate(timeout=30)
    assert out == b"ran\n"


def test_command_that_is_missing_gives_127():
    proc, w = gate.start(["/nonexistent/cmd"], stdout=subprocess.DEVNULL)
    os.write(w, b"go\n")
    os.close(w)
    assert proc.wait(timeout=30) == 127
