"""SIGTERM/SIGINT during start-up (bcc compiling, one long C call): twtrace
exits at once with 128+signal and leaves no file, for record and top."""
import pytest

pytestmark = pytest.mark.timeout(300, method="signal")  # each: a 2 s wait and an exit

COMPILE_S = 1  # signal this long after twtrace's first line ran: well inside start-up
# twtrace's first line catches SIGTERM (and SIGINT); before it, the signal is
# the Python interpreter's own start, which twtrace cannot change.  Wait for
# SIGTERM's bit (15, bit 14) in the process's caught-signals mask.
CAUGHT = ("n=0; until m=$(awk '/^SigCgt/ {print $2}' /proc/$t/status 2>/dev/null) && "
          "[ -n \"$m\" ] && [ $(( 0x$m >> 14 & 1 )) -eq 1 ]; do n=$((n+1)); "
          "[ $n -gt 600 ] && break; sleep 0.1; done; ")
# sh starts `cmd &` with SIGINT ignored (POSIX, for jobs without job control),
# and a signal ignored while Python is still starting is gone for good: give
# twtrace SIGINT as a terminal's foreground job would have it.
UNIGNORE = ("python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "os.execvp(sys.argv[1], sys.argv[1:])' ")


@pytest.mark.parametrize("cmd", ["record", "top"])
@pytest.mark.parametrize("sig", ["TERM", "INT"])
def test_signal_during_start_up(vm, tmp_path, cmd, sig):
    out = tmp_path / "r.jsonl"
    argv = UNIGNORE + (f"twtrace record -o {out} -d 60" if cmd == "record" else "twtrace top 1 5")
    script = (f"{argv} > {tmp_path}/stdout 2> {tmp_path}/err & t=$!; {CAUGHT}sleep {COMPILE_S}; "
              f"s=$(cut -d' ' -f1 /proc/uptime); kill -{sig} $t; wait $t; rc=$?; "
              f"e=$(cut -d' ' -f1 /proc/uptime); echo rc=$rc took=$(echo \"$e - $s\" | "
              f"python3 -c 'import sys; print(eval(sys.stdin.read()))')")
    r = vm.run(["sh", "-c", script], timeout=300).check()
    err = (tmp_path / "err").read_text()
    assert "tracing task_work" not in err, "start-up was over before the signal: too fast a guest"
    want = 128 + {"TERM": 15, "INT": 2}[sig]
    fields = dict(x.split("=") for x in r.stdout.split())
    assert int(fields["rc"]) == want, (r.stdout, err)
    assert float(fields["took"]) < 5, f"the signal waited for start-up: {r.stdout}"
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "r.jsonl.partial").exists()
