"""The long run's workload: many short-lived processes, each queueing
task_work once before it exits.

    python3 forkstorm.py FORKS [MAX_SECONDS]

Each child names itself "twbchild" (so its task lines can be told apart),
opens /dev/null and closes it (the final close: one ____fput on itself),
then exits at once. Children run one at a time. Progress lines
{"forks": n, "t_ns": ...} go to stdout every PROGRESS forks; the last line
is {"done": true, "forks": n, "items": n, ...}: its own counts, the truth.
"""
import ctypes
import json
import os
import sys
import time

PR_SET_NAME = 15
COMM = b"twbchild"
PROGRESS = 1000


def child(prctl):
    prctl(PR_SET_NAME, COMM, 0, 0, 0)
    os.close(os.open("/dev/null", os.O_RDONLY))
    os._exit(0)


def main(argv):
    forks = int(argv[1])
    max_s = float(argv[2]) if len(argv) > 2 else float("inf")
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    t0 = time.monotonic()
    begin = time.monotonic_ns()
    n = failed = 0
    while n < forks and time.monotonic() - t0 < max_s:
        pid = os.fork()
        if pid == 0:
            child(prctl)
        _, status = os.waitpid(pid, 0)
        failed += status != 0
        n += 1
        if n % PROGRESS == 0:
            print(json.dumps({"forks": n, "t_ns": time.monotonic_ns()}), flush=True)
    end = time.monotonic_ns()
    print(json.dumps({"done": True, "forks": n, "items": n, "failed": failed,
                      "t_begin_ns": begin, "t_end_ns": end,
                      "forks_per_s": n / ((end - begin) / 1e9)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
