"""twtrace.leftovers on a fake tracefs: only dead bcc pids' probes are removed."""
import os

from twtrace import leftovers
from twtrace.doctor import check_leftovers, gather

EVENTS = """p:kprobes/p_task_work_add_bcc_111 task_work_add
r16:kprobes/r_____fput_bcc_111 ____fput
r:kprobes/r_task_work_run_bcc_222 task_work_run
p:kprobes/myprobe do_sys_open
p:perf_probe/p_x_bcc_333 x
"""
DEAD = {111, 333}


def fake_tracefs(tmp_path, where="sys/kernel/tracing"):
    d = tmp_path / where
    d.mkdir(parents=True)
    (d / "kprobe_events").write_text(EVENTS)
    return d / "kprobe_events"


def alive(pid):
    return pid not in DEAD


def test_finds_only_dead_bcc_pids(tmp_path):
    fake_tracefs(tmp_path)
    stale = leftovers.find_stale(str(tmp_path), alive)
    assert [p.event for p in stale] == ["kprobes/p_task_work_add_bcc_111",
                                        "kprobes/r_____fput_bcc_111", "perf_probe/p_x_bcc_333"]


def test_removal_appends_delete_commands_never_truncates(tmp_path):
    path = fake_tracefs(tmp_path, "sys/kernel/debug/tracing")
    assert leftovers.remove_stale_probes(str(tmp_path), alive) == 3
    # A plain file stands in for tracefs: what was written is appended after
    # what was there (the real file would then drop the probes).
    assert path.read_text() == EVENTS + ("-:kprobes/p_task_work_add_bcc_111\n"
                                         "-:kprobes/r_____fput_bcc_111\n"
                                         "-:perf_probe/p_x_bcc_333\n")


def test_no_tracefs_is_no_error(tmp_path):
    assert leftovers.remove_stale_probes(str(tmp_path)) == 0
    assert leftovers.find_stale(str(tmp_path)) == []


def test_own_pid_is_never_stale(tmp_path):
    path = fake_tracefs(tmp_path)
    path.write_text(f"r:kprobes/r_f_bcc_{os.getpid()} f\n")
    assert leftovers.find_stale(str(tmp_path), lambda pid: False) == []


def test_pid_alive():
    assert leftovers.pid_alive(os.getpid())
    assert not leftovers.pid_alive(2 ** 22 + 12345)  # above pid_max's ceiling


def test_doctor_reports_leftovers(tmp_path):
    path = fake_tracefs(tmp_path)
    path.write_text("r:kprobes/r_f_bcc_4194999 f\n")  # no such pid can exist
    facts = gather(str(tmp_path), release="6.1.0", machine="x86_64")
    assert facts.stale_probes == ["kprobes/r_f_bcc_4194999"]
    c = check_leftovers(facts)
    assert c.status == "warn" and "1 kprobe left" in c.finding
