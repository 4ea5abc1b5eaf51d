#!/usr/bin/env python3
"""slow_fput: one ____fput callback with a long run time, plus quick ones.

First K small files (/dev/null or memfd) are closed one close_range(fd, fd, 0)
each, for reference.  Then an N MiB tmpfs file (/dev/shm if it is a tmpfs,
else memfd_create) is written in full, unlinked, and closed with
close_range(fd, fd, 0): its final ``____fput`` (TWA_RESUME, run on return from
that syscall) evicts the inode and frees all of its pages, so the callback's
run time dominates the window.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _wl  # noqa: E402

NAME = "slow_fput"


def main():
    p = _wl.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--mb", type=_wl.positive_int, default=64, metavar="N",
                   help="size of the big file in MiB (default 64)")
    p.add_argument("--small", type=_wl.nonneg_int, default=5, metavar="K",
                   help="small files closed first, one close_range each (default 5)")
    p.add_argument("--backing", choices=["auto", "shm", "memfd"], default="auto",
                   help="where the big file lives (default auto: /dev/shm if "
                        "tmpfs, else memfd)")
    p.add_argument("--source", choices=["auto", "devnull", "memfd"], default="auto",
                   help="what the small files are (default auto)")
    args = p.parse_args()

    _wl.check_close_range()
    source = _wl.pick_source(args.source)
    rec = _wl.base_record(NAME)
    rec["t_begin_ns"] = _wl.now_ns()

    small = []
    for i in range(args.small):
        fd = _wl.open_one(source)
        t0 = _wl.now_ns()
        _wl.close_range(fd, fd, 0)
        t1 = _wl.now_ns()
        small.append({"i": i, "fd": fd, "t_start_ns": t0, "t_end_ns": t1})

    nbytes = args.mb << 20
    shmem0 = _wl.meminfo_kb("Shmem")
    t_w0 = _wl.now_ns()
    fd, info = _wl.make_shmem_file(nbytes, args.backing)
    t_w1 = _wl.now_ns()
    shmem1 = _wl.meminfo_kb("Shmem")
    t0 = _wl.now_ns()
    _wl.close_range(fd, fd, 0)
    t1 = _wl.now_ns()
    shmem2 = _wl.meminfo_kb("Shmem")
    if _wl.fd_is_open(fd):
        raise _wl.WorkloadError("close_range left fd %d open" % fd)
    big = {"mb": args.mb, "size_bytes": nbytes, "fd": fd,
           "backing": info["backing"], "t_start_ns": t0, "t_end_ns": t1,
           "write_ns": t_w1 - t_w0}
    if shmem0 is not None and shmem1 is not None and shmem2 is not None:
        # system-wide counters: other processes add noise
        big["shmem_grown_kb"] = shmem1 - shmem0
        big["shmem_freed_kb"] = shmem1 - shmem2
    rec["t_finish_ns"] = _wl.now_ns()

    small_ns = sorted(w["t_end_ns"] - w["t_start_ns"] for w in small)
    rec.update({
        "small_source": source,
        "small": small,
        "big": big,
        "big_window_ns": t1 - t0,
        "small_window_median_ns": small_ns[len(small_ns) // 2] if small_ns else None,
        "expect": _wl.expect("____fput", _wl.TWA_RESUME, adds_per_window=1,
                             runs_per_window=1, target="self",
                             slow="big"),
    })
    _wl.emit(rec, args.out)
    return _wl.EXIT_OK


if __name__ == "__main__":
    _wl.run(NAME, main)
