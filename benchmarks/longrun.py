"""The long run (issue 12 item 7): many short-lived processes under
`twtrace top --json 1` and `twtrace record --interval 1` at once.

A busybox shell forks one child per iteration; each child opens /dev/null
as its stdin and exits, its final close queueing one ____fput on itself as
it exits. The shell runs as a link named busybox-twb, so every child has
that comm and its task lines can be summed against the iteration count (the
truth). Every SAMPLE_S the harness samples each tracer's RSS, its CPU time
and how full its BPF hash maps are; the snapshots' own timestamps give the
time each interval's read and write took.
"""
import json
import os
import re
import subprocess
import threading
import time

from benchmarks import bpfmaps, procfs, stats
from benchmarks.tracers import Tracer

COMM = "busybox-twb"
LINK = "/tmp/twbench/" + COMM
SAMPLE_S = 10.0
DEFAULT_MAX_S = 2700.0
SNAP_RE = re.compile(r'^\{"type": ?"snapshot".*?"ts_ns": ?(\d+)')
COMM_RE = re.compile(r'"comm": ?"%s"' % COMM)
TID_RE = re.compile(r'"tid": ?(\d+)')
GEN_RE = re.compile(r'"gen": ?(\d+)')
ADDS_RE = re.compile(r'"adds": ?(\d+)')  # the task's own, the first "adds" in its line


def _gen(line):
    m = GEN_RE.search(line)
    return int(m.group(1)) if m else None


class SnapshotReader:
    """Watches a tracer's JSON lines: snapshot times, and the children's adds:
    each child's latest task line, keyed by (tid, gen), summed.  (Snapshots
    list changed tasks only, and an exited child is listed once after its
    exit and then let go: docs/format.md.)"""

    def __init__(self):
        self.snaps = []
        self.summary = None
        self.latest = {}
        self.full = {}  # the latest snapshot's entries that did not fit, per map

    @property
    def child_adds(self):
        return sum(self.latest.values())

    def __call__(self, stream, line, ts):
        if stream != "stdout":
            return
        m = SNAP_RE.match(line)
        if m:
            self.snaps.append(int(m.group(1)))
            self.full = json.loads(line).get("full") or {}
        elif line.startswith('{"type":"task"') or line.startswith('{"type": "task"'):
            if COMM_RE.search(line):
                key = (int(TID_RE.search(line).group(1)), _gen(line))
                self.latest[key] = int(ADDS_RE.search(line).group(1))
        elif '"type":"summary"' in line or '"type": "summary"' in line:
            self.summary = json.loads(line)


class ForkStorm:
    def __init__(self, forks):
        os.makedirs(os.path.dirname(LINK), exist_ok=True)
        if not os.path.islink(LINK):
            os.symlink("/bin/busybox", LINK)
        # An applet name starting with "busybox" makes busybox its own shell.
        script = ('i=0; while [ $i -lt %d ]; do (exec </dev/null); i=$((i+1)); '
                  '[ $((i %% 1000)) -eq 0 ] && echo $i; done; echo done $i' % forks)
        self.forks = 0
        self.done = False
        self.t_begin = time.monotonic()
        self.proc = subprocess.Popen([LINK, "sh", "-c", script], stdout=subprocess.PIPE,
                                     universal_newlines=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            words = line.split()
            if words and words[0] == "done":
                self.forks, self.done = int(words[1]), True
            elif words:
                self.forks = int(words[0])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        self.reader.join(10)
        self.t_end = time.monotonic()


def sample(tracers, t0):
    out = {"t": time.monotonic() - t0}
    for name, tr in tracers.items():
        maps = bpfmaps.occupancy(procfs.map_ids(tr.pid))
        out[name] = {"rss_kb": procfs.rss_kb(tr.pid), "cpu_s": procfs.cpu_seconds(tr.pid),
                     "maps": maps, "entries": sum(n for n, _ in maps.values())}
    return out


def run(args, storm):
    max_s = args.seconds if args.seconds and args.seconds > 60 else DEFAULT_MAX_S
    readers = {"top": SnapshotReader(), "record": SnapshotReader()}
    tracers = {"top": Tracer("top-json", interval=1, on_line=readers["top"], spool=True),
               "record": Tracer("record", outfile="-", interval=1, on_line=readers["record"],
                                spool=True)}
    try:
        ready = {k: t.wait_ready() for k, t in tracers.items()}
        time.sleep(2)
        t0 = time.monotonic()
        samples = [sample(tracers, t0)]
        fs = ForkStorm(args.forks)
        while fs.proc.poll() is None and time.monotonic() - t0 < max_s:
            time.sleep(SAMPLE_S)
            s = sample(tracers, t0)
            s["forks"] = fs.forks
            samples.append(s)
            print("bench: long %.0f s: %d forks, %s" % (s["t"], fs.forks, ", ".join(
                "%s rss %d kB entries %d" % (k, s[k]["rss_kb"], s[k]["entries"])
                for k in tracers)), flush=True)
        fs.stop()
        time.sleep(3)  # the last children's callbacks reach a snapshot
    finally:
        for t in tracers.values():
            t.stop()
    return summarise(samples, readers, fs, ready)


def summarise(samples, readers, fs, ready):
    out = {"forks": fs.forks, "completed": fs.done, "seconds": fs.t_end - fs.t_begin,
           "forks_per_s": fs.forks / max(fs.t_end - fs.t_begin, 1e-9),
           "ready_s": ready, "samples": samples, "tracers": {}}
    for name, rd in readers.items():
        out["tracers"][name] = trends(name, samples, rd.snaps)
        out["tracers"][name]["child_adds"] = rd.child_adds
        out["tracers"][name]["map_full"] = {k: v for k, v in rd.full.items() if v}
    rec = readers["record"].summary or {}
    out["record_summary"] = {k: rec.get(k) for k in ("items", "adds", "callbacks", "evicted",
                                                     "lost_events", "unmatched")}
    return out


def trends(name, samples, snaps):
    pts = [s for s in samples if name in s]
    rss = [(s["t"], s[name]["rss_kb"]) for s in pts]
    ent = [(s["t"], s[name]["entries"]) for s in pts]
    cpu = [((b["t"] + a["t"]) / 2, (b[name]["cpu_s"] - a[name]["cpu_s"]) / (b["t"] - a["t"]))
           for a, b in zip(pts, pts[1:])]
    # Each interval lasts 1 s plus what its read and write took.
    t_first = snaps[0] if snaps else 0
    extra = [((b - t_first) / 1e9, (b - a) / 1e9 - 1.0) for a, b in zip(snaps, snaps[1:])]
    fullest = max(pts[-1][name]["maps"].items(), key=lambda kv: kv[1][0] / max(kv[1][1], 1),
                  default=(None, (0, 0))) if pts else (None, (0, 0))
    return {"rss_kb": _series(rss), "entries": _series(ent), "cpu_frac": _series(cpu),
            "interval_extra_s": _series(extra), "snapshots": len(snaps),
            "fullest_map": {"name": fullest[0], "entries": fullest[1][0],
                            "max_entries": fullest[1][1]}}


def _series(points):
    """First and last quarter's medians, fitted slope and growth of a series."""
    ys = [y for _, y in points]
    q = max(len(ys) // 4, 1)
    return {"first": stats.median(ys[:q]), "last": stats.median(ys[-q:]),
            "slope_per_s": stats.slope(points), "growth": stats.growth(points),
            "n": len(ys)}


def table(res):
    head = "| measure (first quarter → last quarter of the run, fitted change) | `top --json 1` | `record --interval 1` |"
    lines = [head, "|---|---:|---:|"]
    rows = (("RSS, MB", "rss_kb", 1 / 1024.0, "%.1f"),
            ("CPU per second of run", "cpu_frac", 100.0, "%.1f %%"),
            ("interval length − 1 s (its read + write), s", "interval_extra_s", 1.0, "%.2f"),
            ("entries in its BPF hash maps", "entries", 1.0, "%.0f"))
    for label, key, scale, f in rows:
        cells = []
        for name in ("top", "record"):
            s = res["tracers"][name][key]
            if s["first"] is None:
                cells.append("–")
                continue
            g = s["growth"]
            cells.append("%s → %s (%s)" % (f % (s["first"] * scale), f % (s["last"] * scale),
                                           "–" if g is None else "%+.0f %%" % (g * 100)))
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    fm = [res["tracers"][n]["fullest_map"] for n in ("top", "record")]
    lines.append("| fullest map at the end | %s |" % " | ".join(
        "`%s` %d/%d" % (m["name"], m["entries"], m["max_entries"]) if m["name"] else "–"
        for m in fm))
    lines.append("| entries that did not fit, per map (last snapshot) | %s |" % " | ".join(
        ", ".join("`%s` %d" % kv for kv in sorted(res["tracers"][n].get("map_full", {}).items()))
        or "none" for n in ("top", "record")))
    lines.append("| children's adds (each child's latest line) / forks | %s |" % " | ".join(
        "%d / %d" % (res["tracers"][n]["child_adds"], res["forks"]) for n in ("top", "record")))
    rs = res["record_summary"]
    lines.append("")
    lines.append("%d forks in %.0f s (%.0f/s, emulated)%s; record's summary: adds %s, "
                 "evicted %s, unmatched %s, lost %s." % (
                     res["forks"], res["seconds"], res["forks_per_s"],
                     "" if res["completed"] else " (stopped at the time limit)",
                     rs.get("adds"), rs.get("evicted"), rs.get("unmatched"),
                     rs.get("lost_events")))
    return "\n".join(lines)
