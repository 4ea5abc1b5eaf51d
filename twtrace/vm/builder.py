"""Build a bootable guest for a cell from Debian's own packages.

No emulation and no maintainer scripts: a private apt configuration (its own
state and an empty dpkg status, so the host's package database is untouched)
downloads the cell's userspace with its dependency closure plus the kernel
image and headers, and each package is unpacked into a directory that becomes
the guest's read-only root over 9p. A small initramfs loads the modules needed
to mount that root. Everything lives under the cache directory, outside git.
"""
from __future__ import annotations

import fcntl
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from twtrace.errors import UserError
from twtrace.vm import cpio
from twtrace.vm.cells import MIRROR, Cell

# Bump when the layout of a built guest changes, so old caches are rebuilt.
BUILD_VERSION = 7

# Modules the initramfs loads, in any order (dependencies are resolved).
BOOT_MODULES = ("virtio_pci", "virtio_mmio", "9pnet_virtio", "9p", "overlay",
                "virtio_console")

# The Debian root has no coreutils: busybox provides the shell tools tests use.
APPLETS = ("sh ash ls cat sleep kill mkdir rm cp mv grep egrep sed awk head tail wc sort uniq "
           "true false env printf echo timeout ps stat touch chmod ln sync mount umount id "
           "uname seq xargs find tr cut date dd df du free hostname ip poweroff pidof pgrep "
           "pkill test [ expr basename dirname readlink realpath tee nproc setsid stty yes "
           "which md5sum sha256sum mktemp less more vi hexdump od top dmesg killall watch "
           "usleep tty reset clear").split()

# twtrace's pure-Python dependencies, installed for the guest's own Python.
GUEST_PYDEPS = ("typer>=0.9,<0.29", "rich>=12", "prometheus_client>=0.9")


def cache_root() -> Path:
    return Path(os.environ.get("TWTRACE_CACHE", "/var/cache/twtrace"))


@dataclass
class Guest:
    """A built guest: what the machine needs to boot it."""

    cell: Cell
    dir: Path
    root: Path
    kernel: Path
    initrd: Path
    info: dict

    @property
    def kernel_release(self) -> str:
        return self.info["kernel_release"]


def log(msg: str) -> None:
    print(f"twtrace vm: {msg}", file=sys.stderr, flush=True)


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise UserError(f"guest build: {' '.join(cmd[:3])} failed: {' / '.join(tail)}")
    return proc


class PrivateApt:
    """apt-get/apt-cache against one release and architecture, isolated from the host."""

    def __init__(self, base: Path, cell: Cell):
        self.base = base
        self.cell = cell
        self.conf = base / "apt.conf"

    def setup(self) -> None:
        for sub in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
                    "state/lists/partial", "cache/archives/partial"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "state/status").touch()
        keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
        suites = (self.cell.suite,) + tuple(self.cell.sources)
        (self.base / "etc/apt/sources.list").write_text(
            "".join(f"deb [signed-by={keyring}] {MIRROR} {s} main\n" for s in suites))
        self.conf.write_text(
            f'Dir "{self.base}/";\nDir::Etc "etc/apt/";\nDir::State "state/";\n'
            f'Dir::State::status "state/status";\nDir::Cache "cache/";\n'
            f'APT::Architecture "{self.cell.arch}";\n'
            f'APT::Architectures {{ "{self.cell.arch}"; }};\n'
            'APT::Install-Recommends "false";\nDebug::NoLocking "true";\n'
            # The registry may serve a frozen snapshot: sid's Release file then
            # outlives its Valid-Until. Signatures are still checked.
            'Acquire::Check-Valid-Until "false";\n'
            # _apt cannot write into root-owned cache dirs; we are root anyway.
            'APT::Sandbox::User "root";\n')

    def env(self) -> dict:
        return dict(os.environ, APT_CONFIG=str(self.conf), DEBIAN_FRONTEND="noninteractive")

    def get(self, *args: str) -> str:
        return _run(["apt-get", "-q", *args], env=self.env(), cwd=self.base).stdout

    def cache(self, *args: str) -> str:
        return _run(["apt-cache", *args], env=self.env()).stdout

    def depends(self, pkg: str) -> list:
        out = self.cache("depends", "--no-recommends", "--no-suggests", pkg)
        return re.findall(r"^\s+\|?Depends: ([^\s<>]+)", out, re.M)


def _extract(deb: Path, root: Path) -> None:
    # --keep-directory-symlink keeps our merged-/usr links (bin -> usr/bin) intact.
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    tar = subprocess.run(["tar", "-x", "--keep-directory-symlink", "--no-same-owner", "-C", str(root)],
                         stdin=dpkg.stdout, capture_output=True, text=True)
    dpkg.stdout.close()
    if dpkg.wait() != 0 or tar.returncode != 0:
        raise UserError(f"guest build: cannot unpack {deb.name}: {tar.stderr.strip()[:200]}")


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    if path.name.endswith(".gz"):
        import gzip
        return gzip.decompress(data)
    return data


def _module_index(moddir: Path) -> dict:
    index = {}
    for p in moddir.joinpath("kernel").rglob("*.ko*"):
        name = p.name.split(".ko")[0].replace("-", "_")
        index[name] = p
    return index


def _module_depends(blob: bytes) -> list:
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", blob)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def boot_modules(moddir: Path) -> list:
    """(name, bytes) of BOOT_MODULES and their dependencies, dependencies first."""
    index = _module_index(moddir)
    ordered, seen = [], set()

    def visit(name: str) -> None:
        if name in seen or name not in index:  # absent = built in (or not needed)
            return
        seen.add(name)
        blob = _read_module(index[name])
        for dep in _module_depends(blob):
            visit(dep)
        ordered.append((name, blob))

    for name in BOOT_MODULES:
        visit(name)
    return ordered


def _uncompressed_kernel(image: Path, out: Path) -> Path:
    """The ELF vmlinux inside an x86 bzImage: booting it via PVH skips ~2 s of
    decompression under TCG. Falls back to the image itself."""
    data = image.read_bytes()
    if data[:4] == b"\x7fELF" or data[0x202:0x206] != b"HdrS":
        return image
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        return image
    try:
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        elf = dec.decompress(data[start:])
    except lzma.LZMAError:
        return image
    if elf[:4] != b"\x7fELF":
        return image
    out.write_bytes(elf)
    return out


def _merged_usr(root: Path) -> None:
    (root / "usr").mkdir(parents=True, exist_ok=True)
    for d in ("bin", "sbin", "lib", "lib64"):
        (root / "usr" / d).mkdir(exist_ok=True)
        link = root / d
        if not link.exists() and not link.is_symlink():
            link.symlink_to(f"usr/{d}")


def _guest_python(root: Path) -> str:
    target = os.readlink(root / "usr/bin/python3")
    m = re.match(r"python(3\.\d+)$", target)
    if not m:
        raise UserError(f"guest build: cannot tell the guest's Python version from {target!r}")
    return m.group(1)


def _requires_python_misfits(target: Path, pyver: str) -> list:
    """Installed distributions whose Requires-Python excludes the guest's Python.

    pip honours Requires-Python only when the index announces it: a plain
    file index or --find-links directory does not, and pip then installs the
    newest release even with --python-version (bullseye's 3.9 got a typer that
    needs 3.10). Read what each wheel itself declares instead."""
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # pip always vendors it
        from pip._vendor.packaging.specifiers import SpecifierSet
    bad = []
    for meta in target.glob("*.dist-info/METADATA"):
        fields = dict(re.findall(r"^(Name|Version|Requires-Python): *(.+?)\s*$",
                                 meta.read_text(errors="replace").split("\n\n", 1)[0], re.M))
        spec = fields.get("Requires-Python")
        if spec and not SpecifierSet(spec).contains(pyver + ".0"):
            bad.append(f"{fields['Name']}!={fields['Version']}")
    return bad


def _pip_target(pyver: str, target: Path) -> None:
    """twtrace's pure-Python dependencies for the guest's own Python version."""
    _pip_install(pyver, target, GUEST_PYDEPS, [])


def _dist_name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec, 1)[0].lower().replace("-", "_")


def _add_missing_pydeps(guest: Guest) -> None:
    """A dependency added to GUEST_PYDEPS after this guest was built goes into
    its pydeps directory beside the others, without a rebuild. Only new
    top-level entries are moved in, never replacing one: guests of other
    checkouts may be running from the same directory."""
    target = guest.root / "opt/twtrace-pydeps"
    have = {p.name.split("-")[0].lower() for p in target.glob("*.dist-info")}
    missing = [spec for spec in GUEST_PYDEPS if _dist_name(spec) not in have]
    if not missing or not target.is_dir():
        return
    log(f"adding {', '.join(missing)} to guest {guest.cell.name}")
    staging = guest.dir / "pydeps-staging"
    if staging.exists():
        shutil.rmtree(staging)
    _pip_install(guest.info["python"], staging, missing, ["--no-deps"])
    for entry in staging.iterdir():
        if not (target / entry.name).exists():
            entry.rename(target / entry.name)
    shutil.rmtree(staging, ignore_errors=True)


def _pip_install(pyver: str, target: Path, specs, extra) -> None:
    excluded: list = []
    for _ in range(20):
        if target.exists():
            shutil.rmtree(target)
        _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
              "--target", str(target), "--python-version", pyver, "--only-binary=:all:",
              "--implementation", "py", "--no-compile", *extra, *specs, *excluded])
        bad = _requires_python_misfits(target, pyver)
        if not bad:
            return
        excluded += bad
    raise UserError(f"guest build: no release of {', '.join(specs)} installs for "
                    f"Python {pyver} (excluded {', '.join(excluded)})")


def _guest_tools(root: Path) -> None:
    # No base-files package: create the mount points and files it would provide.
    for d in ("dev", "proc", "sys", "tmp", "run", "root", "etc", "mnt", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/hostname").write_text("twtrace-guest\n")
    bindir = root / "usr/local/bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for applet in APPLETS:
        if not any((root / d / applet).exists() for d in ("usr/bin", "usr/sbin")):
            (bindir / applet).symlink_to("/bin/busybox")
    wrapper = bindir / "twtrace"
    wrapper.write_text('#!/bin/sh\nexec python3 -m twtrace "$@"\n')
    wrapper.chmod(0o755)


def _bcc_version(root: Path) -> str:
    for p in (root / "usr/lib/python3/dist-packages").glob("bcc/version.py"):
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", p.read_text())
        if m:
            return m.group(1)
    return "unknown"


def _precompile(cell: Cell, guest: Guest) -> None:
    """Byte-compile the guest's Python files inside the guest itself.

    Debian ships no .pyc files (its postinst scripts make them, and we run
    none), so without this every guest Python start compiles the stdlib and
    bcc from source: over a second per command under TCG.
    """
    from twtrace.vm.machine import Machine

    # Importing what twtrace and bcc import writes exactly the .pyc files a
    # run needs; compiling the whole stdlib would take minutes under TCG.
    warm = ("import bcc, argparse, ctypes, json, re, signal, subprocess, threading, "
            "base64, glob, termios, fcntl, platform, socket, selectors, tempfile, shutil, "
            "logging, multiprocessing, struct, errno, resource, sysconfig, "
            "typer, rich.console, rich.table, rich.text, rich.live, rich.layout, "
            "rich.panel, rich.markup, rich.progress_bar, rich.traceback")
    with Machine(cell, guest=guest, writable_root=True) as vm:
        # cwd "/": the caller's directory is not shared with this guest
        vm.run(["python3", "-c", warm], timeout=300, cwd="/").check()


def _stamp(cell: Cell) -> str:
    # What the guest is made of: an SMP cell boots its release's guest as is.
    made_of = {k: v for k, v in cell.__dict__.items() if k != "cpus"}
    return json.dumps({"v": BUILD_VERSION, "cell": made_of}, sort_keys=True, default=str)


def guest_dir(cell: Cell) -> Path:
    return cache_root() / "guests" / cell.guest_name


def load(cell: Cell) -> Guest | None:
    d = guest_dir(cell)
    try:
        info = json.loads((d / "guest.json").read_text())
    except (OSError, ValueError):
        return None
    if info.get("stamp") != _stamp(cell):
        return None
    return Guest(cell, d, d / "root", d / info["kernel"], d / "initrd.cpio", info)


def build(cell: Cell, force: bool = False) -> Guest:
    """Return the cell's guest, building it first if the cache lacks it."""
    d = guest_dir(cell)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as lock:
        # Parallel test workers may ask for the same guest: one builds, others wait.
        fcntl.flock(lock, fcntl.LOCK_EX)
        guest = None if force else load(cell)
        if guest:
            _add_missing_pydeps(guest)
            return guest
        return _build_locked(cell, d)


def _build_locked(cell: Cell, d: Path) -> Guest:
    t0 = time.monotonic()
    log(f"building guest {cell.name} (Debian {cell.suite}, {cell.arch}) in {d}")
    if not shutil.which("dpkg-deb") or not shutil.which("apt-get"):
        raise UserError("building a guest needs apt-get and dpkg-deb (a Debian or Ubuntu host)")
    apt = PrivateApt(d / "apt", cell)
    apt.setup()
    apt.get("update")
    # Resolve the versioned image/headers from the metapackages: Debian's ABI
    # number moves and old versions vanish from the index.
    image = apt.depends(cell.image_meta)
    headers = apt.depends(cell.headers_meta)
    image = [p for p in image if p.startswith("linux-image-")][:1]
    headers = [p for p in headers if p.startswith("linux-headers-")][:1]
    if not image or not headers:
        raise UserError(f"guest build: {cell.suite}/{cell.arch} has no kernel image or headers")
    # The kernel's own packages, without the rest of their dependencies: the
    # versioned image and headers plus whatever they depend on that carries
    # the same ABI name (sid splits the image into linux-binary-/linux-modules-
    # /linux-base-ABI; headers need linux-headers-ABI-common).
    abi = image[0][len("linux-image-"):].rsplit("-", 1)[0]  # 6.1.0-50 / 7.2.13+deb14
    todo, kpkgs = image + headers, []
    while todo:
        pkg = todo.pop()
        if pkg in kpkgs:
            continue
        kpkgs.append(pkg)
        todo += [p for p in apt.depends(pkg) if p.startswith("linux-") and abi in p]
    image_pkg, image, headers = image[0], [], kpkgs
    apt.get("-y", "--download-only", "install", *cell.userspace)
    kdir = d / "apt/kernel"
    kdir.mkdir(exist_ok=True)
    for old in kdir.glob("*.deb"):
        old.unlink()
    _run(["apt-get", "-q", "download", *image, *headers], env=apt.env(), cwd=kdir)

    root = d / "root"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    _merged_usr(root)
    debs = sorted((d / "apt/cache/archives").glob("*.deb")) + sorted(kdir.glob("*.deb"))
    for deb in debs:
        _extract(deb, root)
    moddirs = sorted(root.glob("usr/lib/modules/*")) or sorted(root.glob("lib/modules/*"))
    if len(moddirs) != 1:
        raise UserError(f"guest build: expected one kernel in {cell.name}, found {len(moddirs)}")
    release = moddirs[0].name
    images = [p for g in cell.arch_info.kernel_glob for p in sorted(root.glob(g))]
    if not images:
        raise UserError(f"guest build: no kernel image in {image_pkg}")
    kernel = _uncompressed_kernel(images[0], d / "vmlinux")
    if kernel == images[0]:
        shutil.copyfile(images[0], d / "kernel.img")
        kernel = d / "kernel.img"
    if not (root / "bin/busybox").exists():
        raise UserError(f"guest build: busybox-static missing from {cell.name}")

    files = {"init": (Path(__file__).parent / "guest/init.sh").read_bytes(),
             "bin/busybox": (root / "bin/busybox").read_bytes()}
    order = []
    for name, blob in boot_modules(moddirs[0]):
        files[f"modules/{name}.ko"] = blob
        order.append(name)
    files["modules/order"] = "".join(n + "\n" for n in order).encode()
    cpio.write(d / "initrd.cpio", files, executable={"init", "bin/busybox"})

    _guest_tools(root)
    pyver = _guest_python(root)
    _pip_target(pyver, root / "opt/twtrace-pydeps")
    info = {
        "stamp": _stamp(cell),
        "cell": cell.name,
        "kernel_release": release,
        "kernel": kernel.name,
        "python": pyver,
        "bcc": _bcc_version(root),
        "packages": [p.name for p in debs],
        "built_s": round(time.monotonic() - t0, 1),
    }
    _precompile(cell, Guest(cell, d, root, kernel, d / "initrd.cpio", info))
    info["built_s"] = round(time.monotonic() - t0, 1)
    (d / "guest.json").write_text(json.dumps(info, indent=1))
    log(f"guest {cell.name} ready: kernel {release}, Python {pyver}, bcc {info['bcc']} "
        f"({info['built_s']} s)")
    return load(cell)
