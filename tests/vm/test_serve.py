"""`twtrace serve` in a real kernel, scraped by a real Prometheus on the host
through QEMU's port forward; the increase Prometheus stores over the
workload's window equals the workload's own truth, exactly."""
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from twtrace.vm.machine import PROJECT

K, ROUNDS = 16, 3
DEADLINE_S = 480  # the whole test, well inside a cell's time limit
NET_PY = PROJECT / "twtrace/vm/guest/net.py"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """A Prometheus server on the host loopback, scraping one target every 2 s."""

    def __init__(self, tmp: Path, target: str):
        exe = shutil.which("prometheus")
        if not exe:
            pytest.skip("prometheus not installed (scripts/setup installs Debian's package)")
        self.port = free_port()
        cfg = tmp / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n"
                       "scrape_configs:\n  - job_name: twtrace\n    static_configs:\n"
                       f"      - targets: ['{target}']\n")
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [exe, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def api(self, path: str, **params):
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def samples(self, selector: str, since: float):
        """[(unix ts, value)] Prometheus stored for selector after `since` (raw
        samples of a range vector, not an extrapolated increase())."""
        res = self.api("/api/v1/query", query=f"{selector}[10m]")["data"]["result"]
        assert len(res) <= 1, res
        return [(float(t), float(v)) for t, v in (res[0]["values"] if res else []) if float(t) > since]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wait_for(what, check, deadline, diag=lambda: ""):
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}\n{diag()}", pytrace=False)


def first_scrape_after(prom, t, deadline, diag):
    """The adds and callbacks of ____fput as of the first scrape that began
    after host time t (0 when the series is not there yet: nothing counted)."""
    info = wait_for(f"a scrape after {t:.1f}",
                    lambda: prom.samples("twtrace_info", t), deadline, diag)
    ts = info[0][0]
    out = {}
    for name in ("twtrace_adds_total", "twtrace_callbacks_total",
                 "twtrace_queue_latency_seconds_count"):
        vals = dict(prom.samples(f'{name}{{func="____fput"}}', t - 1e-3))
        out[name] = vals.get(ts, 0.0)
    return out


def test_prometheus_scrapes_serve_in_the_guest(vm, tmp_path):
    deadline = time.monotonic() + DEADLINE_S
    (host_port, guest_port), = vm.forwards
    vm.run(["python3", str(NET_PY)], timeout=120).check()
    hold = tmp_path / "hold"
    hold.mkdir()
    # The workload first, held before its first round; then serve, filtered
    # to the workload's pid (twtrace itself is a python3 too).
    start = (f"setsid python3 examples/close_batch.py --files {K} --rounds {ROUNDS} "
             f"--hold {hold} > {tmp_path}/truth 2> {tmp_path}/wl.err < /dev/null & wl=$!; "
             f"setsid twtrace serve --listen 0.0.0.0:{guest_port} -p $wl "
             f"> {tmp_path}/serve.out 2> {tmp_path}/serve.err < /dev/null & "
             f"echo $wl $! > {tmp_path}/pids")
    vm.run(["sh", "-c", start], cwd=str(PROJECT), timeout=60).check()
    prom = Prometheus(tmp_path, f"127.0.0.1:{host_port}")

    def diag():
        return "\n".join(f"--- {n}\n{(tmp_path / n).read_text(errors='replace')[-2000:]}"
                         for n in ("serve.err", "wl.err", "prometheus.log")
                         if (tmp_path / n).exists())
    try:
        wait_for("the workload to hold before its first round",
                 lambda: (hold / "ready").is_dir(), deadline, diag)
        wait_for("Prometheus to scrape twtrace serve", lambda: prom.samples("twtrace_info", 0),
                 deadline, diag)
        t1 = time.time()
        before = first_scrape_after(prom, t1, deadline, diag)
        (hold / "go").mkdir()
        wait_for("the workload's rounds", lambda: (hold / "done").is_dir(), deadline, diag)
        t2 = time.time()
        after = first_scrape_after(prom, t2, deadline, diag)
        (hold / "end").mkdir()
        truth = json.loads(wait_for("the workload's truth", lambda: (
            tmp_path / "truth").read_text().strip(), deadline, diag).splitlines()[-1])
        exposition = urllib.request.urlopen(f"http://127.0.0.1:{host_port}/metrics",
                                            timeout=30).read()
    finally:
        prom.stop()
        pids = (tmp_path / "pids").read_text().split() if (tmp_path / "pids").exists() else []
        if pids:
            vm.run(["sh", "-c", f"kill -INT {pids[1]}; kill {pids[0]} 2>/dev/null; "
                    f"while kill -0 {pids[1]} 2>/dev/null; do sleep 0.2; done"], timeout=60)

    want = truth["files"] * len(truth["rounds"])
    assert want == K * ROUNDS
    for name, value in after.items():
        assert value - before[name] == want, (name, before, after)
    r = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True,
                       timeout=60)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), (r.stdout + r.stderr).decode()
    assert b"twtrace_info{" in exposition and b'probe_mode="' in exposition
