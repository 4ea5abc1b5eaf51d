#!/usr/bin/env python3
"""demo: a steady mix of task_work for live demos of twtrace.

Every --interval-ms: one close_range(2) over a random batch of 1..--max-batch
files (``____fput`` x batch, TWA_RESUME); every 5th step an io_uring 5 ms
timeout (``tctx_task_work``, TWA_SIGNAL); every 20th step a slow fput of a
--slow-mb MiB tmpfs file.  Runs for --seconds (0 = until SIGINT/SIGTERM) and
exits 0 either way, printing a one-line JSON summary.
"""

import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _wl  # noqa: E402
import _uring  # noqa: E402

NAME = "demo"


def main():
    p = _wl.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, metavar="S",
                   help="run time; 0 = until SIGINT/SIGTERM (default 10)")
    p.add_argument("--interval-ms", type=_wl.positive_int, default=50, metavar="MS",
                   help="pause between steps (default 50)")
    p.add_argument("--max-batch", type=_wl.positive_int, default=32, metavar="K",
                   help="largest close_range batch (default 32)")
    p.add_argument("--slow-mb", type=_wl.nonneg_int, default=16, metavar="N",
                   help="size of the occasional slow fput, 0 = none (default 16)")
    p.add_argument("--no-uring", action="store_true", help="skip io_uring steps")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    args = p.parse_args()
    if args.seconds < 0:
        p.error("--seconds must be >= 0")

    stop = {"by": None}

    def on_signal(signo, _frame):
        stop["by"] = signal.Signals(signo).name

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    _wl.check_close_range()
    source = _wl.pick_source("auto")
    rng = random.Random(args.seed)
    ring, uring_note = None, None
    if not args.no_uring:
        try:
            ring = _uring.Ring(entries=4)
        except _wl.Unsupported as e:
            uring_note = str(e)

    rec = _wl.base_record(NAME)
    counts = {"steps": 0, "fput_batches": 0, "files_closed": 0,
              "uring_timeouts": 0, "slow_fputs": 0}
    t_begin = _wl.now_ns()
    deadline = t_begin + int(args.seconds * 1e9) if args.seconds > 0 else None
    try:
        while stop["by"] is None:
            if deadline is not None and _wl.now_ns() >= deadline:
                stop["by"] = "time"
                break
            step = counts["steps"]
            k = rng.randint(1, args.max_batch)
            fds = _wl.open_contiguous(k, source)
            _wl.close_range(fds[0], fds[-1], 0)
            counts["fput_batches"] += 1
            counts["files_closed"] += k
            if ring is not None and step % 5 == 4:
                ring.prep_timeout(5, step)
                ring.submit_and_wait()
                counts["uring_timeouts"] += 1
            if args.slow_mb and step % 20 == 19:
                fd, _ = _wl.make_shmem_file(args.slow_mb << 20)
                _wl.close_range(fd, fd, 0)
                counts["slow_fputs"] += 1
            counts["steps"] += 1
            # sleep in slices so a signal ends the run promptly
            wake = _wl.now_ns() + args.interval_ms * 1000000
            while stop["by"] is None:
                left = wake - _wl.now_ns()
                if left <= 0:
                    break
                time.sleep(min(left, 50000000) / 1e9)
    finally:
        if ring is not None:
            ring.close()
    t_end = _wl.now_ns()
    rec.update(counts)
    rec.update({"t_begin_ns": t_begin, "t_finish_ns": t_end,
                "elapsed_s": round((t_end - t_begin) / 1e9, 3),
                "seconds": args.seconds, "stopped_by": stop["by"],
                "uring": "unavailable: " + uring_note if uring_note
                         else ("off" if args.no_uring else "on")})
    _wl.emit(rec, args.out)
    return _wl.EXIT_OK


if __name__ == "__main__":
    _wl.run(NAME, main)
