"""What a source hands the view each interval: one snapshot group (the
record format's snapshot line and its task and func lines, counters
cumulative since tracing began) plus the extras the header shows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

Line = Dict[str, Any]


@dataclass
class Meta:
    """Facts about the traced host that do not change during a run."""

    hostname: str = "?"
    kernel: str = "?"
    arch: str = "?"
    probe_mode: str = "?"
    start_ns: int = 0          # when tracing began: counters were zero then
    replay: Optional[str] = None  # the recording's path when replaying
    speed: Optional[float] = None  # replay pace (0 = as fast as possible)


@dataclass
class Sample:
    snapshot: Line
    tasks: List[Line] = field(default_factory=list)
    funcs: List[Line] = field(default_factory=list)
    lost: Optional[int] = None      # cumulative lost events, when known
    evicted: Optional[int] = None   # cumulative map evictions, when known
    skipped: Optional[int] = None   # cumulative probe runs the kernel skipped, where it counts
    bpf: Optional[Dict[str, int]] = None  # cumulative {"run_time_ns", "run_cnt"}
    cpu_s: Optional[float] = None   # cumulative CPU seconds of twtrace itself

    @property
    def ts_ns(self) -> int:
        return self.snapshot["ts_ns"]

    def lines(self) -> List[Line]:
        return [self.snapshot, *self.tasks, *self.funcs]


def group_samples(lines: List[Line]) -> List[Sample]:
    """Split record lines into snapshot groups (other line types end a group
    and are otherwise ignored)."""
    out: List[Sample] = []
    current: Optional[Sample] = None
    for line in lines:
        kind = line.get("type")
        if kind == "snapshot":
            current = Sample(line)
            out.append(current)
        elif kind in ("task", "func") and current is not None:
            (current.tasks if kind == "task" else current.funcs).append(line)
        else:
            current = None
    return out
