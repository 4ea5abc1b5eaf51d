"""Boot a guest under QEMU (TCG) and run commands in it.

The guest's root is the cell's unpacked Debian tree, shared read-only over 9p
under a tmpfs overlay; host directories (the project, the caller's working
directory, an output directory) are shared read-write at their host paths, so
a path means the same thing on both sides. Commands go over a virtio-serial
port to the guest agent, which streams output back; the serial console is kept
in a log whose tail explains any boot failure, hang or panic.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import twtrace
from twtrace.errors import UserError
from twtrace.vm import builder
from twtrace.vm.cells import Cell

PROJECT = Path(twtrace.__file__).resolve().parent.parent
BOOT_TIMEOUT = float(os.environ.get("TWTRACE_VM_BOOT_TIMEOUT", "120"))


class VMError(Exception):
    """The guest failed to boot, hung, or died; the message carries the console tail."""


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    elapsed: float
    timed_out: bool = False
    oom_killed: bool = False

    def why_killed(self) -> str:
        """"" or what ended the command: the time limit or the OOM killer."""
        if self.timed_out:
            return "killed at its time limit"
        if self.oom_killed:
            return "killed by the guest's OOM killer (more memory: --memory)"
        return ""

    def check(self) -> "Result":
        if self.rc != 0:
            why = f", {self.why_killed()}" if self.why_killed() else ""
            raise AssertionError(f"guest command failed (rc={self.rc}{why})\n--- stdout\n"
                                 f"{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}")
        return self


def require_qemu(cell: Cell) -> str:
    qemu = shutil.which(cell.arch_info.qemu)
    if not qemu:
        raise UserError(f"{cell.arch_info.qemu} not found: install {cell.arch_info.qemu_pkg} "
                        f"(apt-get install --no-install-recommends {cell.arch_info.qemu_pkg})")
    return qemu


def _die_with_parent() -> None:
    """In QEMU's child before exec: the kernel kills it when twtrace dies,
    however twtrace dies (SIGKILL included), so no guest is left running."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _shares(paths) -> list:
    """Distinct directories to share, dropping any inside another one."""
    out = []
    for p in sorted({Path(p).resolve() for p in paths}, key=lambda p: len(p.parts)):
        if str(p) == "/" or any(p == q or q in p.parents for q in out):
            continue
        if any(c in str(p) for c in " ,:\t\n"):
            raise UserError(f"cannot share {p} with the guest: its path has a space, comma or colon")
        out.append(p)
    return out


@dataclass
class Machine:
    cell: Cell
    memory_mb: int = 1024
    shares: list = field(default_factory=list)
    guest: builder.Guest = None
    boot_s: float = 0.0
    writable_root: bool = False  # only for the builder's one-time precompile
    # (host_port, guest_port): TCP from 127.0.0.1:host_port reaches the guest's
    # guest_port through QEMU user networking (the guest brings eth0 up with
    # twtrace/vm/guest/net.py). restrict=on: the guest reaches nothing outside.
    forwards: list = field(default_factory=list)

    def __post_init__(self):
        self.workdir = Path(tempfile.mkdtemp(prefix=f"twtrace-vm-{self.cell.name}-"))
        self.console_log = self.workdir / "console.log"
        self.proc = None
        self.conn = None
        self.buf = b""
        self.next_id = 1
        self.ready = {}

    # -- qemu ---------------------------------------------------------------
    def _qemu_argv(self, mode: str, spec: Path | None, serial: list) -> list:
        arch = self.cell.arch_info
        g = self.guest
        shares = _shares([PROJECT, *self.shares])
        append = [f"console={arch.console}", "panic=-1", "loglevel=3", "quiet",
                  f"twtrace.mode={mode}", f"twtrace.project={PROJECT}",
                  f"twtrace.stage2={PROJECT}/twtrace/vm/guest/stage2.sh",
                  *arch.kernel_args, *os.environ.get("TWTRACE_VM_APPEND", "").split()]
        if self.writable_root:
            append.append("twtrace.rootrw=1")
        if spec:
            append.append(f"twtrace.spec={spec}")
        argv = [require_qemu(self.cell), *arch.machine, "-accel", "tcg,thread=multi",
                "-smp", str(self.cell.cpus), "-m", str(self.memory_mb), "-nodefaults", "-no-user-config",
                "-display", "none", "-no-reboot",
                "-kernel", str(g.kernel), "-initrd", str(g.initrd),
                "-fsdev", f"local,id=root,path={g.root},{'' if self.writable_root else 'readonly=on,'}security_model=none,multidevs=remap",
                "-device", "virtio-9p-pci,fsdev=root,mount_tag=root",
                *serial]
        for i, path in enumerate(shares):
            argv += ["-fsdev", f"local,id=s{i},path={path},security_model=none,multidevs=remap",
                     "-device", f"virtio-9p-pci,fsdev=s{i},mount_tag=s{i}"]
            append.append(f"twtrace.share=s{i}:{path}")
        if self.forwards:
            fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in self.forwards)
            # romfile= : no boot ROM (PXE) is needed, and it may not be installed
            argv += ["-netdev", f"user,id=n0,restrict=on,{fwd}",
                     "-device", "virtio-net-pci,netdev=n0,romfile="]
        argv += ["-append", " ".join(append)]
        return argv

    def start(self) -> "Machine":
        self.guest = self.guest or builder.build(self.cell)
        sock_path = self.workdir / "agent.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        listener.listen(1)
        serial = ["-chardev", f"socket,id=agent,path={sock_path}",
                  "-device", "virtio-serial-pci",
                  "-device", "virtserialport,chardev=agent,name=org.twtrace.agent",
                  "-serial", f"file:{self.console_log}"]
        argv = self._qemu_argv("agent", None, serial)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        listener.settimeout(0.2)
        deadline = t0 + BOOT_TIMEOUT
        try:
            while self.conn is None:
                self._check_alive("while starting")
                if time.monotonic() > deadline:
                    raise self._fail(f"QEMU did not connect within {BOOT_TIMEOUT:.0f} s")
                try:
                    self.conn, _ = listener.accept()
                except socket.timeout:
                    pass
        finally:
            listener.close()
        msg = self._recv(deadline, "booting")
        if msg.get("op") != "ready":
            raise self._fail(f"unexpected first message from the guest: {msg}")
        self.ready = msg
        self.boot_s = time.monotonic() - t0
        return self

    def _check_alive(self, doing: str) -> None:
        if self.proc and self.proc.poll() is not None:
            out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
            raise self._fail(f"QEMU exited with status {self.proc.returncode} {doing}"
                             + (f": {out.strip()[-500:]}" if out.strip() else ""))

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no console output)"

    def _fail(self, what: str) -> VMError:
        self.kill()
        return VMError(f"guest {self.cell.name}: {what}\n--- guest console (tail) ---\n"
                       f"{self.console_tail()}")

    # -- agent protocol -----------------------------------------------------
    def _recv(self, deadline: float, doing: str) -> dict:
        while b"\n" not in self.buf:
            self._check_alive(doing)
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail(f"no answer from the guest while {doing} (hung or panicked?)")
            self.conn.settimeout(min(left, 0.5))
            try:
                chunk = self.conn.recv(1 << 16)
            except socket.timeout:
                continue
            if not chunk:
                time.sleep(0.1)
                self._check_alive(doing)
                raise self._fail(f"the guest closed its channel while {doing}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def _send(self, obj: dict) -> None:
        self.conn.sendall((json.dumps(obj) + "\n").encode())

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.conn is not None

    def run(self, cmd, timeout: float = 120, cwd: str | None = None, env: dict | None = None,
            stream=None) -> Result:
        """Run cmd (argv list, or a string for the guest's sh) and wait for it.

        The guest kills the command after `timeout`; if the guest itself stops
        answering for longer, the VM is killed and VMError carries its console.
        """
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        rid = self.next_id
        self.next_id += 1
        self._send({"op": "run", "id": rid, "argv": argv, "cwd": cwd or str(Path.cwd()),
                    "env": env or {}, "timeout": timeout})
        out = {1: bytearray(), 2: bytearray()}
        deadline = time.monotonic() + timeout + 30
        doing = f"running {' '.join(argv)[:80]!r}"
        while True:
            msg = self._recv(deadline, doing)
            if msg.get("op") == "out":
                data = base64.b64decode(msg["data"])
                out[msg["fd"]] += data
                if stream:
                    stream(msg["fd"], data)
            elif msg.get("op") == "exit":
                return Result(msg["rc"], out[1].decode(errors="replace"),
                              out[2].decode(errors="replace") + msg.get("error", ""),
                              msg.get("elapsed", 0.0), msg.get("timed_out", False),
                              msg.get("oom_killed", False))

    def stop(self) -> None:
        if self.alive:
            try:
                self._send({"op": "poweroff", "id": 0})
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired, VMError):
                pass
        self.kill()

    def kill(self) -> None:
        if self.conn:
            self.conn.close()
            self.conn = None
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Machine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # -- console mode (people) ---------------------------------------------
    def run_on_console(self, argv: list, cwd: str) -> int:
        """Boot, run argv on the guest's serial console attached to this
        terminal (so interactive programs work), power off, return its status."""
        self.guest = self.guest or builder.build(self.cell)
        spec = self.workdir / "spec.json"
        size = shutil.get_terminal_size((80, 24))
        spec.write_text(json.dumps({
            "argv": argv, "cwd": cwd, "tty": self.cell.arch_info.console,
            "term": os.environ.get("TERM", "vt100"), "rows": size.lines, "cols": size.columns}))
        self.shares.append(self.workdir)
        ctl = _ResizeChannel(self.workdir / "ctl.sock")
        serial = ["-serial", "stdio", *ctl.qemu_args()]
        argv_q = self._qemu_argv("cmd", spec, serial)
        self.proc = subprocess.Popen(argv_q, preexec_fn=_die_with_parent)
        try:
            ctl.serve(self.proc)
            status = self.proc.wait()
        finally:
            ctl.close()
            self._end_console()
        rc_file = Path(str(spec) + ".rc")
        if not rc_file.exists():
            raise VMError(f"guest {self.cell.name}: the command did not finish "
                          f"(QEMU status {status})")
        return int(rc_file.read_text())

    def _end_console(self) -> None:
        # SIGTERM first: QEMU then restores the terminal it put in raw mode.
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _ResizeChannel:
    """Console mode: the host terminal's size, now and after each SIGWINCH,
    to the guest agent over a virtio-serial port (it sets the guest tty's)."""

    PORT = "org.twtrace.ctl"

    def __init__(self, path: Path):
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.conn = None
        self.old = None

    def qemu_args(self) -> list:
        return ["-chardev", f"socket,id=ctl,path={self.path}", "-device", "virtio-serial-pci",
                "-device", f"virtserialport,chardev=ctl,name={self.PORT}"]

    def serve(self, proc) -> None:
        """Accept QEMU's connection (made as it starts), then send sizes."""
        import signal

        self.listener.settimeout(0.2)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while self.conn is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                self.conn, _ = self.listener.accept()
            except socket.timeout:
                pass
        if self.conn is None:
            return
        self.old = signal.signal(signal.SIGWINCH, lambda *_: self.send())
        self.send()

    def send(self) -> None:
        try:  # the terminal itself: $COLUMNS/$LINES would hide a resize
            size = os.get_terminal_size(sys.stdout.fileno())
        except OSError:
            size = shutil.get_terminal_size((80, 24))
        try:
            self.conn.sendall(json.dumps({"rows": size.lines, "cols": size.columns})
                              .encode() + b"\n")
        except OSError:
            pass  # the guest is going away

    def close(self) -> None:
        import signal

        if self.old is not None:
            signal.signal(signal.SIGWINCH, self.old)
        for s in (self.conn, self.listener):
            if s:
                s.close()
