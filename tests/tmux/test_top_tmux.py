"""`twtrace top --replay` driven inside a real terminal (tmux at 80×24):
every key does what the help says, resizes redraw, quitting restores the
terminal.  Skipped when tmux is missing, except in CI (tests/conftest.py)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import synth_record as sr  # noqa: E402

TWTRACE = Path(sys.executable).with_name("twtrace")
WAIT = 8.0  # seconds for the screen to show what is expected


class Pane:
    """One tmux server (private socket) with one 80×24 window running sh."""

    def __init__(self, tmp: Path):
        self.sock = f"twtrace-test-{os.getpid()}-{id(self)}"
        self.tmp = tmp
        env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="xterm-256color")
        env.pop("TMUX", None)
        env.pop("COLUMNS", None)
        env.pop("LINES", None)
        self.env = env
        self.tmux("new-session", "-d", "-x", "80", "-y", "24", "-s", "t", "sh")
        self.tmux("set-option", "-g", "status", "off")  # all 24 lines are the pane's

    def tmux(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-u", "-L", self.sock, *args], capture_output=True,
                           text=True, env=self.env, timeout=20)
        assert r.returncode == 0, f"tmux {args}: {r.stderr}"
        return r.stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "t", "-l", text)

    def shell(self, command: str) -> None:
        self.type(command)
        self.keys("Enter")

    def screen(self) -> list:
        return self.tmux("capture-pane", "-p", "-t", "t").rstrip("\n").split("\n")

    def text(self) -> str:
        return "\n".join(self.screen())

    def flag(self, name: str) -> str:
        return self.tmux("display-message", "-p", "-t", "t", "#{" + name + "}").strip()

    def wait_for(self, pred, what: str):
        deadline = time.monotonic() + WAIT
        while True:
            lines = self.screen()
            if pred(lines):
                return lines
            if time.monotonic() > deadline:
                pytest.fail(f"screen never showed {what}:\n" + "\n".join(lines))
            time.sleep(0.05)

    def wait_text(self, needle: str):
        return self.wait_for(lambda ls: needle in "\n".join(ls), repr(needle))

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("tmux")
    return {"short": str(sr.write_jsonl(d / "short.jsonl", sr.top_lines(6))),
            "long": str(sr.write_jsonl(d / "long.jsonl", sr.top_lines(60))),
            "cgroups": str(sr.write_jsonl(d / "cg.jsonl", sr.top_lines(6, cgroups=True)))}


@pytest.fixture
def pane(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/setup installs it)")
    assert TWTRACE.exists(), f"no console script at {TWTRACE}: pip install -e ."
    p = Pane(tmp_path)
    yield p
    p.kill()


def start(pane: Pane, rec: str, *args: str) -> list:
    pane.shell(f"{TWTRACE} top --replay {rec} {' '.join(args)}; echo EXIT=$?")
    return pane.wait_text("Tasks: ")


def head(lines):
    found = [line for line in lines if line.split()[:1] in (["PID"], ["FUNC"])]
    return found[0] if found else ""


def table_shown(lines):
    return len(lines) > 3 and lines[3].split()[:1] == ["PID"]


def selected(lines):
    return [line for line in lines if line.startswith(">")]


def test_screen_at_80x24_and_quit_restores_the_terminal(pane, recordings, tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    pane.shell(f"stty -a > {before}")
    assert pane.flag("alternate_on") == "0"
    lines = start(pane, recordings["short"], "--speed", "max")
    lines = pane.wait_text("REPLAY max +6.00s END")
    assert pane.flag("alternate_on") == "1"
    assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
    assert "db1" in lines[0] and "items 225/s" in lines[1]
    assert selected(lines)[0].split()[:3] == [">4242", "4242", "postgres"]
    assert "q quit" in lines[-1] or "q quits" in lines[-1]
    pane.keys("q")
    pane.wait_text("EXIT=0")
    assert pane.flag("alternate_on") == "0"  # left the alternate screen
    assert pane.flag("cursor_flag") == "1"   # cursor shown again
    pane.shell(f"stty -a > {after}")
    pane.wait_for(lambda ls: after.exists() and after.stat().st_size > 0, "stty output")
    time.sleep(0.2)
    assert before.read_text() == after.read_text()


def test_sort_reverse_tab_and_selection_keys(pane, recordings):
    lines = start(pane, recordings["short"], "--speed", "max")
    assert "ADD/s▼" in head(lines)
    pane.keys("s")
    lines = pane.wait_for(lambda ls: "CB/s▼" in head(ls), "sort by CB/s")
    assert "ADD/s▼" not in head(lines)
    pane.keys("S", "S")
    pane.wait_for(lambda ls: "COMM▲" in head(ls), "previous sort columns, wrapping to COMM")
    pane.keys("s")
    pane.keys("r")
    lines = pane.wait_for(lambda ls: "ADD/s▲" in head(ls), "reversed sort")
    assert selected(lines)[0].split()[2] == "postgres"  # selection stayed on its row
    rows = [line for line in lines[4:] if re.match(r"^[ >] *\d", line)]
    assert rows[-1].split()[2] == "postgres", "\n".join(lines)  # biggest last when reversed
    pane.keys("r", "Down")
    lines = pane.wait_for(lambda ls: "ADD/s▼" in head(ls) and selected(ls)
                          and "pg_worker" in selected(ls)[0], "selection moved down")
    pane.keys("Up")
    pane.wait_for(lambda ls: selected(ls) and "postgres" in selected(ls)[0], "selection back up")
    pane.keys("Tab")
    lines = pane.wait_text("Callbacks: 4")
    assert head(lines).split()[0] == "FUNC" and "____fput" in selected(lines)[0]
    pane.keys("Tab")
    pane.wait_text("Cgroups: ")
    pane.keys("Tab")
    pane.wait_text("Tasks: 6")


def test_cgroup_column_and_view_at_80x24(pane, recordings):
    start(pane, recordings["cgroups"], "--speed", "max")
    lines = pane.wait_text("REPLAY max +6.00s END")
    assert "CGROUP" in head(lines) and len(lines) == 24
    pg = [line for line in lines if "postgres " in line][0]
    assert "postgresql" in pg, pg
    pane.keys("Tab", "Tab")
    lines = pane.wait_text("Cgroups: 4")
    assert all(len(line) <= 80 for line in lines)
    cg_head = [line for line in lines if line.split()[:1] == ["CGROUP"]][0]
    for col in ("ADD/s▼", "CB/s", "DEP", "Q99", "R99"):
        assert col in cg_head, cg_head
    rows = [line.split()[0].lstrip(">") for line in lines[4:] if line.strip()][:4]
    assert rows[0] == "postgresql.service" and "9c0ffee19c0f" in rows, lines
    pane.keys("f", *"docker", "Enter")
    lines = pane.wait_text("filter: docker")
    assert "Cgroups: 1" in lines[2]


def test_filter_narrows_rows_and_escape_cancels(pane, recordings):
    start(pane, recordings["short"], "--speed", "max")
    pane.keys("f")
    pane.type("pg_")
    lines = pane.wait_text("filter (pid, comm or cgroup regex): pg_")
    assert "Tasks: 6" in lines[2]  # not applied while typing
    pane.keys("Enter")
    lines = pane.wait_text("filter: pg_")
    assert lines[2].startswith("Tasks: 1")
    assert "postgres" not in "\n".join(lines[3:]) and "pg_worker" in "\n".join(lines[3:])
    pane.keys("f", "BSpace", "BSpace", "BSpace")
    pane.type("1200")
    pane.keys("Enter")
    lines = pane.wait_text("filter: 1200")
    assert "python3" in "\n".join(lines[3:]) and "nginx" not in "\n".join(lines[3:])
    pane.keys("f")
    pane.type("zzz")
    pane.keys("Escape")
    lines = pane.wait_for(lambda ls: "filter (" not in ls[-1], "the prompt closed")
    assert "filter: 1200" in lines[2]
    pane.keys("f", "BSpace", "BSpace", "BSpace", "BSpace", "Enter")
    lines = pane.wait_text("Tasks: 6")
    assert "filter:" not in lines[2]


def test_enter_opens_detail_with_histograms(pane, recordings):
    start(pane, recordings["short"], "--speed", "max")
    pane.keys("Enter")
    lines = pane.wait_text("range : count distribution")
    text = "\n".join(lines)
    assert "postgres  tid 4242 pid 4242" in text
    assert "queue latency (last interval)  120 samples" in text
    assert re.search(r"µs -> .*: +\d+ \|\*+ *\|", text)
    pane.keys("Escape")
    lines = pane.wait_for(table_shown, "the table back")
    pane.keys("Enter")
    pane.wait_text("range : count distribution")
    pane.keys("Enter")
    pane.wait_for(table_shown, "Enter closes the detail")


def test_interval_pause_and_help(pane, recordings):
    start(pane, recordings["long"], "--speed", "1")
    pane.wait_text("every 1s")
    pane.keys("+")
    pane.wait_text("every 2s")
    pane.keys("-", "-")
    pane.wait_text("every 500ms")
    pane.keys("+")
    pane.wait_text("every 1s")

    def replay_at(lines):
        m = re.search(r"REPLAY ×1 \+(\S+)", lines[0])
        return m and m.group(1)

    pane.keys("Space")
    lines = pane.wait_text("PAUSED")
    at = replay_at(lines)
    time.sleep(1.5)
    assert replay_at(pane.screen()) == at  # frozen while paused
    pane.keys("Space")
    pane.wait_for(lambda ls: "PAUSED" not in ls[0] and replay_at(ls) != at, "resumed")
    pane.keys("?")
    lines = pane.wait_text("pause / resume sampling")
    assert "Keys" in "\n".join(lines)
    pane.keys("x")
    pane.wait_for(table_shown, "help closed by any key")
    pane.keys("C-c")
    pane.wait_text("EXIT=0")
    assert pane.flag("alternate_on") == "0"


def test_resize_redraws_and_too_small_says_so(pane, recordings):
    start(pane, recordings["short"], "--speed", "max")
    pane.tmux("resize-window", "-t", "t", "-x", "140", "-y", "30")
    lines = pane.wait_for(lambda ls: len(ls) == 30 and "BUSIEST" in head(ls)
                          and "R50" in head(ls), "the wide layout")
    assert max(len(line) for line in lines) > 80
    pane.tmux("resize-window", "-t", "t", "-x", "50", "-y", "20")
    pane.wait_text("terminal too small (50×20)")
    pane.tmux("resize-window", "-t", "t", "-x", "80", "-y", "24")
    lines = pane.wait_for(lambda ls: table_shown(ls) and "R50" not in ls[3],
                          "the 80-column layout again")
    assert "too small" not in "\n".join(lines)  # no leftovers from the message
    assert all(len(line) <= 80 for line in lines)


def test_too_small_at_start_is_one_line(pane, recordings):
    pane.tmux("resize-window", "-t", "t", "-x", "40", "-y", "10")
    pane.shell(f"{TWTRACE} top --replay {recordings['short']}; echo EXIT=$?")
    lines = pane.wait_text("EXIT=2")
    assert any(line.startswith("twtrace: terminal too small (40×10)") for line in lines)


def test_sigterm_restores_the_terminal(pane, recordings):
    start(pane, recordings["long"], "--speed", "1")
    pid = pane.tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip()
    children = subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout.split()
    assert children, "twtrace is not running under the pane's shell"
    for child in children:
        os.kill(int(child), 15)
    lines = pane.wait_text("EXIT=")
    assert pane.flag("alternate_on") == "0" and pane.flag("cursor_flag") == "1"
    assert not any("Traceback" in line for line in lines)
