"""The benchmark's workload: a close_range storm, driven over stdin.

Each round opens N files (/dev/null, fresh each time, so each close is the
final one) on consecutive descriptors and closes them with one close_range;
every close queues a ____fput item on this thread. The process starts, says
"ready", then runs one phase per command line so that a tracer can be started
between its start and its counted work:

    go SECONDS [RATE]   storm for SECONDS (RATE items/s, 0 = flat out), then
                        print one JSON line: items (its own count of closes,
                        the truth), t_begin_ns/t_end_ns (CLOCK_MONOTONIC, the
                        clock of event timestamps) and items_per_s
    quit                exit

Outside a phase it does nothing that queues task_work.
"""
import ctypes
import json
import os
import sys
import time

NR_CLOSE_RANGE = 436  # the same on x86-64 and arm64 (asm-generic)


class Storm:
    def __init__(self, files):
        self.files = files
        libc = ctypes.CDLL(None, use_errno=True)
        self.syscall = libc.syscall
        self.plugs = plug_holes()

    def round(self):
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(self.files)]
        # Lowest free descriptors: consecutive unless something else is open in
        # between, which would make close_range close a file we did not count.
        if fds[-1] - fds[0] != self.files - 1:
            raise SystemExit("storm: descriptors not consecutive: %s" % fds)
        if self.syscall(NR_CLOSE_RANGE, fds[0], fds[-1], 0) != 0:
            raise SystemExit("storm: close_range: %s" % os.strerror(ctypes.get_errno()))

    def phase(self, seconds, rate):
        n = self.files
        step = n / float(rate) if rate else 0.0  # seconds per round at that rate
        rounds = 0
        t0 = time.monotonic()
        begin = time.monotonic_ns()
        end_at = t0 + seconds
        while True:
            now = time.monotonic()
            if now >= end_at:
                break
            if step:
                due = t0 + rounds * step
                if due > now:
                    time.sleep(min(due - now, end_at - now))
                    continue
            self.round()
            rounds += 1
        end = time.monotonic_ns()
        dur = (end - begin) / 1e9
        return {"pid": os.getpid(), "files": n, "rounds": rounds, "items": rounds * n,
                "rate_target": rate, "t_begin_ns": begin, "t_end_ns": end,
                "seconds": dur, "items_per_s": rounds * n / dur if dur else 0.0}


def plug_holes():
    """Fill the free descriptors below the highest open one (an inherited fd
    may sit anywhere) with files kept open for good, so that every round's
    files come out consecutive above them."""
    top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    plugs = []
    while True:
        fd = os.open("/dev/null", os.O_RDONLY)
        if fd > top:
            os.close(fd)  # before any phase: not counted
            return plugs
        plugs.append(fd)


def main(argv):
    files = int(argv[1]) if len(argv) > 1 else 64
    storm = Storm(files)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "go":
            rate = float(words[2]) if len(words) > 2 else 0.0
            print(json.dumps(storm.phase(float(words[1]), rate)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
