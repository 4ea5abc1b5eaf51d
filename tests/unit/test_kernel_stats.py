"""BPF run-time statistics from program fdinfo (no root, no BPF needed)."""
import os

from twtrace import kernel

FDINFO = """pos:\t0
flags:\t02000002
mnt_id:\t15
prog_type:\t2
prog_jited:\t1
prog_tag:\t0123456789abcdef
memlock:\t4096
prog_id:\t42
run_time_ns:\t123456
run_cnt:\t789
"""


def test_parse_prog_fdinfo():
    assert kernel.parse_prog_fdinfo(FDINFO) == (123456, 789)
    # before 5.1 the fields are absent: no numbers rather than zeros
    assert kernel.parse_prog_fdinfo("pos:\t0\nprog_type:\t2\n") is None


def test_prog_run_stats_sums_and_skips_unknown(tmp_path, monkeypatch):
    real_open = open

    def fake_open(path, *a, **kw):
        if str(path).startswith("/proc/self/fdinfo/"):
            fd = int(str(path).rsplit("/", 1)[1])
            if fd == 3:
                return real_open(_write(tmp_path, "a", FDINFO))
            if fd == 4:
                return real_open(_write(tmp_path, "b", FDINFO.replace("123456", "1000")))
            raise FileNotFoundError(path)
        return real_open(path, *a, **kw)

    monkeypatch.setattr("builtins.open", fake_open)
    assert kernel.prog_run_stats([3, 4, 99]) == {"run_time_ns": 124456, "run_cnt": 1578}
    assert kernel.prog_run_stats([99]) is None


def test_recursion_misses_only_where_the_kernel_reports_them(tmp_path, monkeypatch):
    assert kernel.parse_recursion_misses(FDINFO + "recursion_misses:\t7\n") == 7
    assert kernel.parse_recursion_misses(FDINFO) is None  # before 5.12

    def fake_open(path, *a, **kw):
        fd = int(str(path).rsplit("/", 1)[1])
        text = {3: FDINFO + "recursion_misses:\t2\n", 4: FDINFO + "recursion_misses:\t3\n",
                5: FDINFO}[fd]
        return _real_open(_write(tmp_path, str(fd), text))

    monkeypatch.setattr("builtins.open", fake_open)
    assert kernel.prog_skipped_runs([3, 4, 5]) == 5
    assert kernel.prog_skipped_runs([5]) is None


_real_open = open


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_sysctl_fallback_restores_what_it_found(tmp_path, monkeypatch):
    sysctl = tmp_path / "bpf_stats_enabled"
    sysctl.write_text("0\n")
    monkeypatch.setattr(kernel, "BPF_STATS_SYSCTL", str(sysctl))
    monkeypatch.setattr(kernel, "_enable_stats_fd", lambda: None)
    s = kernel.BpfStats()
    assert s.enable() and sysctl.read_text() == "1"
    s.close()
    assert sysctl.read_text() == "0" and not s.enabled
    assert os.path.exists(sysctl)


def test_adder_frames_drop_the_probes_own():
    from twtrace.loader import adder_frames
    kprobe = ["kprobe_ftrace_handler", "task_work_add", "fput", "__x64_sys_close"]
    assert adder_frames(kprobe) == ["task_work_add", "fput", "__x64_sys_close"]
    fentry_7 = ["bpf_prog_6deef7357e7b4530_kfunc__vmlinux__task_work_add",
                "bpf_trampoline_6442512345", "fput", "filp_close"]
    assert adder_frames(fentry_7) == ["task_work_add", "fput", "filp_close"]


def test_kallsyms_is_read_once_and_serves_every_reader(tmp_path):
    path = tmp_path / "kallsyms"
    path.write_text("ffffffff81000010 T task_work_add\n"
                    "ffffffff81000020 t ____fput\n"
                    "ffffffff82000000 d work_exited\n"
                    "ffffffffc0000000 t mod_cb\t[some_module]\n")
    assert kernel.symbol_addr("work_exited", str(path)) == 0xffffffff82000000
    assert kernel.symbol_addr("missing", str(path)) is None
    assert kernel.vmlinux_symbols(str(path)) == {"task_work_add", "____fput"}
    path.write_text("")  # later reads are of the first text
    assert kernel.Kallsyms.load(str(path)).addr("____fput") == 0xffffffff81000020
