"""The guest side of the VM harness (runs inside the guest, stdlib only,
Python 3.9+ because each guest brings its own Python).

Agent mode: read one JSON request per line from the virtio-serial port, run
the command, stream its output back as JSON lines, then report its exit status.
Console mode (--console SPEC): run one command on the serial console as its
controlling terminal (so interactive programs work), write its exit status
next to the spec, and return.
"""
import base64
import ctypes
import fcntl
import glob
import json
import os
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

PORT_NAME = "org.twtrace.agent"
CTL_PORT = "org.twtrace.ctl"  # console mode: terminal size changes from the host

MOUNTS = (  # (fstype, target); failures are ignored: not every kernel has every fs
    ("proc", "/proc"), ("sysfs", "/sys"), ("debugfs", "/sys/kernel/debug"),
    ("tracefs", "/sys/kernel/tracing"), ("bpf", "/sys/fs/bpf"), ("devpts", "/dev/pts"),
    ("tmpfs", "/dev/shm"), ("tmpfs", "/run"),
)


def init_system():
    libc = ctypes.CDLL(None, use_errno=True)
    for fstype, target in MOUNTS:
        if not os.path.isdir(target):
            os.makedirs(target, exist_ok=True)
        libc.mount(fstype.encode(), target.encode(), fstype.encode(), 0, None)
    import socket
    socket.sethostname("twtrace-guest")
    params = {}
    with open("/proc/cmdline") as f:
        for tok in f.read().split():
            if tok.startswith("twtrace.") and "=" in tok:
                key, value = tok[len("twtrace."):].split("=", 1)
                params[key] = value
    return params


def find_port(name=PORT_NAME):
    for name_file in glob.glob("/sys/class/virtio-ports/*/name"):
        with open(name_file) as f:
            if f.read().strip() == name:
                return "/dev/" + name_file.split("/")[-2]
    return None


class Channel:
    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR)
        self.lock = threading.Lock()
        self.buf = b""

    def send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        with self.lock:
            while data:
                data = data[os.write(self.fd, data):]

    def recv(self):
        while b"\n" not in self.buf:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                # The host is not connected yet (or reconnecting): poll.
                time.sleep(0.05)
                continue
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


def pump(chan, rid, stream, fd):
    while True:
        data = os.read(stream.fileno(), 65536)
        if not data:
            return
        chan.send({"id": rid, "op": "out", "fd": fd, "data": base64.b64encode(data).decode()})


def oom_kills():
    """The kernel's count of OOM kills so far (None before 4.13)."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def was_oom_killed(before, rc):
    after = oom_kills()
    return rc == -signal.SIGKILL and None not in (before, after) and after > before


def run(chan, req):
    rid = req["id"]
    ooms = oom_kills()
    env = dict(os.environ)
    env.update(req.get("env") or {})
    start = time.monotonic()
    try:
        proc = subprocess.Popen(req["argv"], cwd=req.get("cwd") or "/root", env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        chan.send({"id": rid, "op": "exit", "rc": 127, "error": str(e), "timed_out": False})
        return
    pumps = [threading.Thread(target=pump, args=(chan, rid, s, n))
             for s, n in ((proc.stdout, 1), (proc.stderr, 2))]
    for t in pumps:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=req.get("timeout"))
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for t in pumps:
        t.join()
    chan.send({"id": rid, "op": "exit", "rc": proc.returncode, "timed_out": timed_out,
               "oom_killed": not timed_out and was_oom_killed(ooms, proc.returncode),
               "elapsed": time.monotonic() - start})


def agent():
    port = find_port()
    if port is None:
        print("twtrace agent: no virtio port named " + PORT_NAME, file=sys.stderr)
        return 1
    chan = Channel(port)
    uname = os.uname()
    chan.send({"op": "ready", "release": uname.release, "machine": uname.machine,
               "python": sys.version.split()[0], "uptime": open("/proc/uptime").read().split()[0]})
    while True:
        req = chan.recv()
        if req.get("op") == "poweroff":
            chan.send({"id": req.get("id"), "op": "bye"})
            return 0
        if req.get("op") == "run":
            run(chan, req)


def set_winsize(tty, rows, cols):
    """Resize the tty: the kernel sends SIGWINCH to its foreground job."""
    fd = os.open(tty, os.O_RDWR | os.O_NOCTTY)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    finally:
        os.close(fd)


def resize_loop(chan, tty):
    while True:
        msg = chan.recv()
        rows, cols = int(msg.get("rows", 0)), int(msg.get("cols", 0))
        if 0 < rows < 10000 and 0 < cols < 10000:
            set_winsize(tty, rows, cols)


def start_resizer(tty):
    port = find_port(CTL_PORT)
    if port is None:  # an older host: the size at start is all there is
        return
    threading.Thread(target=resize_loop, args=(Channel(port), tty), daemon=True).start()


def console(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    tty = "/dev/" + spec.get("tty", "ttyS0")
    env = dict(os.environ, TERM=spec.get("term") or "vt100")
    env.update(spec.get("env") or {})

    def become_session_leader():
        os.setsid()
        fd = os.open(tty, os.O_RDWR)
        fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
        for target in (0, 1, 2):
            os.dup2(fd, target)
        rows, cols = spec.get("rows"), spec.get("cols")
        if rows and cols:
            subprocess.call(["stty", "rows", str(rows), "cols", str(cols)])

    ooms = oom_kills()
    start_resizer(tty)
    try:
        proc = subprocess.Popen(spec["argv"], cwd=spec.get("cwd") or "/root", env=env,
                                preexec_fn=become_session_leader)
        rc = proc.wait()
        if was_oom_killed(ooms, rc):
            print("twtrace vm: the command was killed by the guest's OOM killer "
                  "(give the guest more memory: --memory)", file=sys.stderr)
    except OSError as e:
        print("twtrace vm: cannot run %s: %s" % (spec["argv"][0], e), file=sys.stderr)
        rc = 127
    with open(spec_path + ".rc", "w") as f:
        f.write("%d\n" % (rc if rc >= 0 else 128 - rc))
    return 0


def main():
    params = init_system()
    try:
        if params.get("mode") == "cmd":
            return console(params["spec"])
        return agent()
    finally:
        os.sync()


if __name__ == "__main__":
    sys.exit(main())
