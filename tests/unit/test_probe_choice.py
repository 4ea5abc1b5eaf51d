"""How twtrace picks its probe mode, and the kernel facts it picks from."""
import pytest

from twtrace.kernel import preemption_model
from twtrace.loader import choose_probe_mode
from twtrace.vm import cells
from twtrace.vm.matrix import running_test

OK = (True, "")


@pytest.mark.parametrize("asked, kfunc, guard, preempt, fentry, words", [
    ("auto", OK, True, "voluntary", True, "fentry/fexit supported"),
    ("auto", OK, True, "none", True, "preemption: none"),
    ("auto", OK, True, "lazy", False, "preempts kernel code (lazy)"),
    ("auto", OK, True, "full", False, "preemption off"),
    ("auto", OK, True, "rt", False, "(rt)"),
    ("auto", OK, True, None, False, "preemption model is unknown"),
    ("auto", OK, False, "voluntary", False, "recursion guard (it came in 5.12)"),
    ("auto", (False, "bcc says no"), True, "voluntary", False, "kprobes used: bcc says no"),
    ("kprobe", OK, True, "voluntary", False, "kprobes asked for"),
    ("fentry", OK, True, "lazy", True, "asked for"),  # the user overrides, knowingly
])
def test_probe_mode_choice(asked, kfunc, guard, preempt, fentry, words):
    got, why = choose_probe_mode(asked, kfunc, guard, preempt)
    assert got is fentry and words in why


DYNAMIC = "CONFIG_PREEMPT_BUILD=y\nCONFIG_PREEMPT_VOLUNTARY=y\nCONFIG_PREEMPT_DYNAMIC=y\n" \
          "CONFIG_PREEMPTION=y\n"


@pytest.mark.parametrize("debugfs, config, cmdline, model", [
    ("none (voluntary) full lazy\n", None, "", "voluntary"),  # the running mode, in parentheses
    ("none voluntary full (lazy)\n", DYNAMIC, "", "lazy"),
    (None, DYNAMIC, "ro quiet", "voluntary"),  # Debian 6.1 / 6.12: PREEMPTION=y yet voluntary
    (None, DYNAMIC, "preempt=full", "full"),   # a boot option switches it
    (None, "CONFIG_PREEMPT_LAZY=y\nCONFIG_PREEMPT_DYNAMIC=y\n", "", "lazy"),  # Debian 7.2
    (None, "CONFIG_PREEMPT_RT=y\nCONFIG_PREEMPT_DYNAMIC=y\n", "preempt=none", "rt"),
    (None, "CONFIG_PREEMPT_NONE=y\n", "", "none"),
    (None, "", "", None),
])
def test_preemption_model(debugfs, config, cmdline, model):
    assert preemption_model(cmdline=cmdline, config=config, debugfs=debugfs or "") == model


def test_smp_cells_boot_their_release_guest():
    smp = [c for c in cells.ALL_CELLS.values() if c.cpus > 1]
    assert {(c.name, c.arch) for c in smp} == {("trixie-amd64-smp2", "amd64"),
                                               ("bookworm-arm64-smp2", "arm64")}
    for c in smp:
        assert c.guest_name in cells.CELLS and cells.CELLS[c.guest_name].cpus == 1
    assert cells.find_cell("6.12", "amd64").cpus == 1  # a plain kernel label: the 1-CPU cell
    assert cells.find_cell("trixie-amd64-smp2").cpus == 2
    assert cells.find_cell("6.1", "arm64").name == "bookworm-arm64"  # the arch is kept
    assert cells.find_cell("6.12", "arm64").name == "trixie-arm64"


def test_a_killed_cell_names_the_test_it_was_in():
    log = ("tests/vm/test_a.py::test_one PASSED [ 10%]\n"
           "tests/vm/test_a.py::test_two \n")
    assert running_test(log) == "tests/vm/test_a.py::test_two"
    assert running_test(log + "PASSED\n") == "tests/vm/test_a.py::test_two"
    assert running_test("tests/vm/test_a.py::test_one PASSED\n") is None


def test_kprobe_skips_are_known_only_where_the_kernel_counts_them(monkeypatch):
    from twtrace import kernel

    files = {"/lib/modules/7.2/source/include/linux/bpf.h":
             "static __always_inline void\nbpf_prog_inc_misses_counters(const struct x *a)\n",
             "/lib/modules/6.1/source/include/linux/bpf.h": "void bpf_prog_inc_misses_counter(x);\n"}
    monkeypatch.setattr(kernel, "_read", files.get)
    assert kernel.kprobe_skips_counted("7.2") is True
    assert kernel.kprobe_skips_counted("6.1") is False  # 0 there would mean "not counted"
    assert kernel.kprobe_skips_counted("5.0") is None
