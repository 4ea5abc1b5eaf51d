"""`twtrace try`: the README's first command."""
from __future__ import annotations

import os
import sys
import tempfile

from twtrace.errors import UserError

DEMO = "examples/demo.py"


def main(duration: float, kernel: str | None) -> int:
    if duration <= 0:
        raise UserError("--duration must be positive")
    from twtrace.doctor import can_trace_reason

    reason = can_trace_reason()
    if reason is None:
        return trace_here(duration)
    from twtrace.vm import cells
    from twtrace.vm.cli import run_in_guest
    from twtrace.vm.machine import PROJECT

    print(f"twtrace: this host cannot trace: {reason}", file=sys.stderr)
    print("twtrace: running the same inside a guest VM instead, with a demo workload "
          f"({DEMO})", file=sys.stderr)
    script = (f"python3 {PROJECT}/{DEMO} --seconds {duration + 30:g} >/dev/null & "
              f"twtrace record -o /tmp/try.jsonl --duration {duration:g} && "
              f"echo '[VM] twtrace report of the guest:' && twtrace report /tmp/try.jsonl; "
              f"rc=$?; kill %1 2>/dev/null; exit $rc")
    return run_in_guest(["sh", "-c", script], cells.find_cell(kernel, None), interactive=False)


def trace_here(duration: float) -> int:
    from rich.console import Console

    from twtrace import record
    from twtrace.recordfile import read_record
    from twtrace.report import render_report

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "try.jsonl")
        rc = record.run(record.RecordOptions(output=path, duration=duration))
        render_report(read_record(path, keep_events=False), Console())
    return rc
