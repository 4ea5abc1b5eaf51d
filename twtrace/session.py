"""What `record` and `top` share: reading a started Loader into the record
format's lines, with callbacks that ran untimed settled (model.stale_items).

It sits between the loader (bcc) and the pure model, so neither needs the
other; the only thing it adds is asking /proc which tasks still exist.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Set, Tuple

from twtrace import model


def task_exists(pid: int, tid: int) -> bool:
    return os.path.exists(f"/proc/{pid}/task/{tid}")


class Session:
    def __init__(self, loader, comm: Optional[str] = None):
        self.loader = loader
        stack = loader.stack if loader.cfg.stacks else None
        self.snap = model.Snapshotter(loader.syms.name, loader.probed, comm, stack)
        self.settled = model.Settled()

    def read(self) -> Tuple[dict, List[dict]]:
        """(raw kernel state with settled callbacks counted, batch-timed
        callback lines for the items settled by this read)."""
        raw = self.loader.read()
        inflight = self.loader.inflight()
        gone = self.loader.forget_items(
            model.stale_items(inflight, raw["tasks"], _exited(inflight)))
        self.settled.add(gone)
        raw = self.settled.apply(raw)
        return raw, model.batch_callback_lines(gone, raw["tasks"], self.snap.fname)

    def lines(self, raw: dict, ts_ns: int, seq: int, final: bool) -> List[dict]:
        return self.snap.lines(raw, ts_ns, seq, final)


def _exited(inflight: Dict[int, dict]) -> Set[int]:
    # Only tasks with items still queued are looked up: usually none or few.
    tids = {(it["pid"], it["tid"]) for it in inflight.values()}
    return {tid for pid, tid in tids if not task_exists(pid, tid)}
