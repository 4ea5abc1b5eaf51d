"""Start a tracer, know when it is ready, stop it.

Each tracer is one process whose BPF programs, CPU time and memory the
harness reads from /proc. Ready means: twtrace record printed its "tracing"
line, twtrace top its first table, bpftrace its "Attaching N probes" line.
"""
import os
import platform
import re
import signal
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
READY_TIMEOUT = 900  # s: compiling under TCG takes a minute or two
STOP_TIMEOUT = 300

RECORD_READY = re.compile(r"^twtrace: tracing task_work")
BPFTRACE_READY = re.compile(r"^Attaching (\d+) probes?")
ANY_LINE = re.compile(r"\S")


def bpftrace_script():
    # bpftrace does fentry only where the kernel has BPF trampolines and
    # bpftrace supports them; on arm64 both twtrace and it use kprobes.
    name = "fentry.bt" if platform.machine() == "x86_64" else "kprobe.bt"
    return os.path.join(HERE, "bpftrace", name)


def config(kind, outfile=None, interval=None):
    """(argv, which stream says ready, ready pattern) for a tracer kind."""
    if kind == "top":
        return ["twtrace", "top", "1"], "stdout", ANY_LINE
    if kind == "top-json":
        return ["twtrace", "top", "--json", str(interval or 1)], "stdout", ANY_LINE
    if kind in ("record", "events"):
        argv = ["twtrace", "record", "-o", outfile]
        if kind == "events":
            argv.append("--events")
        if interval:
            argv += ["--interval", str(interval)]
        return argv, "stderr", RECORD_READY
    if kind == "bpftrace":
        return ["bpftrace", bpftrace_script()], "stdout", BPFTRACE_READY
    raise ValueError("unknown tracer kind %r" % kind)


def tail_lines(f, alive, pause=0.2):
    """Whole lines of a file another process is still writing, as they come,
    until it stops (alive() false) and the rest is read."""
    part = ""
    while True:
        chunk = f.readline()
        if chunk:
            part += chunk
            if part.endswith("\n"):
                yield part
                part = ""
            continue
        if not alive():
            rest = f.read()
            for line in (part + rest).splitlines(True):
                yield line
            f.close()
            return
        time.sleep(pause)


class Tracer:
    """A running tracer whose output lines are watched, and kept only as a
    short tail (a full copy of top's output would cost the guest's memory)."""

    def __init__(self, kind, outfile=None, interval=None, on_line=None, spool=False):
        """spool: the tracer writes its stdout to a file that is read as it
        grows, so a reader slower than the tracer never blocks it (a pipe
        would: the long run's harness parses every line on the same CPU)."""
        self.kind = kind
        self.outfile = outfile
        argv, self.ready_stream, self.ready_re = config(kind, outfile, interval)
        self.on_line = on_line
        self.ready_at = None
        self.ready_event = threading.Event()
        self.tail = {"stdout": [], "stderr": []}
        self.t_start = time.monotonic()
        self.spool = None
        stdout = subprocess.PIPE
        if spool:
            fd, self.spool = tempfile.mkstemp(prefix="twbench-%s-" % kind, suffix=".out")
            stdout = fd
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout,
                                     stderr=subprocess.PIPE, universal_newlines=True)
        self.pid = self.proc.pid
        if spool:
            os.close(fd)
            out = tail_lines(open(self.spool), lambda: self.proc.poll() is None)
        else:
            out = self.proc.stdout
        self.readers = [threading.Thread(target=self._read, args=(name, stream), daemon=True)
                        for name, stream in (("stdout", out), ("stderr", self.proc.stderr))]
        for t in self.readers:
            t.start()

    def _read(self, name, stream):
        for line in stream:
            if not self.ready_event.is_set() and name == self.ready_stream \
                    and self.ready_re.search(line):
                self.ready_at = time.monotonic()
                self.ready_event.set()
            if self.on_line:
                self.on_line(name, line, time.monotonic())
            tail = self.tail[name]
            tail.append(line)
            if len(tail) > 40:
                del tail[:20]

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Seconds from start to ready; raises if it died or never got there."""
        deadline = time.monotonic() + timeout
        while not self.ready_event.wait(0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("%s did not get ready (rc %s): %s" % (
                    self.kind, self.proc.returncode, self.tail_text()))
        return self.ready_at - self.t_start

    def tail_text(self):
        return " | ".join(l.strip() for l in (self.tail["stderr"] + self.tail["stdout"])[-8:])

    def stop(self):
        """SIGINT (each tracer's clean stop: files completed, maps printed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self.readers:
            t.join(120 if self.spool else 30)
        if self.spool:
            os.unlink(self.spool)
        return self.proc.returncode
