"""Run the VM suite on every cell (or some): `scripts/test` with no arguments.

Each cell is a separate pytest process with its own --basetemp and log,
run N at a time (default 2: two single-CPU guests finish in about the time of
one). A cell first builds its guest (timed apart), then runs tests/vm. A cell
whose guest cannot be built or booted FAILS; nothing is skipped in CI.

Without --cells the host's own tests (everything but tests/vm) run once first.

usage: python -m twtrace.vm.matrix [--cells C1,C2] [--jobs N] [--out DIR] [PYTEST ARGS]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from twtrace.vm import builder, cells

PROJECT = Path(__file__).resolve().parents[2]
CELL_TIMEOUT = float(os.environ.get("TWTRACE_CELL_TIMEOUT", "2700"))


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _timed_run(argv: list, log: Path, timeout: float, procs: list) -> tuple:
    """Run argv with output to log; (returncode or None on timeout, seconds)."""
    t0 = time.monotonic()
    with open(log, "ab") as f:
        f.write(f"$ {' '.join(argv)}\n".encode())
        f.flush()
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=PROJECT, start_new_session=True)
        procs.append(p)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # its own session: pytest and its QEMU
            p.wait()
            f.flush()
            where = running_test(log.read_text(errors="replace"))
            f.write(f"\n*** killed after {timeout:.0f} s"
                    f"{', in ' + where if where else ''}\n".encode())
            rc = None
        finally:
            procs.remove(p)
    return rc, time.monotonic() - t0


def running_test(log_text: str):
    """The test pytest -v had started and not finished, from its log."""
    last = None
    for line in log_text.splitlines():
        if line.startswith("tests/") and "::" in line:
            done = any(w in line for w in ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL"))
            last = None if done else line.split()[0]
    return last


def _junit_counts(path: Path) -> dict:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    c = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    c["passed"] = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    return c


class CellRun:
    def __init__(self, cell: cells.Cell, out: Path):
        self.cell = cell
        self.dir = out / cell.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "pytest.log"
        self.log.write_bytes(b"")
        self.build_s = self.suite_s = 0.0
        self.counts: dict = {}
        self.status = "pending"
        self.note = ""
        self.guest_info: dict = {}

    def run(self, pytest_args: list, procs: list) -> None:
        py = sys.executable
        t_end = time.monotonic() + CELL_TIMEOUT
        build = [py, "-c", "import sys; from twtrace.vm import builder, cells; "
                 f"builder.build(cells.ALL_CELLS[{self.cell.name!r}])"]
        rc, self.build_s = _timed_run(build, self.log, CELL_TIMEOUT, procs)
        if rc != 0:
            self.status, self.note = "FAILED", "guest build failed" if rc is not None else "build timed out"
            return
        g = builder.load(self.cell)
        if g:
            self.guest_info = {"kernel_release": g.kernel_release, "bcc": g.info.get("bcc"),
                               "python": g.info.get("python")}
        junit = self.dir / "junit.xml"
        argv = [py, "-m", "pytest", "tests/vm", "--vm-kernel", self.cell.name,
                "--basetemp", str(self.dir / "tmp"), f"--junitxml={junit}", "-v",
                *pytest_args]
        rc, self.suite_s = _timed_run(argv, self.log, max(60.0, t_end - time.monotonic()), procs)
        self.counts = _junit_counts(junit)
        bad = self.counts.get("failures", 0) + self.counts.get("errors", 0)
        if rc is None:
            self.status, self.note = "FAILED", f"timed out after {CELL_TIMEOUT:.0f} s"
        elif rc == 0 and not bad and self.counts.get("tests"):
            self.status = "passed"
        else:
            self.status = "FAILED"
            if not self.counts:
                self.note = f"pytest exit status {rc}, no results"

    def row(self) -> dict:
        return {"cell": self.cell.name, "kernel": self.guest_info.get("kernel_release", self.cell.kernel),
                "arch": self.cell.arch, "bcc": self.guest_info.get("bcc", "?"),
                "python": self.guest_info.get("python", "?"), "status": self.status,
                "build_s": round(self.build_s, 1), "suite_s": round(self.suite_s, 1),
                **{k: self.counts.get(k, 0) for k in ("passed", "failures", "errors", "skipped")},
                "note": self.note, "log": str(self.log)}


def _host_tests(out: Path, pytest_args: list) -> dict:
    """Unit (and tmux) tests: once, on the host."""
    d = out / "host"
    d.mkdir(exist_ok=True)
    log, junit = d / "pytest.log", d / "junit.xml"
    log.write_bytes(b"")
    print("matrix: host tests (everything but tests/vm) started", flush=True)
    rc, secs = _timed_run([sys.executable, "-m", "pytest", "tests", "--ignore=tests/vm", "-q",
                           f"--junitxml={junit}", *pytest_args], log, CELL_TIMEOUT, [])
    c = _junit_counts(junit)
    ok = rc == 0 and c.get("tests") and not (c["failures"] or c["errors"])
    print(log.read_text(errors="replace").rstrip().splitlines()[-1] if ok else
          "\n".join(f"  host| {l}" for l in log.read_text(errors="replace").splitlines()[-40:]),
          flush=True)
    return {"cell": "host (unit, tmux)", "kernel": os.uname().release, "arch": cells.host_arch(),
            "bcc": "-", "python": "%d.%d" % sys.version_info[:2],
            "status": "passed" if ok else "FAILED", "build_s": 0.0, "suite_s": round(secs, 1),
            **{k: c.get(k, 0) for k in ("passed", "failures", "errors", "skipped")},
            "note": "" if c else f"pytest exit status {rc}, no results", "log": str(log)}


def _select(spec: str | None) -> list:
    if not spec:
        chosen = list(cells.ALL_CELLS.values())
    else:
        chosen = []
        for item in spec.split(","):
            kernel, _, arch = item.strip().partition("/")
            chosen.append(cells.find_cell(kernel, arch or None))
    # Longest first, so the two lanes end together (greedy: each lane takes
    # the longest cell left).
    return sorted(dict.fromkeys(chosen), key=lambda c: -_expected_s(c))


# Suite seconds per cell in a full run on the 2-core development machine
# (2026-12-01); only their order matters.  Unlisted cells: by their kind.
EXPECTED_S = {"bookworm-amd64": 1490, "trixie-arm64": 1174, "bullseye-amd64": 1041,
              "bookworm-arm64": 847, "sid-amd64": 823, "trixie-amd64": 780,
              "bookworm-arm64-smp2": 490, "trixie-amd64-smp2": 351}


def _expected_s(c) -> float:
    if c.name in EXPECTED_S:
        return EXPECTED_S[c.name]
    if c.name == cells.DEFAULT_CELL:
        return 1500
    return (500 if c.cpus > 1 else 1000) * (1.2 if c.arch != cells.host_arch() else 1.0)


def _table(rows: list) -> str:
    head = ("cell", "kernel", "bcc", "python", "build", "suite", "result")
    lines = [head]
    for r in rows:
        res = (f"{r['passed']} passed" + (f", {r['failures']} failed" if r["failures"] else "")
               + (f", {r['errors']} errors" if r["errors"] else "")
               + (f", {r['skipped']} skipped" if r["skipped"] else ""))
        if r["status"] != "passed":
            res = f"FAILED: {res}" + (f" ({r['note']})" if r["note"] else "")
        lines.append((r["cell"], r["kernel"], r["bcc"], r["python"], f"{r['build_s']:.0f} s",
                      f"{r['suite_s']:.0f} s", res))
    w = [max(len(str(l[i])) for l in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(v).ljust(w[i]) for i, v in enumerate(l)).rstrip() for l in lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/test", allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", help="comma-separated KERNEL[/ARCH] or cell names (default: all)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("TWTRACE_TEST_JOBS", "2")))
    ap.add_argument("--out", help="results directory (default: a new one under /tmp)")
    args, pytest_args = ap.parse_known_args(argv)
    args.pytest_args = pytest_args
    out = Path(args.out or tempfile.mkdtemp(prefix="twtrace-matrix-"))
    out.mkdir(parents=True, exist_ok=True)
    runs = [CellRun(c, out) for c in _select(args.cells)]
    t0 = time.monotonic()
    host = None
    if not args.cells:
        host = _host_tests(out, pytest_args)
    print(f"matrix: {len(runs)} cells, {args.jobs} at a time; logs in {out}", flush=True)
    todo = list(runs)
    lock = threading.Lock()
    procs: list = []

    def lane():
        while True:
            with lock:
                if not todo:
                    return
                r = todo.pop(0)
            print(f"matrix: {r.cell.name} started", flush=True)
            try:
                r.run(args.pytest_args, procs)
            except Exception as e:  # a runner bug must fail the cell, not vanish
                r.status, r.note = "FAILED", f"runner error: {e}"
            print(f"matrix: {r.cell.name} {r.status} (build {r.build_s:.0f} s, suite "
                  f"{r.suite_s:.0f} s, {r.counts.get('passed', 0)} passed)", flush=True)
            if r.status != "passed":
                tail = r.log.read_text(errors="replace").splitlines()[-40:]
                print("\n".join(f"  {r.cell.name}| {l}" for l in tail), flush=True)

    lanes = [threading.Thread(target=lane, daemon=True) for _ in range(max(1, args.jobs))]
    # A supervisor's SIGTERM (CI's time limit) stops the cells as Ctrl-C does:
    # each runs in its own session, which would outlive the matrix otherwise.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    try:
        for t in lanes:
            t.start()
        for t in lanes:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        for p in list(procs):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        print("matrix: interrupted", flush=True)
        return 130
    wall = time.monotonic() - t0
    rows = [r.row() for r in runs]
    if host:
        rows.insert(0, host)
    (out / "matrix.json").write_text(json.dumps({"wall_s": round(wall, 1), "jobs": args.jobs,
                                                 "cells": rows}, indent=1))
    print("\n" + _table(rows), flush=True)
    passed = sum(r["passed"] for r in rows)
    failed = sum(r["failures"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    skipped = sum(r["skipped"] for r in rows)
    bad_cells = [r["cell"] for r in rows if r["status"] != "passed"]
    parts = [f"{failed} failed"] if failed else []
    parts.append(f"{passed} passed")
    if skipped:
        parts.append(f"{skipped} skipped")
    if errors:
        parts.append(f"{errors} errors")
    if bad_cells:
        parts.append(f"{len(bad_cells)} cells failed ({', '.join(bad_cells)})")
    print(f"{'=' * 10} {', '.join(parts)} on {len(rows)} cells in {wall:.1f}s "
          f"({_hms(wall)}) {'=' * 10}", flush=True)
    return 1 if bad_cells else 0


if __name__ == "__main__":
    sys.exit(main())
