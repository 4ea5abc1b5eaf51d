"""twtrace.outfile: the rules for writing files as root (README: Running safely as root)."""
import os
import stat
import threading

import pytest

from twtrace.errors import UserError
from twtrace.outfile import Output, plan

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
OTHER_UID = 4242


def write_all(target, lines=3):
    out = Output(str(target))
    for i in range(lines):
        out.write({"n": i})
    out.finish()
    return out


def test_new_file_is_private_and_complete(tmp_path):
    target = tmp_path / "r.jsonl"
    out = Output(str(target))
    temp = tmp_path / "r.jsonl.partial"
    assert temp.exists() and not target.exists()  # written aside, renamed when whole
    out.write({"n": 1})
    out.finish()
    assert not temp.exists()
    assert target.read_text() == '{"n":1}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_planted_symlink_at_the_temp_name_is_refused(tmp_path):
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    (tmp_path / "out.jsonl.partial").symlink_to(precious)
    with pytest.raises(UserError, match="symbolic link"):
        Output(str(tmp_path / "out.jsonl"))
    assert precious.read_text() == "keep me\n"


@needs_root
def test_planted_regular_temp_of_another_user_is_not_reused(tmp_path):
    temp = tmp_path / "out.jsonl.partial"
    temp.write_text("")
    os.chown(temp, OTHER_UID, OTHER_UID)
    temp.chmod(0o666)
    with pytest.raises(UserError, match="not a twtrace file"):
        Output(str(tmp_path / "out.jsonl"))


def test_stale_temp_of_a_dead_recorder_is_replaced(tmp_path):
    temp = tmp_path / "out.jsonl.partial"
    temp.write_text("half a line")
    temp.chmod(0o644)
    write_all(tmp_path / "out.jsonl", 1)
    assert (tmp_path / "out.jsonl").read_text() == '{"n":0}\n'
    assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o600


def test_second_recorder_on_one_path_is_refused(tmp_path):
    target = tmp_path / "out.jsonl"
    first = Output(str(target))
    with pytest.raises(UserError, match="another twtrace is writing it"):
        Output(str(target))
    first.write({"n": 1})
    first.finish()  # the first recording survives the attempt
    assert target.read_text() == '{"n":1}\n'


def test_abandon_leaves_nothing(tmp_path):
    out = Output(str(tmp_path / "out.jsonl"))
    out.abandon()
    out.abandon()  # twice is harmless (signal watcher and unwinding both may)
    assert list(tmp_path.iterdir()) == []


def test_fifo_is_streamed_to_not_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    write_all(fifo, 2)
    reader.join(5)
    assert got == ['{"n":0}\n{"n":1}\n']
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not (tmp_path / "fifo.partial").exists()


def test_devices_and_stdout_names_are_streams():
    assert plan("/dev/null") == ("stream", "/dev/null")
    assert plan("/dev/stdout")[0] == "stream"
    assert plan("-")[0] == "stdout"
    write_all("/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_empty_and_directory_targets(tmp_path):
    with pytest.raises(UserError, match="-o must name a file"):
        plan("")
    with pytest.raises(UserError, match="directory"):
        plan(str(tmp_path))
    with pytest.raises(UserError, match="no directory"):
        plan(str(tmp_path / "missing" / "x"))


@needs_root
def test_other_users_file_in_sticky_dir_is_not_replaced(tmp_path):
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    theirs = sticky / "out.jsonl"
    theirs.write_text("theirs\n")
    os.chown(theirs, OTHER_UID, OTHER_UID)
    with pytest.raises(UserError, match="sticky directory"):
        Output(str(theirs))
    assert theirs.read_text() == "theirs\n"


@needs_root
def test_final_symlink_of_another_user_is_refused(tmp_path):
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    link = tmp_path / "out.jsonl"
    link.symlink_to(precious)
    os.lchown(link, OTHER_UID, OTHER_UID)
    with pytest.raises(UserError, match="symbolic link owned by uid 4242"):
        Output(str(link))
    assert precious.read_text() == "keep me\n"


def test_own_final_symlink_is_followed(tmp_path):
    real = tmp_path / "real.jsonl"
    link = tmp_path / "out.jsonl"
    link.symlink_to(real)
    write_all(link, 1)
    assert link.is_symlink() and real.read_text() == '{"n":0}\n'


def test_atomic_writer_follows_the_same_rules(tmp_path):
    from twtrace.atomicfile import write_atomic

    write_atomic("/dev/null", lambda f: f.write(b"x"))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    link = tmp_path / "metrics.prom"
    link.symlink_to(precious)
    if os.geteuid() == 0:
        os.lchown(link, OTHER_UID, OTHER_UID)
        with pytest.raises(UserError, match="symbolic link owned by uid"):
            write_atomic(str(link), lambda f: f.write(b"x"))
        assert precious.read_text() == "keep me\n"
