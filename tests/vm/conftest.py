"""The VM fixture: one guest booted per session (per cell), shared by the
tests, restarted if a test leaves it dead. The session's temporary directory
is shared with the guest at the same path, so tmp_path works on both sides."""
import os
import shutil
import socket

import pytest

from twtrace.errors import UserError
from twtrace.vm import builder, cells
from twtrace.vm.machine import Machine, VMError

CI = bool(os.environ.get("TWTRACE_CI") or os.environ.get("CI"))
# Every VM test has its own bound, well inside a cell's (TWTRACE_CELL_TIMEOUT):
# a hung test fails by name with its output, and the cell goes on.
VM_TEST_TIMEOUT = float(os.environ.get("TWTRACE_VM_TEST_TIMEOUT", "900"))


# What does not depend on the guest's kernel runs on the default cell only,
# and the SMP cells run what concurrency can break: the matrix stays inside
# CI's time.  (Deselected, not skipped: they are not part of that cell.)
DEFAULT_CELL_ONLY = {"test_vm_signals.py", "test_startup_signals.py", "test_serve.py",
                     "test_record_safety.py"}
SMP_CELL_TESTS = {"test_busy.py"}
SMP_CELL_ONE_TESTS = {"test_two_cgroups_counted_exactly"}  # and these, from other files
# Tests whose subject is user space (signals, the perf-buffer fallback that no
# cell's kernel needs) or that repeat another test's kernel facts (leftover
# probes are the same text-interface lines as after a killed record; the
# harness's own kprobe count is test_close_range_batches_exact[kprobe]'s).
DEFAULT_CELL_ONLY_TESTS = {"test_sigkill_top_leaves_nothing",
                           "test_leftovers_of_a_killed_run_are_found_and_removed",
                           "test_events_through_a_perf_buffer",
                           "test_sigint_mid_record_leaves_a_complete_file",
                           "test_interval_recording_lets_exited_tasks_go_after_one_listing",
                           "test_bad_cgroup_is_one_line",
                           "test_kprobes_count_close_range_exactly"}


# What a killed run leaves behind depends on bcc's version and the kernel's
# kprobe interface, not on the machine: arm64 cells have x86-64 twins with
# the same kernel and bcc (6.1 / 0.26 and 6.12 / 0.31).
X86_64_ONLY_TESTS = {"test_sigkill_record_leaves_nothing"}
# Threads closing at the same instant can only race where kernel code is
# preempted (sid's 7.2) or runs on two CPUs; on the other single-CPU cells it
# is a plain close, which test_record's counts already cover.
PREEMPT_OR_SMP_TESTS = {"test_threads_closing_at_once_are_exact_run_after_run"}


def _cell_of(config):
    try:
        return cells.find_cell(config.getoption("--vm-kernel"), config.getoption("--vm-arch"))
    except UserError:
        return None  # the cell fixture fails every test with the reason


def _belongs(cell, item) -> bool:
    name = item.fspath.basename
    if cell is None:
        return True
    if cell.name == cells.DEFAULT_CELL:
        return True
    if item.originalname in DEFAULT_CELL_ONLY_TESTS:
        return False
    if item.originalname in X86_64_ONLY_TESTS and cell.arch != "amd64":
        return False
    if item.originalname in PREEMPT_OR_SMP_TESTS and not (cell.suite == "sid" or cell.cpus > 1):
        return False
    if cell.cpus > 1:
        return name in SMP_CELL_TESTS or item.originalname in SMP_CELL_ONE_TESTS
    return name not in DEFAULT_CELL_ONLY


def pytest_collection_modifyitems(config, items):
    cell = _cell_of(config)
    keep, dropped = [], []
    for item in items:
        if "tests/vm/" not in str(item.fspath):
            keep.append(item)
            continue
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(VM_TEST_TIMEOUT, method="signal"))
        (keep if _belongs(cell, item) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


SERVE_PORT = 19868  # inside the guest


def free_port() -> int:
    """A TCP port free on the host's loopback now (QEMU binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cant_run(reason):
    if CI:
        pytest.fail(f"VM unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cell(request):
    try:
        return cells.find_cell(request.config.getoption("--vm-kernel"),
                               request.config.getoption("--vm-arch"))
    except UserError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def guest(cell):
    if not shutil.which(cell.arch_info.qemu):
        _cant_run(f"{cell.arch_info.qemu} not installed (scripts/setup installs it)")
    if os.geteuid() != 0 and not os.access(builder.cache_root().parent, os.W_OK):
        _cant_run(f"cannot write the guest cache {builder.cache_root()} (run as root)")
    try:
        return builder.build(cell)
    except UserError as e:
        _cant_run(f"cannot build guest {cell.name}: {e}")


class _Session:
    def __init__(self, cell, guest, share):
        self.cell, self.guest, self.share = cell, guest, share
        self.machine = None

    def get(self):
        if self.machine is None or not self.machine.alive:
            if self.machine is not None:
                self.machine.cleanup()
            # One forwarded port for test_serve: host 127.0.0.1:<free> -> guest SERVE_PORT.
            self.machine = Machine(self.cell, guest=self.guest, shares=[self.share],
                                   memory_mb=1024, forwards=[(free_port(), SERVE_PORT)])
            try:
                self.machine.start()
            except VMError as e:
                _cant_run(str(e))
        return self.machine


@pytest.fixture(scope="session")
def vm_session(cell, guest, tmp_path_factory):
    s = _Session(cell, guest, str(tmp_path_factory.getbasetemp()))
    yield s
    if s.machine:
        s.machine.cleanup()


@pytest.fixture
def vm(vm_session):
    """A running guest (booted once per session)."""
    return vm_session.get()
