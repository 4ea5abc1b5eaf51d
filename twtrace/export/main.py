"""`twtrace export --perfetto REC.jsonl -o OUT.pftrace`: checks, then writes."""
from __future__ import annotations

import os
import sys

from twtrace.atomicfile import write_atomic
from twtrace.errors import UserError


def _perfetto_available() -> None:
    try:
        import perfetto.protos.perfetto.trace.perfetto_trace_pb2  # noqa: F401
        import perfetto.trace_builder.proto_builder  # noqa: F401
    except ImportError:
        raise UserError("export --perfetto needs the perfetto and protobuf Python packages "
                        "(Python 3.10+): pip install 'twtrace[export]'") from None


def run(recording: str, output: str) -> int:
    from twtrace.export import perfetto, timeline
    from twtrace.recordfile import read_record

    _perfetto_available()
    if output == "-":
        raise UserError("-o: give a file name; a Perfetto trace is binary, not for a terminal")
    rec = read_record(recording)
    if not rec.header.get("events"):
        raise UserError(f"{recording}: recorded without --events, so there is no timeline to "
                        "export (twtrace record --events)")
    if not rec.events:
        raise UserError(f"{recording}: no add, callback, cancel or run lines; nothing to export")
    start = rec.header["start_ns"]
    end = start + rec.summary["duration_ns"]
    tl = timeline.build(rec.events, start, end)
    # 0600: the trace names the traced tasks; readers choose to widen it.
    write_atomic(output, lambda f: perfetto.write_trace(tl, f), mode=0o600)
    size = os.path.getsize(output)
    print(f"twtrace: wrote {output} ({size} bytes: {len(tl.threads)} threads, "
          f"{len(rec.events)} events); open it at ui.perfetto.dev (Open trace file)",
          file=sys.stderr)
    return 0
