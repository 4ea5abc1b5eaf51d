#!/usr/bin/env python3
"""close_batch: K final fputs queued by one close_range(2) call, R times.

Each round opens K distinct files on consecutive descriptors, then closes all
of them with a single close_range(first, last, 0).  Each final fput queues one
``____fput`` item (TWA_RESUME) on this thread; all K run when the same syscall
returns to user mode, so the thread's queue reaches depth K inside the window.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _wl  # noqa: E402

NAME = "close_batch"


def main():
    p = _wl.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--files", type=_wl.positive_int, default=16, metavar="K",
                   help="files closed per close_range call (default 16)")
    p.add_argument("--rounds", type=_wl.positive_int, default=5, metavar="R",
                   help="number of close_range calls (default 5)")
    p.add_argument("--gap-ms", type=_wl.nonneg_int, default=0, metavar="MS",
                   help="sleep between rounds (default 0)")
    p.add_argument("--until-file", metavar="PATH",
                   help="stop after the round in which PATH appears (up to R rounds)")
    p.add_argument("--source", choices=["auto", "devnull", "memfd"], default="auto",
                   help="what to open: /dev/null or memfd_create (default auto: "
                        "/dev/null if it is a character device)")
    p.add_argument("--hold", metavar="DIR",
                   help="before the first round make DIR/ready and wait for DIR/go; "
                        "after the last make DIR/done and wait for DIR/end (directories: "
                        "no file is opened, so holding queues no task_work)")
    args = p.parse_args()

    _wl.check_close_range()
    source = _wl.pick_source(args.source)
    rec = _wl.base_record(NAME)
    rec.update({
        "files": args.files,
        "source": source,
        "expect": _wl.expect("____fput", _wl.TWA_RESUME,
                             adds_per_round=args.files,
                             runs_per_round=args.files,
                             max_depth=args.files,
                             target="self"),
    })
    rounds = []
    if args.hold:
        _wl.hold(args.hold, "ready", "go")
    rec["t_begin_ns"] = _wl.now_ns()
    for i in range(args.rounds):
        if i and args.gap_ms:
            time.sleep(args.gap_ms / 1000.0)
        fds = _wl.open_contiguous(args.files, source)
        first, last = fds[0], fds[-1]
        t0 = _wl.now_ns()
        _wl.close_range(first, last, 0)
        t1 = _wl.now_ns()
        still = [fd for fd in fds if _wl.fd_is_open(fd)]
        if still:
            raise _wl.WorkloadError("close_range left descriptors open: %s" % still)
        rounds.append({"round": i, "files": args.files, "first_fd": first,
                       "last_fd": last, "t_start_ns": t0, "t_end_ns": t1})
        if args.until_file and os.path.exists(args.until_file):
            break
    rec["t_finish_ns"] = _wl.now_ns()
    if args.hold:
        _wl.hold(args.hold, "done", "end")
    rec["rounds"] = rounds
    _wl.emit(rec, args.out)
    return _wl.EXIT_OK


if __name__ == "__main__":
    _wl.run(NAME, main)
