"""Print, as JSON, the kernel state a tracer can leave behind: the text
interface's kprobe/uprobe events, every BPF program, map and link id in the
system (bpf(2) *_GET_NEXT_ID, no bpftool needed) and pins under /sys/fs/bpf.
Runs inside the guest, stdlib only, Python 3.9+."""
import ctypes
import errno
import json
import os
import platform

BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}[platform.machine()]
CMDS = {"progs": 11, "maps": 12, "links": 31}  # BPF_{PROG,MAP,LINK}_GET_NEXT_ID
libc = ctypes.CDLL(None, use_errno=True)


class NextId(ctypes.Structure):
    _fields_ = [("start_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32),
                ("open_flags", ctypes.c_uint32), ("pad", ctypes.c_uint8 * 116)]


def ids(cmd):
    out, attr = [], NextId()
    while True:
        attr.start_id = out[-1] if out else 0
        if libc.syscall(BPF_SYSCALL, cmd, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                return out
            return "error: " + os.strerror(err)  # e.g. links before 5.8
        out.append(attr.next_id)


def lines(name):
    for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        try:
            with open(os.path.join(d, name)) as f:
                return sorted(f.read().splitlines())
        except OSError:
            continue
    return None


state = {name: ids(cmd) for name, cmd in CMDS.items()}
state["kprobe_events"] = lines("kprobe_events")
state["uprobe_events"] = lines("uprobe_events")
state["pins"] = sorted(os.listdir("/sys/fs/bpf")) if os.path.isdir("/sys/fs/bpf") else None
print(json.dumps(state))
