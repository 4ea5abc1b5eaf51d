"""Reading a tracer process from /proc: its CPU time, memory and BPF objects.

Parsers take text and are pure (unit-tested); the readers around them only
open the files. Python 3.9+ and the standard library only: this runs inside
every guest with that guest's own Python.
"""
import os

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat_cpu(text, clk_tck=CLK_TCK):
    """utime + stime in seconds from /proc/PID/stat. The comm field may hold
    spaces and parentheses, so fields are counted from the last ')'."""
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(rest[11]) + int(rest[12])) / float(clk_tck)


def parse_status_kb(text, key="VmRSS"):
    """A kB figure from /proc/PID/status (VmRSS, VmHWM, ...), or None."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    return None


def parse_fdinfo(text):
    """The 'key: value' fields of one /proc/PID/fdinfo/FD, decimal values as
    ints (flags are octal and tags hex: those stay strings)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        value = value.strip()
        try:
            out[key.strip()] = int(value) if value[:1] != "0" or value == "0" else value
        except ValueError:
            out[key.strip()] = value
    return out


def _read(path):
    with open(path) as f:
        return f.read()


def cpu_seconds(pid):
    return parse_stat_cpu(_read("/proc/%d/stat" % pid))


def rss_kb(pid):
    return parse_status_kb(_read("/proc/%d/status" % pid))


def bpf_fdinfos(pid):
    """fdinfo of each BPF program and map fd the process holds: a list of
    dicts with 'prog_id' (programs) or 'map_id' (maps)."""
    out = []
    base = "/proc/%d/fdinfo" % pid
    try:
        fds = os.listdir(base)
    except OSError:
        return out
    for fd in fds:
        try:
            info = parse_fdinfo(_read("%s/%s" % (base, fd)))
        except OSError:
            continue  # closed meanwhile
        if "prog_id" in info or "map_id" in info:
            out.append(info)
    return out


def prog_stats(pid):
    """{prog_id: (run_time_ns, run_cnt)} of the process's BPF programs.
    A program held by two fds is counted once. Link fds (fentry attachments)
    also name a prog_id but carry no run counts: only program fds count."""
    progs = {}
    for info in bpf_fdinfos(pid):
        if "prog_id" in info and "run_cnt" in info:
            progs[info["prog_id"]] = (info.get("run_time_ns", 0), info.get("run_cnt", 0))
    return progs


def map_ids(pid):
    """{map_id: fdinfo} of the process's BPF maps."""
    return {i["map_id"]: i for i in bpf_fdinfos(pid) if "map_id" in i}
