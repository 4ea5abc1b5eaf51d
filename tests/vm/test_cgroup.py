"""Containers: two workloads in two cgroup v2 groups, counted exactly per
cgroup against their own truth, and the --cgroup filter with one group and
with a parent of both (whose children are made after tracing starts)."""
import json

import pytest

from twtrace.recordfile import validate_line

FILES, ROUNDS = 12, 3
# Mount cgroup2 if the guest has not, and print where it is.
MOUNT = ("grep -q ' cgroup2 ' /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup; "
         "awk '$3 == \"cgroup2\" {print $2; exit}' /proc/mounts")


def workload(cg_dir, truth):
    """Moves itself into cg_dir, then becomes the workload (same pid); a
    failed move fails it."""
    return (f"sh -c 'echo $$ > {cg_dir}/cgroup.procs || exit 97; exec python3 examples/close_batch.py "
            f"--files {FILES} --rounds {ROUNDS} --out {truth}'")


@pytest.fixture(scope="module")
def cg(vm_session, tmp_path_factory):
    """(vm, tmp dir, cgroup2 mount) with /tw/a, /tw/b and /tw/p made."""
    vm = vm_session.get()
    root = vm.run(["sh", "-c", MOUNT], timeout=60)
    root.check()
    mnt = root.stdout.strip().splitlines()[-1]
    vm.run(["sh", "-c", f"mkdir -p {mnt}/tw/a {mnt}/tw/b {mnt}/tw/p"], timeout=60).check()
    return vm, tmp_path_factory.mktemp("cgroup"), mnt


def run(cg, name, dirs, filters=(), make=""):
    """Records workloads in cgroups dirs (under /tw) at once; the lines and
    each cgroup's truth."""
    vm, tmp, mnt = cg
    out = tmp / f"{name}.jsonl"
    truths = [tmp / f"{name}-{d.replace('/', '_')}.json" for d in dirs]
    # make runs to its end first ("a && b & c" would run c beside a), and
    # each workload's exit status is checked.
    starts = "".join(f"{workload(f'{mnt}/tw/{d}', t)} & p{i}=$!; "
                     for i, (d, t) in enumerate(zip(dirs, truths)))
    waits = " && ".join(f"wait $p{i}" for i in range(len(dirs)))
    args = [x for f in filters for x in ("--cgroup", f)]
    vm.run(["twtrace", "record", "--events", *args, "-o", str(out), "--",
            "sh", "-ec", f"{make}{starts}{waits}"], timeout=600).check()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    for line in lines:
        validate_line(line)
    return lines, {f"/tw/{d}": json.loads(t.read_text()) for d, t in zip(dirs, truths)}


def adds_in_rounds(lines, truth, cgroup):
    """____fput adds on the workload's thread inside its rounds, in cgroup."""
    tid = truth["tid"]
    return sum(1 for x in lines if x["type"] == "add" and x["tid"] == tid
               and x["func"] == "____fput" and x.get("cgroup") == cgroup
               and any(r["t_start_ns"] <= x["ts_ns"] <= r["t_end_ns"] for r in truth["rounds"]))


def final_tasks(lines):
    snaps = [i for i, x in enumerate(lines) if x["type"] == "snapshot" and x["final"]]
    return {x["tid"]: x for x in lines[snaps[-1]:] if x["type"] == "task"}


def check_exact(lines, truths):
    tasks = final_tasks(lines)
    for cg, truth in truths.items():
        assert len(truth["rounds"]) == ROUNDS
        assert adds_in_rounds(lines, truth, cg) == FILES * ROUNDS, cg
        adder = [x for x in lines if x["type"] == "add" and x["tid"] == truth["tid"]
                 and x.get("cgroup") == cg]
        assert all(x["adder_cgroup"] == cg for x in adder if x["adder_tid"] == truth["tid"])
        task = tasks[truth["tid"]]
        assert task["cgroup"] == cg
        assert task["adds"] >= FILES * ROUNDS  # plus the interpreter's own closes


def test_two_cgroups_counted_exactly(cg):
    lines, truths = run(cg, "all", ["a", "b"])
    check_exact(lines, truths)
    tids = {t["tid"] for t in truths.values()}
    assert len(tids) == 2


@pytest.fixture(scope="module")
def filtered(cg):
    """One recording filtered to /tw/a and /tw/p, with workloads in /tw/a,
    /tw/b and in /tw/p/x and /tw/p/y, which are made after tracing began
    (the kernel adds them to the filter)."""
    mnt = cg[2]
    return run(cg, "filtered", ["a", "b", "p/x", "p/y"], [f"{mnt}/tw/a", f"{mnt}/tw/p"],
               make=f"mkdir {mnt}/tw/p/x {mnt}/tw/p/y; ")


def test_filter_one_cgroup_keeps_only_it(filtered):
    lines, truths = filtered
    check_exact(lines, {"/tw/a": truths["/tw/a"]})
    b = truths["/tw/b"]["tid"]
    assert not [x for x in lines if x.get("tid") == b and x["type"] in ("add", "task")]
    assert not [x for x in lines if "/tw/b" in (x.get("cgroup"), x.get("adder_cgroup"))]


def test_filter_parent_keeps_both_children(filtered):
    lines, truths = filtered
    check_exact(lines, {k: v for k, v in truths.items() if k.startswith("/tw/p/")})
    assert {x["cgroup"] for x in final_tasks(lines).values()} == {"/tw/a", "/tw/p/x", "/tw/p/y"}


def test_bad_cgroup_is_one_line(vm_session):
    r = vm_session.get().run(["twtrace", "record", "--cgroup", "/no/such", "-o", "/tmp/x.jsonl",
                              "--", "true"], timeout=120)
    assert r.rc == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert r.stderr.startswith("twtrace: --cgroup /no/such: no such cgroup")
