"""scripts/bench's host side: build the cell's benchmark guest (its packages
plus bpftrace and bpftool), boot it once, run benchmarks.run inside, and
leave the results in benchmarks/results/."""
import sys
import time
from pathlib import Path

from twtrace.errors import UserError
from twtrace.vm import builder, cells
from twtrace.vm.machine import PROJECT, Machine, VMError

RESULTS = PROJECT / "benchmarks" / "results"
TIMEOUT_S = 6 * 3600


def result_path(cell_name, mode, day=None):
    day = day or time.strftime("%Y-%m-%d")
    suffix = "" if mode == "full" else "-" + mode
    return RESULTS / ("%s-%s%s.json" % (cell_name, day, suffix))


def main(argv):
    cell_name, mode, extra = argv[0], argv[1], argv[2:]
    try:
        base = cells.CELLS.get(cell_name) or cells.find_cell(cell_name)
    except UserError as e:
        print("scripts/bench: --cell: %s" % e, file=sys.stderr)
        return 2
    cell = cells.bench_cell(base)
    guest = builder.build(cell)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = result_path(base.name, mode)
    args = ["python3", "-m", "benchmarks.run", "--cell", base.name, "--out", str(out)]
    args += {"quick": ["--quick"], "long": ["--long"]}.get(mode, []) + extra
    print("bench: %s guest (kernel %s, bcc %s), %s mode" % (
        cell.name, guest.kernel_release, guest.info["bcc"], mode), file=sys.stderr, flush=True)

    def stream(fd, data):
        (sys.stdout if fd == 1 else sys.stderr).buffer.write(data)
        (sys.stdout if fd == 1 else sys.stderr).flush()

    try:
        with Machine(cell, guest=guest, memory_mb=1024) as vm:
            res = vm.run(args, timeout=TIMEOUT_S, cwd=str(PROJECT), stream=stream)
    except VMError as e:
        raise UserError(str(e))
    if res.rc == 0:
        print("bench: results in %s" % out.relative_to(PROJECT), file=sys.stderr)
    return res.rc


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as e:
        print("bench: %s" % e, file=sys.stderr)
        sys.exit(1)
