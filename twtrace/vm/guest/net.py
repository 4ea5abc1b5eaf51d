"""Bring the guest's QEMU user-network interface up (stdlib only, Python 3.9+).

Debian builds virtio-net as a module and the guest has no udev or kmod, so
this loads virtio_net and its dependencies itself (init_module with the
decompressed image), then gives the interface QEMU's fixed user-network
address. Idempotent: loaded modules and an address already set are fine.
usage: python3 net.py
"""
import ctypes
import errno
import glob
import lzma
import os
import platform
import re
import subprocess
import sys
import time

ADDRESS = "10.0.2.15/24"  # what QEMU's user network (slirp) expects the guest to be
SEARCH = ("kernel/drivers/net", "kernel/net/core", "kernel/drivers/virtio")
SYS_INIT_MODULE = {"x86_64": 175, "aarch64": 105}


def module_file(name):
    base = "/lib/modules/" + os.uname().release
    for d in SEARCH:
        for path in glob.glob("%s/%s/%s.ko*" % (base, d, name)):
            return path
    return None  # built in, or not needed


def image(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".zst"):
        raise SystemExit("net.py: %s is zstd-compressed; no decompressor here" % path)
    return data


def load(name, seen):
    if name in seen:
        return
    seen.add(name)
    path = module_file(name)
    if path is None:
        return
    blob = image(path)
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", blob)
    for dep in (m.group(1).split(b",") if m and m.group(1) else []):
        load(dep.decode().replace("-", "_"), seen)
    libc = ctypes.CDLL(None, use_errno=True)
    nr = SYS_INIT_MODULE[platform.machine()]
    buf = ctypes.create_string_buffer(blob, len(blob))
    if libc.syscall(nr, buf, ctypes.c_ulong(len(blob)), b"") != 0:
        err = ctypes.get_errno()
        if err != errno.EEXIST:
            raise SystemExit("net.py: loading %s: %s" % (name, os.strerror(err)))


def interface(deadline):
    while time.monotonic() < deadline:
        names = [n for n in os.listdir("/sys/class/net") if n != "lo"]
        if names:
            return sorted(names)[0]
        time.sleep(0.1)
    raise SystemExit("net.py: no network interface appeared (is the NIC attached?)")


def ip(*args, ok=False):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0 and not ok:
        raise SystemExit("net.py: ip %s: %s" % (" ".join(args), r.stderr.strip()))


def main():
    load("virtio_net", set())
    dev = interface(time.monotonic() + 20)
    ip("link", "set", "lo", "up")
    ip("link", "set", dev, "up")
    ip("addr", "add", ADDRESS, "dev", dev, ok=True)  # "exists" on a second run
    print(dev)
    return 0


if __name__ == "__main__":
    sys.exit(main())
