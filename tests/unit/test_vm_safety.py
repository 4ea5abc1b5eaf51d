"""twtrace vm's host and guest pieces that need no guest: terminal size
messages, the guest's tty resize, why a command was killed, and the
precompile's working directory."""
import json
import os
import signal
import socket
import termios

from twtrace.vm import machine
from twtrace.vm.guest import agent


def test_resize_channel_sends_the_size_now_and_on_sigwinch(tmp_path):
    ctl = machine._ResizeChannel(tmp_path / "ctl.sock")

    class FakeQemu:  # connects as QEMU's chardev does when it starts
        def poll(self):
            return None

    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(tmp_path / "ctl.sock"))
    try:
        ctl.serve(FakeQemu())
        first = json.loads(client.recv(4096).decode().splitlines()[0])
        assert first["rows"] > 0 and first["cols"] > 0
        os.kill(os.getpid(), signal.SIGWINCH)
        again = json.loads(client.recv(4096).decode().splitlines()[0])
        assert again == first
    finally:
        ctl.close()
        client.close()
    assert signal.getsignal(signal.SIGWINCH) in (signal.SIG_DFL, None, ctl.old)


def test_guest_sets_the_tty_size():
    master, slave = os.openpty()
    try:
        agent.set_winsize(os.ttyname(slave), 12, 40)
        assert os.get_terminal_size(slave) == os.terminal_size((40, 12))
        agent.set_winsize(os.ttyname(slave), 50, 200)
        assert os.get_terminal_size(slave) == os.terminal_size((200, 50))
    finally:
        os.close(master)
        os.close(slave)


def test_why_killed():
    r = machine.Result(-9, "", "", 1.0, timed_out=True)
    assert "time limit" in r.why_killed()
    r = machine.Result(-9, "", "", 1.0, oom_killed=True)
    assert "OOM" in r.why_killed()
    assert machine.Result(0, "", "", 1.0).why_killed() == ""


def test_oom_detection_needs_sigkill_and_a_new_oom_kill(monkeypatch):
    monkeypatch.setattr(agent, "oom_kills", lambda: 5)
    assert agent.was_oom_killed(4, -signal.SIGKILL)
    assert not agent.was_oom_killed(5, -signal.SIGKILL)  # no OOM kill meanwhile
    assert not agent.was_oom_killed(4, 1)  # exited on its own
    assert not agent.was_oom_killed(None, -signal.SIGKILL)  # kernel before 4.13


def test_precompile_runs_in_root_not_the_callers_cwd(monkeypatch, tmp_path):
    from twtrace.vm import builder, cells

    calls = []

    class FakeMachine:
        def __init__(self, *a, **kw):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def run(self, argv, timeout=0, cwd=None, **kw):
            calls.append(cwd)
            return machine.Result(0, "", "", 0.0)

    monkeypatch.setattr(machine, "Machine", FakeMachine)
    monkeypatch.chdir(tmp_path)  # a directory the guest does not share
    builder._precompile(next(iter(cells.CELLS.values())), None)
    assert calls == ["/"]
