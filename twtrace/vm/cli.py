"""`twtrace vm`: run a command in a guest, for people (and the README's fallback)."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

from twtrace.errors import UserError
from twtrace.signals import quiet_exit
from twtrace.vm import builder, cells
from twtrace.vm.machine import Machine, VMError


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def banner(cell: cells.Cell, guest: builder.Guest) -> str:
    return (f"twtrace vm: [VM] running in a QEMU guest (emulated, TCG): Debian {cell.suite}, "
            f"kernel {guest.kernel_release}, {cell.arch_info.uname}, bcc {guest.info['bcc']}, "
            f"Python {guest.info['python']}")


def list_cells() -> int:
    for c in cells.CELLS.values():
        g = builder.load(c)
        state = f"built: kernel {g.kernel_release}, bcc {g.info['bcc']}" if g else "not built yet"
        print(f"{c.name:16} --kernel {c.kernel:5} --arch {c.arch:6} {state}")
    return 0


def run_in_guest(argv: List[str], cell: cells.Cell, memory: int = 1024,
                 interactive: Optional[bool] = None) -> int:
    if os.geteuid() != 0:
        raise UserError("twtrace vm needs root (it builds guests in /var/cache/twtrace)")
    guest = builder.build(cell)
    print(banner(cell, guest), file=sys.stderr, flush=True)
    cwd = os.getcwd()
    m = Machine(cell, guest=guest, memory_mb=memory, shares=[cwd])
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
    # SIGTERM, SIGINT, SIGHUP: unwind, so the finally below stops the guest
    # (and QEMU dies with us on SIGKILL: PR_SET_PDEATHSIG in machine.py).
    old = {s: signal.signal(s, quiet_exit) for s in STOP_SIGNALS}
    try:
        if interactive:
            return m.run_on_console(argv, cwd)
        m.start()
        out = {1: sys.stdout.buffer, 2: sys.stderr.buffer}

        def stream(fd, data):
            out[fd].write(data)
            out[fd].flush()

        result = m.run(argv, timeout=24 * 3600, cwd=cwd, stream=stream)
        if result.why_killed():
            print(f"twtrace vm: the command was {result.why_killed()}", file=sys.stderr)
        return result.rc if result.rc >= 0 else 128 - result.rc
    except VMError as e:
        raise UserError(str(e).splitlines()[0] + " (run with the same command to see the console)")
    finally:
        m.cleanup()
        for s, handler in old.items():
            signal.signal(s, handler)


def main(args: List[str], kernel: Optional[str], arch: Optional[str], memory: int,
         rebuild: bool, list_only: bool) -> int:
    if list_only:
        return list_cells()
    cell = cells.find_cell(kernel, arch)
    if rebuild:
        builder.build(cell, force=True)
    if not args:
        raise UserError("give the command to run after --, e.g. twtrace vm -- twtrace doctor")
    return run_in_guest(args, cell, memory)
