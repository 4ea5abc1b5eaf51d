#!/usr/bin/env python3
"""keyctl_parent: a child queues task_work on its parent (KEYCTL_SESSION_TO_PARENT).

The parent (this single-threaded process) gives itself a fresh session
keyring, forks and blocks in waitpid().  The child joins a new session keyring
and calls keyctl(KEYCTL_SESSION_TO_PARENT): the kernel queues
``key_change_session_keyring`` (TWA_RESUME) on the PARENT.  TWA_RESUME does not
wake a sleeping task, so the item waits until the parent returns to user mode,
i.e. until waitpid() returns after the child has slept --delay-ms and exited.
The parent then checks that its session keyring really was replaced.

With --calls N the child asks N times; the kernel cancels the still-pending
item of each earlier call (task_work_cancel*) before queueing the next, so a
tracer sees N adds, N-1 cancels and 1 callback.
"""

import errno
import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _wl  # noqa: E402

NAME = "keyctl_parent"

KEYCTL_GET_KEYRING_ID = 0
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_SESSION_TO_PARENT = 18
KEY_SPEC_SESSION_KEYRING = -3


def keyctl(cmd, a2=0, a3=0, a4=0, a5=0):
    return _wl.syscall("keyctl", cmd, a2, a3, a4, a5)


def session_keyring():
    return keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)


def thread_count():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return threading.active_count()


def task_state(pid):
    """One-letter scheduler state of `pid` from /proc, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def wait_until_sleeping(pid, timeout_s=2.0):
    """Poll until `pid` is asleep (it only sleeps in waitpid()).

    Queueing while the parent still runs would let the item run on the
    parent's next return from any syscall, before waitpid().
    """
    deadline = time.monotonic() + timeout_s
    while True:
        state = task_state(pid)
        if state is None or state in ("S", "D") or time.monotonic() > deadline:
            return state
        time.sleep(0.001)


def child(wfd, delay_ms, calls):
    """Runs in the forked child; never returns."""
    out = {"adder_pid": os.getpid(), "adder_tid": threading.get_native_id()}
    code = 0
    try:
        out["parent_state"] = wait_until_sleeping(os.getppid())
        out["child_session"] = keyctl(KEYCTL_JOIN_SESSION_KEYRING, None)
        t0 = _wl.now_ns()
        try:
            for _ in range(calls):
                keyctl(KEYCTL_SESSION_TO_PARENT)
            out["rc"] = 0
        except OSError as e:
            out["rc"] = -e.errno
            code = 1
        t1 = _wl.now_ns()
        out["t_add_start_ns"] = t0
        out["t_add_end_ns"] = t1
        time.sleep(delay_ms / 1000.0)
        out["t_child_done_ns"] = _wl.now_ns()
    except BaseException as e:  # report anything to the parent
        out["error"] = "%s: %s" % (type(e).__name__, e)
        code = 1
    try:
        os.write(wfd, json.dumps(out).encode())
    finally:
        os._exit(code)


def main():
    p = _wl.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--delay-ms", type=_wl.nonneg_int, default=300, metavar="D",
                   help="how long the child sleeps after queueing, i.e. the "
                        "minimum queue latency (default 300)")
    p.add_argument("--keep-session", action="store_true",
                   help="do not give the parent a fresh session keyring first "
                        "(the inherited one must then be owned by our euid)")
    p.add_argument("--calls", type=_wl.positive_int, default=1, metavar="N",
                   help="KEYCTL_SESSION_TO_PARENT calls; each after the first cancels "
                        "the pending item of the one before (default 1)")
    args = p.parse_args()

    if os.getpid() == 1:
        raise _wl.WorkloadError("cannot run as PID 1: the kernel refuses "
                                "KEYCTL_SESSION_TO_PARENT towards init")
    if thread_count() != 1:
        raise _wl.WorkloadError("the parent must be single-threaded")

    try:
        if not args.keep_session:
            # Changes our own creds directly (no task_work) and makes sure
            # the session keyring is owned by our euid, as the kernel requires.
            keyctl(KEYCTL_JOIN_SESSION_KEYRING, None)
        before = session_keyring()
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EPERM, errno.EACCES):
            raise _wl.Unsupported("keyctl(2) is not available: %s "
                                  "(CONFIG_KEYS off or blocked by seccomp?)"
                                  % os.strerror(e.errno))
        raise

    rec = _wl.base_record(NAME)
    rec["delay_ms"] = args.delay_ms
    rec["calls"] = args.calls
    rec["session_before"] = before
    # An inherited SIGCHLD=SIG_IGN would auto-reap the child and make
    # waitpid() fail with ECHILD.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    rfd, wfd = os.pipe()
    rec["t_begin_ns"] = _wl.now_ns()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        child(wfd, args.delay_ms, args.calls)
    os.close(wfd)
    t_wait = _wl.now_ns()
    _, status = os.waitpid(pid, 0)
    t_wake = _wl.now_ns()
    after = session_keyring()
    rec["t_finish_ns"] = _wl.now_ns()

    data = b""
    while True:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        data += chunk
    os.close(rfd)
    try:
        ch = json.loads(data.decode() or "{}")
    except ValueError:
        ch = {}
    if "error" in ch or "t_add_start_ns" not in ch:
        raise _wl.WorkloadError("child failed: %s (status %#x)"
                                % (ch.get("error", "no report"), status))

    rec.update({
        "target_pid": rec["pid"],
        "target_tid": rec["tid"],
        "adder_pid": ch["adder_pid"],
        "adder_tid": ch["adder_tid"],
        "keyctl_rc": ch["rc"],
        "t_add_start_ns": ch["t_add_start_ns"],
        "t_add_end_ns": ch["t_add_end_ns"],
        "t_child_done_ns": ch["t_child_done_ns"],
        "t_wait_start_ns": t_wait,
        "t_parent_wake_ns": t_wake,
        "child_exit_status": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1,
        "child_session": ch["child_session"],
        "parent_state_at_add": ch.get("parent_state"),
        "session_after": after,
        "session_changed": after != before,
        "session_matches_child": after == ch["child_session"],
        "min_latency_ns": args.delay_ms * 1000000,
        "expect": _wl.expect("key_change_session_keyring", _wl.TWA_RESUME,
                             adds=args.calls, cancels=args.calls - 1, runs=1,
                             target="parent",
                             add_window=["t_add_start_ns", "t_add_end_ns"],
                             run_window=["t_child_done_ns", "t_parent_wake_ns"]),
    })
    _wl.emit(rec, args.out)
    if ch["rc"] != 0:
        raise _wl.WorkloadError("KEYCTL_SESSION_TO_PARENT failed: %s"
                                % os.strerror(-ch["rc"]))
    if not rec["session_changed"]:
        raise _wl.WorkloadError("the parent's session keyring did not change")
    return _wl.EXIT_OK


if __name__ == "__main__":
    _wl.run(NAME, main)
