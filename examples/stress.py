#!/usr/bin/env python3
"""stress: every kind of task_work at once, on every CPU.

Threads (two per CPU by default) each close K files with close_range(2), R
times, so each queues exactly K*R ``____fput`` items on itself and its
queue reaches depth K; a parent process is sent key_change_session_keyring
items by its children (cross-task adds, from other CPUs); io_uring timeouts
complete from a timer interrupt (tctx_task_work); a POSIX CPU timer fires
on a busy thread (posix_cpu_timers_work).  The truth printed is per thread
and per helper workload (each helper prints its own).
"""

import json
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _wl  # noqa: E402

NAME = "stress"
HERE = os.path.dirname(os.path.abspath(__file__))
HELPERS = (
    ("keyctl_parent", ["--delay-ms", "50", "--calls", "4"]),
    ("uring_timeout", ["--count", "5", "--ms", "20"]),
    ("cpu_timer", ["--ms", "300", "--interval-ms", "20"]),
)


def closer(k, rounds, source, barrier, out):
    rec = {"tid": threading.get_native_id(), "files": k, "rounds": rounds}
    barrier.wait()
    rec["t_start_ns"] = _wl.now_ns()
    for _ in range(rounds):
        fds = _wl.open_contiguous(k, source)
        _wl.close_range(fds[0], fds[-1], 0)
    rec["t_end_ns"] = _wl.now_ns()
    rec["adds"] = k * rounds
    out.append(rec)


def main():
    p = _wl.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--threads", type=_wl.positive_int, default=max(4, 2 * (os.cpu_count() or 1)))
    p.add_argument("--files", type=_wl.positive_int, default=16, metavar="K")
    p.add_argument("--rounds", type=_wl.positive_int, default=20, metavar="R")
    p.add_argument("--no-helpers", action="store_true", help="only the close_range threads")
    args = p.parse_args()
    _wl.check_close_range()
    source = _wl.pick_source("auto")
    rec = _wl.base_record(NAME)
    rec.update({"cpus": os.cpu_count(), "expect": _wl.expect(
        "____fput", _wl.TWA_RESUME, max_depth=args.files, target="self")})
    # Helpers are processes of their own: keyctl's parent must be single-threaded.
    helpers = [] if args.no_helpers else [
        (name, subprocess.Popen([sys.executable, os.path.join(HERE, name + ".py"), *argv],
                                stdout=subprocess.PIPE, text=True))
        for name, argv in HELPERS]
    done, barrier = [], threading.Barrier(args.threads)
    threads = [threading.Thread(target=closer, args=(args.files, args.rounds, source, barrier,
                                                     done)) for _ in range(args.threads)]
    rec["t_begin_ns"] = _wl.now_ns()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec["threads"] = sorted(done, key=lambda r: r["tid"])
    rec["helpers"] = {}
    for name, proc in helpers:
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise _wl.WorkloadError("%s exited %d" % (name, proc.returncode))
        rec["helpers"][name] = json.loads(out.strip().splitlines()[-1])
    rec["t_finish_ns"] = _wl.now_ns()
    _wl.emit(rec, args.out)
    return _wl.EXIT_OK


if __name__ == "__main__":
    _wl.run(NAME, main)
