#!/usr/bin/env python3
"""cpu_timer: POSIX CPU timer expiries handled through task_work.

Arms setitimer(ITIMER_PROF) with a 10 ms interval and spins for M ms of wall
time.  On kernels with CONFIG_POSIX_CPU_TIMERS_TASK_WORK (selected by x86 and
arm64) the scheduler tick that sees the timer expire queues
``posix_cpu_timers_work`` (TWA_RESUME) on this thread; it runs on the return
to user mode from that tick and sends the SIGPROF.  One work item per
expiry, so the tracer's callback count should be >= the signals counted here.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _wl  # noqa: E402

NAME = "cpu_timer"
TIMERS = {"prof": (signal.ITIMER_PROF, signal.SIGPROF, "SIGPROF"),
          "virtual": (signal.ITIMER_VIRTUAL, signal.SIGVTALRM, "SIGVTALRM")}


def main():
    p = _wl.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--ms", type=_wl.positive_int, default=300, metavar="M",
                   help="how long to spin, wall clock (default 300)")
    p.add_argument("--interval-ms", type=_wl.positive_int, default=10, metavar="I",
                   help="timer interval in CPU time (default 10)")
    p.add_argument("--timer", choices=sorted(TIMERS), default="prof",
                   help="ITIMER_PROF (user+system time, default) or ITIMER_VIRTUAL")
    args = p.parse_args()

    which, signo, signame = TIMERS[args.timer]
    stamps = []

    def on_signal(_signo, _frame):
        stamps.append(_wl.now_ns())

    old = signal.signal(signo, on_signal)
    rec = _wl.base_record(NAME)
    interval = args.interval_ms / 1000.0
    spins = 0
    rec["t_begin_ns"] = _wl.now_ns()
    t0 = _wl.now_ns()
    signal.setitimer(which, interval, interval)
    deadline = t0 + args.ms * 1000000
    try:
        while _wl.now_ns() < deadline:
            spins += 1
    finally:
        signal.setitimer(which, 0, 0)
        t1 = _wl.now_ns()
        signal.signal(signo, old)
    cpu = os.times()
    rec["t_finish_ns"] = _wl.now_ns()
    rec.update({
        "ms": args.ms,
        "interval_ms": args.interval_ms,
        "timer": args.timer,
        "signal": signame,
        "t_start_ns": t0,
        "t_end_ns": t1,
        "signals": len(stamps),
        "signal_times_ns": stamps,
        "spins": spins,
        "process_cpu_s": round(cpu.user + cpu.system, 3),
        "expect": _wl.expect("posix_cpu_timers_work", _wl.TWA_RESUME,
                             min_runs=len(stamps), target="self",
                             adder="self (timer tick)",
                             note="needs CONFIG_POSIX_CPU_TIMERS_TASK_WORK; "
                                  "otherwise expiry is handled in the tick "
                                  "with no task_work"),
    })
    _wl.emit(rec, args.out)
    if not stamps:
        raise _wl.WorkloadError("no %s arrived in %d ms" % (signame, args.ms))
    return _wl.EXIT_OK


if __name__ == "__main__":
    _wl.run(NAME, main)
