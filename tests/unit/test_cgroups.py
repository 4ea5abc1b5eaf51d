"""cgroup names and paths, the --cgroup filter's ids, in-container pids, and
per-cgroup totals (record, report and top's cgroup view)."""
from __future__ import annotations

import os

import pytest

import synth_record as sr
from twtrace import bycgroup, cgroups, model, pidns
from twtrace.errors import UserError
from twtrace.top.sample import Meta, Sample
from twtrace.top.state import CGROUPS, TASKS, TopState, text_matcher
from twtrace.totals import Totals

SEC = 1_000_000_000
CID = "3f2a9c1b7d4e" + "0" * 52  # a 64-hex container id


@pytest.mark.parametrize("path, name", [
    ("/", "/"),
    ("/system.slice/nginx.service", "nginx.service"),
    ("/user.slice/user-1000.slice", "user-1000.slice"),
    ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope"),
    (f"/system.slice/docker-{CID}.scope", CID[:12]),
    (f"/docker/{CID}", CID[:12]),
    (f"/system.slice/crio-{CID}.scope", CID[:12]),
    (f"/machine.slice/libpod-{CID}.scope/container", CID[:12]),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_9e8f.slice/"
     f"cri-containerd-{CID}.scope", CID[:12]),
    ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b3c4d_9e8f.slice",
     "pod1a2b3c4d"),
    ("/kubepods/burstable/pod1a2b3c4d-9e8f-4a1b", "pod1a2b3c4d"),
    ("/tw/a", "a"),
    ("cgroup:1234", "cgroup:1234"),
])
def test_short_names(path, name):
    assert cgroups.short_name(path) == name


def test_a_pod_name_needs_kubepods():
    assert cgroups.short_name("/apps/pod1a2b3c4d") == "pod1a2b3c4d"  # just its last part
    assert cgroups.short_name("/apps/pod1a2b3c4d.slice") == "pod1a2b3c4d.slice"


MOUNTINFO = """\
22 28 0:21 / /proc rw,nosuid - proc proc rw
29 22 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
35 29 0:30 / /sys/fs/cgroup/my\\040v2 rw - cgroup2 cgroup2 rw,nsdelegate
36 29 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
"""


def test_cgroup2_mount_from_mountinfo():
    assert cgroups.cgroup2_mount(MOUNTINFO) == "/sys/fs/cgroup/my v2"
    assert cgroups.cgroup2_mount(MOUNTINFO.replace("cgroup2 cgroup2", "cgroup cgroup")) is None
    assert cgroups.cgroup2_mount("") is None


@pytest.fixture
def tree(tmp_path):
    """A directory tree shaped like a cgroup2 mount."""
    for d in ("", "tw", "tw/a", "tw/b", "tw/b/inner", "other"):
        (tmp_path / d).mkdir(exist_ok=True)
        (tmp_path / d / "cgroup.procs").write_text("")
    return tmp_path


def ino(p):
    return os.stat(p).st_ino


def test_resolver_paths_and_unknown_ids(tree):
    clock = [0.0]
    r = cgroups.Resolver(str(tree), rescan_s=1.0, clock=lambda: clock[0])
    assert r.path(ino(tree)) == "/"
    assert r.path(ino(tree / "tw" / "b" / "inner")) == "/tw/b/inner"
    (tree / "late").mkdir()
    assert r.path(ino(tree / "late")) == f"cgroup:{ino(tree / 'late')}"  # rescans rate-limited
    clock[0] = 2.0
    assert r.path(ino(tree / "late")) == "/late"
    assert cgroups.Resolver(root="").path(7) == "cgroup:7"  # no cgroup2 mounted


def test_filter_ids_include_descendants(tree):
    want = {ino(tree / d) for d in ("tw", "tw/a", "tw/b", "tw/b/inner")}
    assert set(cgroups.filter_ids(["/tw"], str(tree))) == want
    assert set(cgroups.filter_ids([str(tree / "tw" / "a"), "tw/b"], str(tree))) == \
        {ino(tree / d) for d in ("tw/a", "tw/b", "tw/b/inner")}
    assert cgroups.filter_ids([], str(tree)) == []


def test_bad_cgroup_paths_are_one_line(tree):
    with pytest.raises(UserError, match=r"^--cgroup /nope: no such cgroup under "):
        cgroups.filter_ids(["/nope"], str(tree))
    (tree / "plain").mkdir()  # a directory that is not a cgroup
    with pytest.raises(UserError, match="no such cgroup"):
        cgroups.filter_ids(["plain"], str(tree))
    with pytest.raises(UserError, match="no cgroup2 file system is mounted"):
        cgroups.filter_ids(["/tw"], "")


def test_nspid():
    assert pidns.parse_nspid("Name:\tsh\nNSpid:\t4242\t7\n") == 7
    assert pidns.parse_nspid("Name:\tsh\nNSpid:\t4242\n") == 4242
    assert pidns.parse_nspid("Name:\tsh\n") is None
    assert pidns.ns_pid(os.getpid()) is None  # the tests run in the host's namespace
    assert pidns.ns_pid(2 ** 22 + 12345) is None  # no such process


# -- per-cgroup totals -----------------------------------------------------------

def agg(adds, cgroup, comm="python3", **kw):
    return {"pid": kw.pop("pid", 10), "comm": comm, "adds": adds, "failed_adds": 0,
            "cancels": 0, "cancels_matched": 0, "callbacks": adds, "matched": adds,
            "timed": adds, "queue_sum": 0, "queue_max": 0, "run_sum": 0, "run_max": 0,
            "run_cnt": 0, "notify_mask": 2, "max_depth": 1, "runs": 1, "cgroup": cgroup, **kw}


def test_task_lines_carry_the_latest_cgroup_and_ns_pid():
    tot = Totals()
    tot.apply({"aggs": {(10, 1, 0xf): agg(3, 11)}})
    tot.apply({"aggs": {(10, 1, 0xf): agg(2, 12)},
               "pairs": {(10, 10, 1, 0xf): {"adds": 2, "adder_comm": "sh", "adder_cgroup": 12}}})
    names = {11: "/tw/a", 12: "/tw/b"}
    snap = model.Snapshotter(lambda a: "____fput", lambda a: True, cgroup=names.get,
                             ns_pid=lambda pid: 7)
    lines = snap.lines(tot, {}, 0, 0, True)
    task = [x for x in lines if x["type"] == "task"][0]
    assert (task["cgroup"], task["cgroup_id"], task["ns_pid"], task["adds"]) == \
        ("/tw/b", 12, 7, 5)
    func = [x for x in lines if x["type"] == "func"][0]
    assert func["adders"][0]["adder_cgroup"] == "/tw/b"
    plain = model.Snapshotter(lambda a: "f", lambda a: True).lines(tot, {}, 0, 0, True)
    assert [x for x in plain if x["type"] == "task"][0]["cgroup"] == "cgroup:12"


def test_add_lines_carry_both_cgroups():
    ev = {"kind": "add", "ts": 5, "work": 1, "func": 2, "tid": 3, "pid": 3, "comm": "a",
          "adder_tid": 4, "adder_pid": 4, "adder_comm": "b", "notify": 1, "ret": 0,
          "cgroup": 11, "adder_cgroup": 1}
    line = model.event_line(ev, str, lambda a: True, {11: "/tw/a", 1: "/"}.get)
    assert (line["cgroup"], line["adder_cgroup"]) == ("/tw/a", "/")
    old = model.event_line({**ev, "cgroup": 0, "adder_cgroup": 0}, str, lambda a: True)
    assert "cgroup" not in old and "adder_cgroup" not in old


def test_aggregate_sums_tasks_per_cgroup():
    tasks = [sr.task(range(1000, 1010), range(10), tid=1, pid=1, cgroup="/tw/a", depth=2),
             sr.task(range(5000, 5020), range(20), tid=2, pid=2, cgroup="/tw/a", max_depth=4),
             sr.task(range(100, 105), range(5), tid=3, pid=3, cgroup="/tw/b"),
             sr.task(range(1, 3), range(2), tid=4, pid=4)]
    rows = {r["cgroup"]: r for r in bycgroup.aggregate(tasks)}
    a = rows["/tw/a"]
    assert (a["tasks"], a["adds"], a["callbacks"], a["depth"], a["max_depth"]) == (2, 30, 30, 2, 4)
    assert a["queue_ns"]["count"] == 30 and a["queue_ns"]["max"] == 5019
    assert a["queue_ns"]["sum"] == sum(range(1000, 1010)) + sum(range(5000, 5020))
    assert rows["/tw/b"]["adds"] == 5 and rows["?"]["adds"] == 2  # "?": no cgroup known
    assert [r["cgroup"] for r in bycgroup.aggregate(tasks)] == ["/tw/a", "/tw/b", "?"]
    assert bycgroup.merge_latency([None, {"count": 0}])["count"] == 0


def group(ts_ns, tasks):
    return Sample({"type": "snapshot", "ts_ns": ts_ns, "seq": 0, "final": False}, list(tasks))


def test_cgroup_view_rates_depth_and_latency():
    st = TopState(Meta(start_ns=0))
    st.push(group(SEC, [sr.task(range(10), range(10), tid=1, pid=1, cgroup="/tw/a"),
                        sr.task(range(4), range(4), tid=2, pid=2, cgroup="/tw/b")]))
    st.push(group(2 * SEC, [
        sr.task(range(30), range(30), tid=1, pid=1, cgroup="/tw/a", depth=1),
        sr.task(range(1000, 1010), range(10), tid=5, pid=5, cgroup="/tw/a"),
        sr.task(range(4), range(4), tid=2, pid=2, cgroup="/tw/b")]))
    rows = st.rows[CGROUPS]
    a, b = rows["/tw/a"], rows["/tw/b"]
    assert (a.adds_s, a.cb_s, a.line["depth"], a.line["tasks"]) == (30.0, 30.0, 1, 2)
    assert a.queue["count"] == 30 and a.queue["max"] == 1009  # this interval's samples only
    assert b.adds_s == 0.0 and b.quiet == 1
    st.view = CGROUPS
    assert [r.key for r in st.visible()] == ["/tw/a", "/tw/b"]
    assert text_matcher("tw/b", CGROUPS)(b) and not text_matcher("tw/b", CGROUPS)(a)
    assert text_matcher("5", CGROUPS)(a) and not text_matcher("5", CGROUPS)(b)
    st.view = TASKS
    assert [r.key for r in st.visible()] and text_matcher("/tw/b", TASKS)(st.rows[TASKS][2])


def test_a_task_that_exits_does_not_take_its_counts_away():
    st = TopState(Meta(start_ns=0), age_out=1)
    st.push(group(SEC, [sr.task(range(10), range(10), tid=1, pid=1, cgroup="/a"),
                        sr.task(range(5), range(5), tid=2, pid=2, cgroup="/a")]))
    st.push(group(2 * SEC, [sr.task(range(12), range(12), tid=2, pid=2, cgroup="/a")]))
    assert st.rows[CGROUPS]["/a"].adds_s == 7.0  # task 1 gone: no negative rate


def test_replay_filter_by_path(tree):
    assert cgroups.in_any("/tw/a", ["/tw"]) and cgroups.in_any("/tw", ["/tw/"])
    assert not cgroups.in_any("/twx", ["/tw"]) and cgroups.in_any("/x", ["/"])
    assert cgroups.hierarchy_path(str(tree / "tw" / "a"), str(tree)) == "/tw/a"
    assert cgroups.hierarchy_path("system.slice/", str(tree)) == "/system.slice"
    from twtrace.top.main import TopOptions, validate
    f = validate(TopOptions(replay="x.jsonl", cgroups=["/tw"]))
    assert f.task_ok({"pid": 1, "tid": 1, "comm": "a", "cgroup": "/tw/b"})
    assert not f.task_ok({"pid": 1, "tid": 1, "comm": "a", "cgroup": "/other"})
    assert validate(TopOptions(cgroups=["/tw"])).cgroups == []  # live: the kernel filters


@pytest.mark.parametrize("width", [200, 80])
def test_report_has_a_cgroup_table(tmp_path, width):
    import jsonschema
    from rich.console import Console

    from twtrace.recordfile import load_schema, read_record
    from twtrace.report import render_report

    lines = sr.top_lines(6, cgroups=True)
    for line in lines:
        if line["type"] == "task" and line["tid"] == 901:
            line["ns_pid"] = 1  # nginx is pid 1 in its container
    validator = jsonschema.Draft202012Validator(load_schema())
    for line in lines:
        validator.validate(line)
    console = Console(record=True, width=width, color_system=None, force_terminal=False)
    render_report(read_record(sr.write_jsonl(tmp_path / "r.jsonl", lines)), console)
    text = console.export_text()
    assert "Cgroups: 4, by adds" in text
    row = [x for x in text.splitlines() if x.lstrip().startswith("postgresql.service")][0]
    assert row.split()[1:3] == ["2", "1,080"] or row.split()[1:3] == ["2", "1080"], row
    assert "901(1)" in text
    old = sr.top_lines(6)
    console = Console(record=True, width=width, color_system=None, force_terminal=False)
    render_report(read_record(sr.write_jsonl(tmp_path / "o.jsonl", old)), console)
    assert "Cgroups" not in console.export_text()  # recordings from before cgroups


@pytest.mark.parametrize("cmd", [["record", "-o", "/tmp/twtrace-cg-test.jsonl"], ["top", "1", "1"],
                                 ["serve", "--textfile", "/tmp/twtrace-cg-test.prom"]])
def test_cli_bad_cgroup_is_one_line_exit_2(cmd):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "twtrace", *cmd, "--cgroup", "/no/such/cg"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("twtrace: --cgroup /no/such/cg: ")
