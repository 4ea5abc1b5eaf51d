"""pytest options and fixtures shared by the unit and VM suites."""
import os

import pytest

CI = bool(os.environ.get("TWTRACE_CI") or os.environ.get("CI"))


def pytest_addoption(parser):
    group = parser.getgroup("twtrace")
    group.addoption("--vm-kernel", default=None,
                    help="guest kernel for tests/vm (6.1, 5.10, 6.12, 7.2, or a cell name); "
                         "env TWTRACE_VM_KERNEL")
    group.addoption("--vm-arch", default=None, help="guest architecture (amd64, arm64); "
                                                   "env TWTRACE_VM_ARCH")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)
        if "/tests/tmux/" in str(item.fspath):
            item.add_marker(pytest.mark.tmux)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # In CI a VM or tmux test that did not run is a failure, never a silent skip.
    for marker in ("vm", "tmux"):
        if CI and report.skipped and item.get_closest_marker(marker):
            report.outcome = "failed"
            report.longrepr = f"{marker} test skipped in CI: {report.longrepr}"
            break
