"""record as root in a real kernel: the traced command inherits no fd of
twtrace's, the recording is private, and special targets stay special."""
import os
import stat

import pytest

pytestmark = pytest.mark.timeout(600, method="signal")

FIRST_FREE = "import os; print(os.open('/dev/null', os.O_RDONLY))"


def test_command_inherits_nothing_and_file_is_0600(vm, tmp_path):
    out = tmp_path / "r.jsonl"
    r = vm.run(["twtrace", "record", "-o", str(out), "--", "python3", "-c", FIRST_FREE],
               timeout=400).check()
    assert r.stdout.strip().splitlines()[-1] == "3", r.stdout
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert not (tmp_path / "r.jsonl.partial").exists()


def test_dev_null_stays_a_device(vm, tmp_path):
    r = vm.run(["sh", "-c", "twtrace record -d 1 -o /dev/null && stat -c %F /dev/null"],
               timeout=400).check()
    assert r.stdout.strip().splitlines()[-1] == "character special file", r.stdout
