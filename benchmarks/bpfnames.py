"""Names of BPF programs by id, from Debian's bpftool when the guest has it."""
import json
import subprocess


def prog_names():
    """{prog_id: name}; empty when bpftool is missing or fails."""
    try:
        out = subprocess.run(["bpftool", "prog", "show", "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, universal_newlines=True, timeout=120)
        progs = json.loads(out.stdout or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}
    return {p["id"]: p.get("name") or "id%d" % p["id"] for p in progs if "id" in p}
