"""Shared helpers for the twtrace example workloads.

Only the standard library and ctypes are used, so the workloads run on any
Python 3.9+ a test VM has (Debian 11's 3.9 up to 3.13) on x86_64 and aarch64.
Raw system calls go through libc's ``syscall()`` so that an old glibc without
wrappers (2.31 has no ``close_range``) still works.

Conventions shared by every workload:

* timestamps are ``time.monotonic_ns()`` (CLOCK_MONOTONIC, the clock behind
  ``bpf_ktime_get_ns()``);
* the ground truth is ONE JSON object, printed as the last line of stdout, or
  written to ``--out FILE`` instead;
* exit status 0 = success, 1 = the workload ran but did not do what it should,
  2 = bad arguments, 3 = the kernel (or a sandbox) does not offer what the
  workload needs; failures print one line on stderr.
"""

import argparse
import ctypes
import errno
import fcntl
import json
import os
import platform
import stat
import sys
import threading
import time

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3

# Raw system call numbers.  aarch64 uses the asm-generic table.
SYSCALLS = {
    "x86_64": {
        "gettid": 186,
        "keyctl": 250,
        "memfd_create": 319,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "close_range": 436,
    },
    "aarch64": {
        "gettid": 178,
        "keyctl": 219,
        "memfd_create": 279,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "close_range": 436,
    },
}
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}

# task_work notify modes (enum task_work_notify_mode; values are stable).
TWA_NONE = 0
TWA_RESUME = 1
TWA_SIGNAL = 2
NOTIFY_NAMES = {0: "TWA_NONE", 1: "TWA_RESUME", 2: "TWA_SIGNAL",
                3: "TWA_SIGNAL_NO_IPI", 4: "TWA_NMI_CURRENT"}

MFD_CLOEXEC = 0x0001
F_DUPFD_CLOEXEC = getattr(fcntl, "F_DUPFD_CLOEXEC", 1030)

now_ns = time.monotonic_ns


class WorkloadError(Exception):
    """Reaches the user as one line on stderr; carries the exit status."""

    def __init__(self, message, code=EXIT_FAIL):
        super().__init__(message)
        self.code = code


class Unsupported(WorkloadError):
    """The kernel or a sandbox does not provide what the workload needs."""

    def __init__(self, message):
        super().__init__(message, EXIT_UNSUPPORTED)


# ---------------------------------------------------------------- syscalls

libc = ctypes.CDLL(None, use_errno=True)
_syscall = libc.syscall
_syscall.restype = ctypes.c_long

_mmap = libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                  ctypes.c_int, ctypes.c_int, ctypes.c_long]
_munmap = libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FAILED = ctypes.c_void_p(-1).value


def machine():
    m = platform.machine()
    return _MACHINE_ALIASES.get(m, m)


def syscall_nr(name):
    table = SYSCALLS.get(machine())
    if table is None:
        raise Unsupported("unsupported architecture %r (known: %s)"
                          % (platform.machine(), ", ".join(sorted(SYSCALLS))))
    return table[name]


def _arg(a):
    if a is None:
        return ctypes.c_void_p(None)
    if isinstance(a, int):
        # variadic: a bare Python int would be passed as a 32-bit C int
        return ctypes.c_long(a)
    return a


def syscall(name, *args):
    """Raw system call; returns the result or raises OSError(errno)."""
    nr = syscall_nr(name)
    res = _syscall(ctypes.c_long(nr), *[_arg(a) for a in args])
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (name, os.strerror(err)))
    return res


def close_range(first, last, flags=0):
    return syscall("close_range", first, last, flags)


def memfd_create(name, flags=MFD_CLOEXEC):
    return syscall("memfd_create", ctypes.c_char_p(name.encode()), flags)


def mmap(length, prot, flags, fd, offset):
    addr = _mmap(None, length, prot, flags, fd, offset)
    if addr is None or addr == MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, "mmap: %s" % os.strerror(err))
    return addr


def munmap(addr, length):
    _munmap(addr, length)


def check_close_range():
    """Raise Unsupported unless close_range(2) works (Linux >= 5.9)."""
    try:
        # An empty range above any real fd: a no-op that still proves support.
        close_range(0x7FFFFFF0, 0x7FFFFFF0, 0)
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EPERM):
            raise Unsupported("close_range(2) is not available (%s): kernel "
                              "older than 5.9, or blocked by seccomp"
                              % os.strerror(e.errno))
        raise


# ------------------------------------------------------------------ files

def fd_is_open(fd):
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
        return True
    except OSError:
        return False


def pick_source(source):
    """Resolve --source auto|devnull|memfd to devnull or memfd."""
    if source == "auto":
        try:
            if stat.S_ISCHR(os.stat("/dev/null").st_mode):
                return "devnull"
        except OSError:
            pass
        return "memfd"
    return source


def open_one(source):
    """Open one new, distinct struct file (its final fput is cheap)."""
    if source == "devnull":
        return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    if source == "memfd":
        return memfd_create("twtrace-wl")
    raise ValueError(source)


def open_contiguous(count, source):
    """Open `count` distinct files on consecutive descriptor numbers.

    New descriptors normally come out consecutive; if there are holes below
    them, the files are moved (F_DUPFD_CLOEXEC, then close of the original:
    dropping a non-final reference queues no task_work) to a free range.
    """
    fds = [open_one(source) for _ in range(count)]
    if fds == list(range(fds[0], fds[0] + count)):
        return fds
    base = max(fds) + 1
    while any(fd_is_open(base + i) for i in range(count)):
        base += 1
    moved = []
    for i, fd in enumerate(fds):
        new = fcntl.fcntl(fd, F_DUPFD_CLOEXEC, base + i)
        os.close(fd)
        moved.append(new)
    if moved != list(range(base, base + count)):
        close_fds(moved)
        raise WorkloadError("could not place %d descriptors contiguously" % count)
    return moved


def close_fds(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def is_tmpfs(path):
    """True if `path` is the mount point of a tmpfs (from /proc/self/mounts)."""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] == path and parts[2] == "tmpfs":
                    return True
    except OSError:
        pass
    return False


def meminfo_kb(field):
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def make_shmem_file(nbytes, backing="auto", chunk=1 << 20):
    """Create a tmpfs-backed file of `nbytes`, fully written, and unlinked.

    Returns (fd, info).  Only the returned descriptor refers to the file, so
    its final fput frees every page of it.  backing: auto (/dev/shm if it is
    a tmpfs, else memfd), shm or memfd.
    """
    if backing == "auto":
        backing = "shm" if is_tmpfs("/dev/shm") else "memfd"
    info = {"backing": backing}
    if backing == "shm":
        path = "/dev/shm/twtrace-wl-%d-%d" % (os.getpid(), now_ns())
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        info["path"] = path
    elif backing == "memfd":
        fd = memfd_create("twtrace-big")
    else:
        raise ValueError(backing)
    try:
        buf = b"\xa5" * chunk
        left = nbytes
        while left > 0:
            n = os.write(fd, buf if left >= chunk else buf[:left])
            left -= n
    except BaseException:
        os.close(fd)
        if backing == "shm":
            os.unlink(info["path"])
        raise
    if backing == "shm":
        os.unlink(info["path"])
    info["size_bytes"] = nbytes
    return fd, info


def hold(directory, mark, wait_for, timeout_s=600):
    """Say `mark` (mkdir) and wait until `wait_for` exists in directory.
    Only mkdir and stat: opening a file would queue an fput of our own."""
    os.mkdir(os.path.join(directory, mark))
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(os.path.join(directory, wait_for)):
        if time.monotonic() > deadline:
            raise WorkloadError("nobody made %s within %d s" % (wait_for, timeout_s))
        time.sleep(0.05)


# ----------------------------------------------------------------- output

def _comm():
    try:
        with open("/proc/self/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def base_record(workload):
    """Fields every ground-truth object starts with."""
    return {
        "workload": workload,
        "pid": os.getpid(),
        "tid": threading.get_native_id(),
        "comm": _comm(),
        "machine": machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "clock": "CLOCK_MONOTONIC",
    }


def expect(callback, notify, **extra):
    d = {"callback": callback, "notify": notify,
         "notify_name": NOTIFY_NAMES.get(notify, str(notify))}
    d.update(extra)
    return d


def emit(record, out=None):
    """Write the ground truth: last line of stdout, or the --out file."""
    line = json.dumps(record, sort_keys=True)
    if out:
        tmp = "%s.tmp.%d" % (out, os.getpid())
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, out)
    else:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


# ----------------------------------------------------------------- argparse

def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer: %r" % text)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0: %r" % text)
    return v


def nonneg_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer: %r" % text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0: %r" % text)
    return v


def parser(name, description):
    p = argparse.ArgumentParser(prog=name + ".py", description=description)
    p.add_argument("--out", metavar="FILE",
                   help="write the ground-truth JSON to FILE instead of stdout")
    return p


def run(name, main):
    """Call main() and turn failures into one stderr line + exit status."""
    try:
        code = main()
    except WorkloadError as e:
        sys.stderr.write("%s: %s\n" % (name, e))
        code = e.code
    except OSError as e:
        sys.stderr.write("%s: %s\n" % (name, e))
        code = EXIT_FAIL
    except KeyboardInterrupt:
        sys.stderr.write("%s: interrupted\n" % name)
        code = 130
    except Exception as e:  # a bug: still one line, unless asked for more
        if os.environ.get("TWTRACE_WL_TRACEBACK"):
            raise
        sys.stderr.write("%s: internal error: %s: %s (set TWTRACE_WL_TRACEBACK=1 "
                         "for a traceback)\n" % (name, type(e).__name__, e))
        code = EXIT_FAIL
    sys.exit(code or 0)
