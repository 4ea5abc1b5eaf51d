"""A minimal io_uring over raw system calls and ctypes (no liburing).

Just enough for the workloads: io_uring_setup with given flags, the SQ/CQ
rings and the SQE array mmap'd from the ring fd (one mapping for both rings
when the kernel reports IORING_FEAT_SINGLE_MMAP), submit one SQE, wait with
io_uring_enter(IORING_ENTER_GETEVENTS), reap CQEs.  Layouts follow
include/uapi/linux/io_uring.h; both supported machines are little-endian.
"""

import ctypes
import errno
import os

import _wl

IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_ENTER_GETEVENTS = 1 << 0

IORING_OP_NOP = 0
IORING_OP_POLL_ADD = 6
IORING_OP_TIMEOUT = 11

PROT_READ = 0x1
PROT_WRITE = 0x2
MAP_SHARED = 0x01
MAP_POPULATE = 0x8000  # same value on x86_64 and aarch64

POLLIN = 0x0001
ETIME = 62


class SqringOffsets(ctypes.Structure):
    _fields_ = [("head", ctypes.c_uint32), ("tail", ctypes.c_uint32),
                ("ring_mask", ctypes.c_uint32), ("ring_entries", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("dropped", ctypes.c_uint32),
                ("array", ctypes.c_uint32), ("resv1", ctypes.c_uint32),
                ("user_addr", ctypes.c_uint64)]


class CqringOffsets(ctypes.Structure):
    _fields_ = [("head", ctypes.c_uint32), ("tail", ctypes.c_uint32),
                ("ring_mask", ctypes.c_uint32), ("ring_entries", ctypes.c_uint32),
                ("overflow", ctypes.c_uint32), ("cqes", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("resv1", ctypes.c_uint32),
                ("user_addr", ctypes.c_uint64)]


class Params(ctypes.Structure):
    _fields_ = [("sq_entries", ctypes.c_uint32), ("cq_entries", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("sq_thread_cpu", ctypes.c_uint32),
                ("sq_thread_idle", ctypes.c_uint32), ("features", ctypes.c_uint32),
                ("wq_fd", ctypes.c_uint32), ("resv", ctypes.c_uint32 * 3),
                ("sq_off", SqringOffsets), ("cq_off", CqringOffsets)]


class Sqe(ctypes.Structure):
    _fields_ = [("opcode", ctypes.c_uint8), ("flags", ctypes.c_uint8),
                ("ioprio", ctypes.c_uint16), ("fd", ctypes.c_int32),
                ("off", ctypes.c_uint64),         # also addr2
                ("addr", ctypes.c_uint64),        # also splice_off_in
                ("len", ctypes.c_uint32),
                ("op_flags", ctypes.c_uint32),    # timeout_flags, poll32_events, ...
                ("user_data", ctypes.c_uint64),
                ("buf_index", ctypes.c_uint16), ("personality", ctypes.c_uint16),
                ("splice_fd_in", ctypes.c_int32),
                ("addr3", ctypes.c_uint64), ("pad2", ctypes.c_uint64)]


class Cqe(ctypes.Structure):
    _fields_ = [("user_data", ctypes.c_uint64), ("res", ctypes.c_int32),
                ("flags", ctypes.c_uint32)]


class KernelTimespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64)]


assert ctypes.sizeof(Params) == 120
assert ctypes.sizeof(SqringOffsets) == 40 and ctypes.sizeof(CqringOffsets) == 40
assert ctypes.sizeof(Sqe) == 64 and ctypes.sizeof(Cqe) == 16


def _u32(addr):
    return ctypes.c_uint32.from_address(addr)


class Ring(object):
    """One io_uring instance; not thread-safe (use from one thread)."""

    def __init__(self, entries=4, flags=0):
        self.params = p = Params()
        p.flags = flags
        try:
            self.fd = _wl.syscall("io_uring_setup", entries, ctypes.addressof(p))
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.EPERM, errno.EACCES):
                raise _wl.Unsupported(
                    "io_uring is not available: %s (kernel without CONFIG_IO_URING, "
                    "kernel.io_uring_disabled set, or blocked by seccomp)"
                    % os.strerror(e.errno))
            raise
        self._maps = []
        try:
            self._map_rings()
        except BaseException:
            self.close()
            raise
        self._keep = []  # objects the kernel may read until completion

    def _map_rings(self):
        p = self.params
        prot = PROT_READ | PROT_WRITE
        mflags = MAP_SHARED | MAP_POPULATE
        sq_sz = p.sq_off.array + p.sq_entries * 4
        cq_sz = p.cq_off.cqes + p.cq_entries * ctypes.sizeof(Cqe)
        single = bool(p.features & IORING_FEAT_SINGLE_MMAP)
        if single:
            sq_sz = cq_sz = max(sq_sz, cq_sz)
        sq = _wl.mmap(sq_sz, prot, mflags, self.fd, IORING_OFF_SQ_RING)
        self._maps.append((sq, sq_sz))
        if single:
            cq = sq
        else:
            cq = _wl.mmap(cq_sz, prot, mflags, self.fd, IORING_OFF_CQ_RING)
            self._maps.append((cq, cq_sz))
        sqes_sz = p.sq_entries * ctypes.sizeof(Sqe)
        sqes = _wl.mmap(sqes_sz, prot, mflags, self.fd, IORING_OFF_SQES)
        self._maps.append((sqes, sqes_sz))

        so, co = p.sq_off, p.cq_off
        self.sq_head = _u32(sq + so.head)
        self.sq_tail = _u32(sq + so.tail)
        self.sq_mask = _u32(sq + so.ring_mask).value
        self.sq_array = sq + so.array
        self.sqes = sqes
        self.cq_head = _u32(cq + co.head)
        self.cq_tail = _u32(cq + co.tail)
        self.cq_mask = _u32(cq + co.ring_mask).value
        self.cqes = cq + co.cqes
        self.single_mmap = single

    @property
    def features(self):
        return self.params.features

    def get_sqe(self):
        """Zeroed next SQE (caller fills it, then calls submit_and_wait)."""
        tail = self.sq_tail.value
        if ((tail - self.sq_head.value) & 0xFFFFFFFF) > self.sq_mask:
            raise _wl.WorkloadError("io_uring submission queue full")
        idx = tail & self.sq_mask
        addr = self.sqes + idx * ctypes.sizeof(Sqe)
        ctypes.memset(addr, 0, ctypes.sizeof(Sqe))
        _u32(self.sq_array + idx * 4).value = idx
        # The kernel only looks at the SQE once the tail moves, which happens
        # in _publish(): same thread, and io_uring_enter is the next step.
        self._pending_tail = (tail + 1) & 0xFFFFFFFF
        return Sqe.from_address(addr)

    def _publish(self):
        self.sq_tail.value = self._pending_tail

    def enter(self, to_submit, min_complete, flags):
        return _wl.syscall("io_uring_enter", self.fd, to_submit, min_complete,
                           flags, None, 0)

    def reap(self):
        """Pop one CQE as (user_data, res, flags), or None if the CQ is empty."""
        head = self.cq_head.value
        if head == self.cq_tail.value:
            return None
        c = Cqe.from_address(self.cqes + (head & self.cq_mask) * ctypes.sizeof(Cqe))
        out = (c.user_data, c.res, c.flags)
        self.cq_head.value = (head + 1) & 0xFFFFFFFF
        return out

    def submit_and_wait(self):
        """Submit the prepared SQE and block until one CQE is there."""
        self._publish()
        while True:
            # whatever the kernel has not consumed yet (after an EINTR that
            # came before submission, that is still our SQE)
            pending = (self.sq_tail.value - self.sq_head.value) & 0xFFFFFFFF
            try:
                self.enter(pending, 1, IORING_ENTER_GETEVENTS)
            except OSError as e:
                if e.errno != errno.EINTR:
                    raise
            cqe = self.reap()
            if cqe is not None:
                return cqe

    def prep_timeout(self, ms, user_data):
        ts = KernelTimespec(ms // 1000, (ms % 1000) * 1000000)
        self._keep = [ts]
        sqe = self.get_sqe()
        sqe.opcode = IORING_OP_TIMEOUT
        sqe.fd = -1
        sqe.addr = ctypes.addressof(ts)
        sqe.len = 1
        sqe.off = 0          # pure timeout: do not count completions
        sqe.op_flags = 0     # relative
        sqe.user_data = user_data
        return sqe

    def prep_poll_add(self, fd, events, user_data):
        sqe = self.get_sqe()
        sqe.opcode = IORING_OP_POLL_ADD
        sqe.fd = fd
        sqe.op_flags = events  # poll32_events; low 16 bits = poll_events (LE)
        sqe.user_data = user_data
        return sqe

    def close(self):
        for addr, size in getattr(self, "_maps", []):
            _wl.munmap(addr, size)
        self._maps = []
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
