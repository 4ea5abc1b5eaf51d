"""What the harness needs from a twtrace recording and from bpftrace's output,
read in one pass without decoding every line (an --events file of a storm
holds hundreds of thousands of lines, and the guest's CPU is emulated)."""
import json
import re

# Tolerant of json.dumps' default separators too.
ADD_RE = re.compile(r'^\{"type": ?"add", ?"ts_ns": ?(\d+),')
BPFTRACE_ADDS_RE = re.compile(r"^@adds\[(\d+), (.*), (\d+), (.*)\]: (\d+)\s*$")
DECODED = re.compile(r'^\{"type": ?"(summary|task|snapshot|lost)"')


def scan_record(lines, pid, windows=(), func="____fput"):
    """One pass over a recording's lines.

    pid: the workload's pid; windows: [(t_begin_ns, t_end_ns)]. Returns the
    summary, the workload's task line of the last snapshot, lost lines as
    (ts_ns, count), snapshot timestamps, and per window the number of add
    lines of func targeting pid inside it (the tick also queues work on
    whatever task it interrupts: task_mm_cid_work, up to 10 per second)."""
    out = {"summary": None, "task": None, "lost": [], "snapshots": [],
           "window_adds": [0] * len(windows)}
    # "adder_pid" does not match: the quote must come right before pid.
    needle = re.compile(r'"pid": ?%d[,}]' % pid)
    func_re = re.compile(r'"func": ?"%s"' % re.escape(func))
    for line in lines:
        m = ADD_RE.match(line)
        if m:
            if needle.search(line) and func_re.search(line):
                _count_in_windows(int(m.group(1)), windows, out["window_adds"])
            continue
        if not DECODED.match(line):
            continue
        obj = json.loads(line)
        kind = obj["type"]
        if kind == "summary":
            out["summary"] = obj
        elif kind == "snapshot":
            out["snapshots"].append(obj["ts_ns"])
        elif kind == "lost":
            out["lost"].append((obj["ts_ns"], obj["count"]))
        elif kind == "task" and obj.get("tid") == pid:
            out["task"] = obj
    return out


def _count_in_windows(ts, windows, counts):
    for i, (lo, hi) in enumerate(windows):
        if lo <= ts <= hi:
            counts[i] += 1
            return


def lost_between(lost, lo, hi):
    return sum(n for ts, n in lost if lo <= ts <= hi)


def bpftrace_adds(line, pid):
    """The @adds count of one bpftrace output line when adder and target are
    both pid (the workload queueing work on itself), else None."""
    m = BPFTRACE_ADDS_RE.match(line)
    if m and int(m.group(1)) == pid and int(m.group(3)) == pid:
        return int(m.group(5))
    return None
