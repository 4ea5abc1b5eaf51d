"""twtrace doctor over fake /proc and /sys trees: no root, no kernel needed."""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest

from twtrace import doctor as d

ROOT_CAPS = "000001ffffffffff"
HOST_CAPS = "000001fffeffffff"  # this sandbox: everything but CAP_SYS_RESOURCE
BPF_PERFMON_CAPS = format((1 << d.CAP_BPF) | (1 << d.CAP_PERFMON) | (1 << d.CAP_SYSLOG), "016x")

ALL_KSYMS = ("task_work_add", "task_work_run", "task_work_cancel", "task_work_cancel_func",
             "task_work_cancel_match", "bpf_ringbuf_output", "ringbuf_map_alloc",
             "bpf_trampoline_link_prog")


def synth_btf(funcs=("task_work_add", "task_work_run")) -> bytes:
    """A small valid BTF blob: INT, FUNC_PROTO, STRUCT, then one FUNC per name."""
    strings = b"\0int\0s\0" + b"".join(f.encode() + b"\0" for f in funcs)
    off = {name: strings.index(b"\0" + name.encode() + b"\0") + 1 for name in ("int", "s", *funcs)}
    types = b""
    types += struct.pack("<III", off["int"], 1 << 24, 4) + struct.pack("<I", 32)  # INT
    types += struct.pack("<III", 0, 13 << 24 | 1, 1) + struct.pack("<II", 0, 1)  # FUNC_PROTO(int)
    types += struct.pack("<III", off["s"], 4 << 24 | 2, 8) + struct.pack("<III", 0, 1, 0) * 2  # STRUCT
    for f in funcs:
        types += struct.pack("<III", off[f], 12 << 24, 2)  # FUNC -> proto id 2
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def make_tree(root: Path, *, release="6.1.0-50-amd64", uid=0, caps=ROOT_CAPS,
              config: dict | None = None, config_where="boot", ksyms=ALL_KSYMS, btf=True,
              kprobe_pmu=True, tracefs=True, headers=True, lockdown: str | None = None,
              os_id="debian", blacklist: list | None = None, clock: str | None = "tsc") -> Path:
    def put(rel: str, data) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())

    put("proc/sys/kernel/osrelease", release + "\n")
    put("proc/self/status", f"Name:\tpython3\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
                            f"CapInh:\t0000000000000000\nCapEff:\t{caps}\n")
    if config is not None:
        text = "".join(f"# {k} is not set\n" if v == "n" else f"{k}={v}\n" for k, v in config.items())
        if config_where == "proc":
            put("proc/config.gz", gzip.compress(text.encode()))
        else:
            put(f"boot/config-{release}", text)
    if ksyms is not None:
        put("proc/kallsyms", "".join(f"ffffffff8100{i:04x} T {s}\n" for i, s in enumerate(ksyms))
            + "ffffffff81000000 t unrelated_task_work_run_helper\n")
    if btf:
        put("sys/kernel/btf/vmlinux", synth_btf())
    (root / "sys/bus/event_source/devices/software").mkdir(parents=True)
    if kprobe_pmu:
        (root / "sys/bus/event_source/devices/kprobe").mkdir()
    if tracefs:
        put("sys/kernel/tracing/README", "tracing mini-HOWTO\n")
        if kprobe_pmu:
            put("sys/kernel/tracing/kprobe_events", "")
    if headers:
        (root / f"lib/modules/{release}/build/include").mkdir(parents=True)
    if lockdown is not None:
        levels = ["none", "integrity", "confidentiality"]
        put("sys/kernel/security/lockdown",
            " ".join(f"[{lv}]" if lv == lockdown else lv for lv in levels) + "\n")
    if blacklist is not None:
        put("sys/kernel/debug/kprobes/blacklist",
            "".join(f"0xffffffff81000000-0xffffffff81000010\t{s}\n" for s in blacklist))
    put("proc/sys/kernel/unprivileged_bpf_disabled", "2\n")
    put("proc/sys/kernel/perf_event_paranoid", "2\n")
    put("proc/cmdline", "console=ttyS0 quiet\n")
    if clock:
        put("sys/devices/system/clocksource/clocksource0/current_clocksource", clock + "\n")
    if os_id:
        put("etc/os-release", f'PRETTY_NAME="Test Linux"\nID={os_id}\n')
    return root


GOOD_CONFIG = {"CONFIG_KPROBES": "y", "CONFIG_DEBUG_INFO_BTF": "y",
               "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS": "y", "CONFIG_SECURITY_LOCKDOWN_LSM": "y",
               "CONFIG_LOCK_DOWN_KERNEL_FORCE_NONE": "y", "CONFIG_IKHEADERS": "n"}
HOST_CONFIG = {**GOOD_CONFIG, "CONFIG_KPROBES": "n", "CONFIG_LOCK_DOWN_KERNEL_FORCE_NONE": "n",
               "CONFIG_LOCK_DOWN_KERNEL_FORCE_INTEGRITY": "y"}


def bcc_ok(kfunc=True):
    return lambda host: d.BccInfo(importable=True, version="0.26.0", support_kfunc=kfunc,
                                  python="/usr/bin/python3")


def trial(ok, detail=""):
    calls = []

    def probe(host, machine):
        calls.append(machine)
        return d.FentryTrial(ok, detail or ("attached" if ok else "refused"))

    probe.calls = calls
    return probe


def diagnose(tmp_path, *, machine="x86_64", bcc=None, fentry=None, **tree):
    root = make_tree(tmp_path / "root", **tree)
    facts = d.gather(str(root), machine=machine, bcc_probe=bcc or bcc_ok(),
                     fentry_probe=fentry or trial(True))
    checks, ok, mode, reason = d.diagnose(facts)
    return facts, {c.name: c for c in checks}, ok, mode, reason


# -- the four situations the brief names ---------------------------------------

def test_this_host_no_kprobes_no_headers(tmp_path):
    eperm = "the kernel refused a BPF tracing program (EPERM: Operation not permitted)"
    facts, c, ok, mode, reason = diagnose(
        tmp_path, release="6.18.44-fc-v669", caps=HOST_CAPS, config=HOST_CONFIG,
        config_where="proc", kprobe_pmu=False, tracefs=False, headers=False,
        fentry=trial(False, eperm))
    assert facts.config_source == "/proc/config.gz"
    assert not ok and mode is None
    assert reason == "kernel built without kprobes (CONFIG_KPROBES is not set)"
    assert d.verdict_line(ok, mode, reason) == (
        "twtrace cannot trace this host: kernel built without kprobes (CONFIG_KPROBES is not set)")
    assert c["privileges"].status == d.OK
    assert c["kprobes"].status == d.FAIL and "CONFIG_KPROBES=y" in c["kprobes"].fix
    assert c["BTF"].status == d.OK
    assert c["fentry/fexit"].status == d.WARN and "EPERM" in c["fentry/fexit"].finding
    assert "security policy" in c["fentry/fexit"].fix
    assert c["kernel headers"].status == d.FAIL
    assert "apt-get install linux-headers-6.18.44-fc-v669" in c["kernel headers"].fix
    assert c["bcc"].status == d.OK and "0.26.0" in c["bcc"].finding
    assert c["lockdown"].status == d.OK and "integrity" in c["lockdown"].finding
    assert c["ring buffer"].status == d.OK
    assert c["cancel variants"].finding == "task_work_cancel, task_work_cancel_func, task_work_cancel_match"


def test_good_guest_6_1(tmp_path):
    probe = trial(True, "a test fentry program attached to task_work_run")
    facts, c, ok, mode, reason = diagnose(tmp_path, config=GOOD_CONFIG, fentry=probe)
    assert (ok, mode, reason) == (True, "fentry", None)
    assert probe.calls == ["x86_64"]
    assert all(ch.status in (d.OK, d.INFO) for ch in c.values()), c
    assert c["kernel headers"].finding == "/lib/modules/6.1.0-50-amd64/build"
    assert "kprobe PMU" in c["kprobes"].finding
    assert c["lockdown"].finding.startswith("not locked down")


def test_not_root(tmp_path):
    probe = trial(True)
    facts, c, ok, mode, reason = diagnose(tmp_path, uid=1000, caps="0000000000000000",
                                          config=GOOD_CONFIG, fentry=probe)
    assert not ok and mode is None
    assert c["privileges"].status == d.FAIL
    assert reason.startswith("not root (uid 1000")
    assert "sudo twtrace" in c["privileges"].fix
    assert probe.calls == []  # no bpf() attempts without privileges
    assert facts.fentry.detail == "needs root to try"


def test_lockdown_confidentiality_blocks(tmp_path):
    facts, c, ok, mode, reason = diagnose(tmp_path, config=GOOD_CONFIG, lockdown="confidentiality")
    assert not ok
    assert c["lockdown"].status == d.FAIL
    assert "confidentiality" in reason and "kprobes" in reason
    assert "lockdown=confidentiality" in c["lockdown"].fix


def test_lockdown_integrity_does_not_block(tmp_path):
    facts, c, ok, mode, reason = diagnose(tmp_path, config=GOOD_CONFIG, lockdown="integrity")
    assert ok and mode == "fentry"
    assert facts.lockdown_source == d.LOCKDOWN
    assert c["lockdown"].status == d.OK and "integrity" in c["lockdown"].finding


# -- more cases ------------------------------------------------------------------

def test_fentry_refused_falls_back_to_kprobes(tmp_path):
    facts, c, ok, mode, reason = diagnose(
        tmp_path, config=GOOD_CONFIG,
        fentry=trial(False, "the kernel loaded but would not attach an fentry program "
                            "to task_work_run (ENOTSUPP: Unknown error 524)"))
    assert (ok, mode) == (True, "kprobe")
    assert c["fentry/fexit"].status == d.WARN and c["fentry/fexit"].fix == ""


def test_fentry_without_kprobes_is_enough(tmp_path):
    facts, c, ok, mode, reason = diagnose(tmp_path, config={**GOOD_CONFIG, "CONFIG_KPROBES": "n"},
                                          kprobe_pmu=False)
    assert (ok, mode) == (True, "fentry")
    assert c["kprobes"].status == d.WARN and "fentry mode does not need them" in c["kprobes"].finding


def test_arm64_bcc_refuses_kfunc(tmp_path):
    probe = trial(True)
    facts, c, ok, mode, reason = diagnose(tmp_path, machine="aarch64", config=GOOD_CONFIG,
                                          bcc=bcc_ok(kfunc=False), fentry=probe)
    assert (ok, mode) == (True, "kprobe")
    assert "only on x86_64" in c["fentry/fexit"].finding
    assert probe.calls == []


def test_no_btf(tmp_path):
    facts, c, ok, mode, reason = diagnose(tmp_path, config={**GOOD_CONFIG, "CONFIG_DEBUG_INFO_BTF": "n"},
                                          btf=False, bcc=bcc_ok(kfunc=None))
    assert (ok, mode) == (True, "kprobe")
    assert c["BTF"].status == d.WARN and "CONFIG_DEBUG_INFO_BTF" in c["BTF"].finding


def test_no_config_relies_on_pmu_and_tracefs(tmp_path):
    facts, c, ok, mode, reason = diagnose(tmp_path, config=None)
    assert facts.config is None
    assert c["kprobes"].status == d.OK and c["kprobes"].finding.startswith("kprobe PMU")
    facts, c, ok, mode, reason = diagnose(tmp_path / "b", config=None, kprobe_pmu=False,
                                          fentry=trial(False, "refused"))
    assert c["kprobes"].status == d.FAIL and not ok


def test_blacklisted(tmp_path):
    facts, c, ok, mode, reason = diagnose(tmp_path, config=GOOD_CONFIG, blacklist=["task_work_run"],
                                          fentry=trial(False, "refused"))
    assert c["kprobes"].status == d.FAIL and "blacklist" in c["kprobes"].finding
    assert not ok


def test_bcc_installed_for_another_python(tmp_path):
    def no_bcc(host):
        return d.BccInfo(importable=False, error="ModuleNotFoundError: No module named 'bcc'",
                         python="/root/.pyenv/versions/3.11.7/bin/python3",
                         installed_at="/usr/lib/python3/dist-packages/bcc")
    facts, c, ok, mode, reason = diagnose(tmp_path, config=GOOD_CONFIG, bcc=no_bcc)
    assert not ok and c["bcc"].status == d.FAIL
    assert "--system-site-packages" in c["bcc"].fix
    assert "cannot import it" in reason


def test_bcc_missing_fix_by_distro(tmp_path):
    def no_bcc(host):
        return d.BccInfo(importable=False, error="ModuleNotFoundError: No module named 'bcc'")
    _, c, *_ = diagnose(tmp_path, config=GOOD_CONFIG, bcc=no_bcc, os_id="fedora")
    assert "dnf install python3-bcc" in c["bcc"].fix
    _, c, *_ = diagnose(tmp_path / "b", config=GOOD_CONFIG, bcc=no_bcc, os_id="ubuntu")
    assert "apt-get install python3-bpfcc" in c["bcc"].fix
    _, c, ok, _, _ = diagnose(tmp_path / "c", config=GOOD_CONFIG, bcc=no_bcc, headers=False,
                              os_id="fedora")
    assert "dnf install kernel-devel-6.1.0-50-amd64" in c["kernel headers"].fix


def test_kheaders_and_bpf_caps(tmp_path):
    root = tmp_path / "k"
    facts, c, ok, mode, reason = diagnose(root, config=GOOD_CONFIG, headers=False,
                                          caps=BPF_PERFMON_CAPS, uid=1000)
    assert c["kernel headers"].status == d.FAIL
    (root / "root/sys/kernel/kheaders.tar.xz").write_bytes(b"x")
    facts = d.gather(str(root / "root"), machine="x86_64", bcc_probe=bcc_ok(),
                     fentry_probe=trial(True))
    checks, ok, mode, reason = d.diagnose(facts)
    by = {ch.name: ch for ch in checks}
    assert "CONFIG_IKHEADERS" in by["kernel headers"].finding
    assert by["privileges"].status == d.OK and "CAP_BPF" in by["privileges"].finding
    assert ok and mode == "fentry"


def test_old_kernel_without_ringbuf_warns(tmp_path):
    ksyms = ("task_work_add", "task_work_run", "task_work_cancel")
    facts, c, ok, mode, reason = diagnose(tmp_path, config=GOOD_CONFIG, ksyms=ksyms)
    assert c["ring buffer"].status == d.WARN and "perf buffer" in c["ring buffer"].finding
    assert c["cancel variants"].finding == "task_work_cancel"
    # no bpf_trampoline_link_prog: no fentry, but kprobes trace
    assert (ok, mode) == (True, "kprobe")


def test_tick_clock_warns_with_its_step(tmp_path):
    facts, c, ok, mode, reason = diagnose(tmp_path, config={**GOOD_CONFIG, "CONFIG_HZ": "250"},
                                          clock="refined-jiffies")
    assert c["clock"].status == d.WARN and "steps of 4 ms" in c["clock"].finding
    assert ok  # coarse, but it traces
    facts, c, *_ = diagnose(tmp_path / "b", config=GOOD_CONFIG)
    assert c["clock"].status == d.OK and c["clock"].finding == "clocksource tsc"
    facts, c, *_ = diagnose(tmp_path / "c", config=GOOD_CONFIG, clock=None)
    assert c["clock"].status == d.INFO


def test_missing_task_work_symbols(tmp_path):
    facts, c, ok, mode, reason = diagnose(tmp_path, config=GOOD_CONFIG, ksyms=("bpf_ringbuf_output",))
    assert not ok and "task_work_add and task_work_run not in /proc/kallsyms" in reason


def test_empty_tree_never_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    facts = d.gather(str(tmp_path / "empty"), release="6.1.0", machine="x86_64")
    checks, ok, mode, reason = d.diagnose(facts)
    assert {ch.status for ch in checks} <= {d.OK, d.WARN, d.FAIL, d.INFO}
    assert not ok and reason  # bcc was not probed


def test_lockdown_from_cmdline_and_config(tmp_path):
    root = make_tree(tmp_path / "r", config=GOOD_CONFIG)
    (root / "proc/cmdline").write_text("quiet lockdown=confidentiality\n")
    f = d.gather(str(root), machine="x86_64")
    assert (f.lockdown, f.lockdown_source) == ("confidentiality", "lockdown= on the kernel command line")
    root = make_tree(tmp_path / "s", config=HOST_CONFIG)
    f = d.gather(str(root), machine="x86_64")
    assert (f.lockdown, f.lockdown_source) == ("integrity", "forced by the kernel config")


# -- pieces ----------------------------------------------------------------------

def test_btf_func_id():
    blob = synth_btf(("task_work_add", "task_work_run"))
    assert d.btf_func_id(blob, "task_work_add") == 4
    assert d.btf_func_id(blob, "task_work_run") == 5
    assert d.btf_func_id(blob, "task_work") is None
    assert d.btf_func_id(blob, "int") is None  # a name, but not a FUNC
    assert d.btf_func_id(b"junk", "x") is None


@pytest.mark.skipif(not Path(d.BTF_VMLINUX).exists(), reason="no kernel BTF here")
def test_btf_func_id_real_vmlinux():
    data = Path(d.BTF_VMLINUX).read_bytes()
    assert d.btf_func_id(data, "task_work_run") is not None


def test_parse_helpers():
    cfg = d.parse_config("# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n")
    assert cfg == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "x y"}
    assert d.parse_status("Uid:\t0\t0\t0\t0\nCapEff:\t000001fffeffffff\n") == (0, 0x1FFFEFFFFFF)
    assert d.parse_lockdown("none [integrity] confidentiality") == "integrity"
    assert d.parse_lockdown("[none] integrity confidentiality") == "none"


def test_main_json_and_text(tmp_path, monkeypatch, capsys):
    root = make_tree(tmp_path / "r", release="6.18.44-fc-v669", config=HOST_CONFIG,
                     kprobe_pmu=False, headers=False)
    real_gather = d.gather
    facts = d.gather(str(root), machine="x86_64", bcc_probe=bcc_ok(),
                     fentry_probe=trial(False, "the kernel refused a BPF tracing program (EPERM)"))
    monkeypatch.setattr(d, "gather", lambda *a, **k: facts)
    assert d.main(json_out=True) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["can_trace"] is False and out["probe_mode"] is None
    assert [c["name"] for c in out["checks"]][:3] == ["privileges", "bcc", "kprobes"]
    assert set(out["checks"][0]) == {"name", "status", "finding", "fix"}
    assert d.main(json_out=False) == 1
    text = capsys.readouterr().out
    assert text.rstrip().splitlines()[-1] == (
        "twtrace cannot trace this host: kernel built without kprobes (CONFIG_KPROBES is not set)")
    assert "Traceback" not in text
    assert d.can_trace_reason() == "kernel built without kprobes (CONFIG_KPROBES is not set)"

    good = make_tree(tmp_path / "g", config=GOOD_CONFIG)
    facts = real_gather(str(good), machine="x86_64", bcc_probe=bcc_ok(), fentry_probe=trial(True))
    assert d.main(json_out=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["can_trace"], out["probe_mode"]) == (True, "fentry")
    assert d.can_trace_reason() is None
    d.main(json_out=False)
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == \
        "twtrace can trace this host (probe mode: fentry)"


def test_can_trace_reason_survives_a_bug(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("bug")
    monkeypatch.setattr(d, "gather", boom)
    assert d.can_trace_reason() is None
