#!/usr/bin/env python3
"""uring_timeout: io_uring completions delivered to this thread as task_work.

Sets up a plain io_uring (flags 0: no SQPOLL, no COOP_TASKRUN, no
DEFER_TASKRUN), then N times submits one request and waits for its CQE with
io_uring_enter(fd, 1, 1, IORING_ENTER_GETEVENTS):

* --op timeout (default): IORING_OP_TIMEOUT of M ms.  The hrtimer fires in
  hard-IRQ context and queues ``tctx_task_work`` (TWA_SIGNAL) on this thread,
  which runs it inside io_uring_enter's wait loop; the CQE has res -ETIME.
* --op poll: IORING_OP_POLL_ADD on an empty pipe; a helper thread writes one
  byte after M ms, and the wakeup queues ``tctx_task_work`` (TWA_SIGNAL) on
  this thread from the WRITER's context; the CQE has res POLLIN.
"""

import errno
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _wl  # noqa: E402
import _uring  # noqa: E402

NAME = "uring_timeout"


class Writer(threading.Thread):
    """Writes one byte to `wfd` `ms` milliseconds after each go()."""

    def __init__(self, wfd, ms):
        super().__init__(name="uring-writer", daemon=True)
        self.wfd, self.ms = wfd, ms
        self._go = threading.Semaphore(0)
        self._done = threading.Semaphore(0)
        self._quit = False
        self.tid = None
        self.last = None
        self.error = None

    def run(self):
        self.tid = threading.get_native_id()
        while True:
            self._go.acquire()
            if self._quit:
                return
            try:
                time.sleep(self.ms / 1000.0)
                t0 = _wl.now_ns()
                os.write(self.wfd, b"x")
                t1 = _wl.now_ns()
                self.last = (t0, t1)
            except OSError as e:
                self.error = e
            self._done.release()

    def go(self):
        self._go.release()

    def wait(self):
        self._done.acquire()
        if self.error:
            raise self.error
        return self.last

    def stop(self):
        self._quit = True
        self._go.release()
        self.join(2)


def run_timeouts(ring, count, ms):
    its = []
    for i in range(count):
        ud = 0x7477000 + i
        ring.prep_timeout(ms, ud)
        t0 = _wl.now_ns()
        user_data, res, _ = ring.submit_and_wait()
        t1 = _wl.now_ns()
        if user_data != ud:
            raise _wl.WorkloadError("unexpected CQE user_data %#x" % user_data)
        its.append({"i": i, "t_start_ns": t0, "t_end_ns": t1, "res": res,
                    "user_data": ud})
    return its


def run_polls(ring, count, ms):
    rfd, wfd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    writer = Writer(wfd, ms)
    writer.start()
    its = []
    try:
        while writer.tid is None:
            time.sleep(0.001)
        for i in range(count):
            ud = 0x7077000 + i
            ring.prep_poll_add(rfd, _uring.POLLIN, ud)
            t0 = _wl.now_ns()
            writer.go()  # the write comes >= M ms later, so after t0
            user_data, res, _ = ring.submit_and_wait()
            t1 = _wl.now_ns()
            tw0, tw1 = writer.wait()
            try:
                os.read(rfd, 64)
            except OSError as e:
                if e.errno != errno.EAGAIN:
                    raise
            if user_data != ud:
                raise _wl.WorkloadError("unexpected CQE user_data %#x" % user_data)
            its.append({"i": i, "t_start_ns": t0, "t_end_ns": t1, "res": res,
                        "user_data": ud, "writer_tid": writer.tid,
                        "t_write_start_ns": tw0, "t_write_end_ns": tw1})
    finally:
        writer.stop()
        os.close(rfd)
        os.close(wfd)
    return its


def main():
    p = _wl.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--count", type=_wl.positive_int, default=5, metavar="N",
                   help="requests, one at a time (default 5)")
    p.add_argument("--ms", type=_wl.positive_int, default=20, metavar="M",
                   help="timeout, or delay before the pipe write (default 20)")
    p.add_argument("--op", choices=["timeout", "poll"], default="timeout",
                   help="what completes asynchronously (default timeout)")
    args = p.parse_args()

    rec = _wl.base_record(NAME)
    ring = _uring.Ring(entries=4, flags=0)
    try:
        rec.update({"op": args.op, "ms": args.ms, "count": args.count,
                    "setup_flags": 0, "features": ring.features,
                    "single_mmap": ring.single_mmap})
        rec["t_begin_ns"] = _wl.now_ns()
        if args.op == "timeout":
            its = run_timeouts(ring, args.count, args.ms)
            want = -_uring.ETIME
            rec["expect"] = _wl.expect(
                "tctx_task_work", _wl.TWA_SIGNAL, adds_per_iteration=1,
                runs_per_iteration=1, target="self", adder="hardirq (hrtimer)",
                add_after_start_ns=args.ms * 1000000,
                note="kernels before 5.15 post timeout CQEs from the hrtimer "
                     "directly: no task_work there")
        else:
            its = run_polls(ring, args.count, args.ms)
            want = _uring.POLLIN
            rec["expect"] = _wl.expect(
                "tctx_task_work", _wl.TWA_SIGNAL, adds_per_iteration=1,
                runs_per_iteration=1, target="self", adder="writer_tid",
                add_window=["t_write_start_ns", "t_write_end_ns"],
                add_after_start_ns=args.ms * 1000000,
                note="5.10/5.11 queue one io_poll_task_func item per request "
                     "instead of tctx_task_work")
        rec["t_finish_ns"] = _wl.now_ns()
    finally:
        ring.close()
    rec["expected_res"] = want
    rec["iterations"] = its
    _wl.emit(rec, args.out)
    bad = [it["res"] for it in its if it["res"] != want]
    if bad:
        raise _wl.WorkloadError("unexpected CQE results %s (wanted %d)" % (bad, want))
    return _wl.EXIT_OK


if __name__ == "__main__":
    _wl.run(NAME, main)
