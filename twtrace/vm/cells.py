"""The guests twtrace can boot, described as data.

A cell is one Debian release booted on its own kernel with its own userspace
(python3, bcc, kernel headers). Adding a kernel or an architecture is adding an
entry here; the builder and the machine read nothing else.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

from twtrace.errors import UserError

MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class Arch:
    deb: str  # Debian architecture name
    uname: str  # what `uname -m` prints in the guest
    qemu: str  # emulator binary
    qemu_pkg: str  # Debian package that provides it
    machine: tuple  # -M/-cpu arguments
    console: str  # serial device the kernel writes to
    # kernel image inside the kernel packages: /boot up to trixie, the
    # module directory from sid (linux-binary-ABI)
    kernel_glob: tuple = ("boot/vmlinuz-*", "usr/lib/modules/*/vmlinuz")
    kernel_args: tuple = ()


ARCHES = {
    "amd64": Arch(
        deb="amd64",
        uname="x86_64",
        qemu="qemu-system-x86_64",
        qemu_pkg="qemu-system-x86",
        machine=("-M", "pc", "-cpu", "max"),
        console="ttyS0",
        # ACPI stays on: without it there is no HPET or PM timer, TSC
        # calibration against the emulated PIT fails on a busy host (one boot
        # in three here), and the clock falls back to jiffies in 4 ms steps.
        # tsc=reliable keeps the clocksource watchdog from distrusting TCG's TSC.
        kernel_args=("8250.nr_uarts=1", "tsc=reliable"),
    ),
    "arm64": Arch(
        deb="arm64",
        uname="aarch64",
        qemu="qemu-system-aarch64",
        qemu_pkg="qemu-system-arm",
        # pauth-impdef: QEMU's architected pointer-auth emulation is slow and
        # the kernel uses it on every call (vm-notes: boot 7 s -> 2 s).
        machine=("-M", "virt", "-cpu", "max,pauth-impdef=on"),
        console="ttyAMA0",
    ),
}

ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "amd64": "amd64",
                "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class Cell:
    suite: str  # Debian release whose packages make the guest
    kernel: str  # the label users pass to --kernel
    arch: str  # key of ARCHES
    image_meta: str  # metapackage naming the current kernel image
    headers_meta: str
    sources: tuple = ()  # extra "suite" entries (e.g. backports)
    userspace: tuple = ("python3", "python3-bpfcc", "busybox-static")
    notes: str = ""
    cpus: int = 1  # vCPUs: the SMP cells boot 2, so races between CPUs are real

    @property
    def guest_name(self) -> str:
        """The guest it boots (SMP cells share their release's guest)."""
        return f"{self.suite}-{self.arch}"

    @property
    def name(self) -> str:
        return self.guest_name + (f"-smp{self.cpus}" if self.cpus > 1 else "")

    @property
    def arch_info(self) -> Arch:
        return ARCHES[self.arch]


def _cell(suite: str, kernel: str, arch: str, **kw) -> Cell:
    return Cell(suite=suite, kernel=kernel, arch=arch,
                image_meta=f"linux-image-{arch}",
                headers_meta=f"linux-headers-{arch}", **kw)


CELLS = {
    c.name: c
    for c in (
        _cell("bookworm", "6.1", "amd64"),
        _cell("bullseye", "5.10", "amd64"),
        _cell("trixie", "6.12", "amd64"),
        _cell("sid", "7.2", "amd64"),
        _cell("bookworm", "6.1", "arm64"),
        _cell("trixie", "6.12", "arm64"),
    )
}
# Two vCPUs: fentry on x86-64, kprobes on arm64.  They run what concurrency
# can break (tests/vm/conftest.py); `scripts/test` runs them with the rest.
SMP_CELLS = {c.name: c for c in (_cell("trixie", "6.12", "amd64", cpus=2),
                                 _cell("bookworm", "6.1", "arm64", cpus=2))}
ALL_CELLS = {**CELLS, **SMP_CELLS}

DEFAULT_CELL = "bookworm-amd64"

# What a benchmark guest adds to its cell's userspace: the tools twtrace is
# compared with and measured by (scripts/bench).
BENCH_PACKAGES = ("bpftrace", "bpftool")


@dataclass(frozen=True)
class VariantCell(Cell):
    """A cell's guest with extra packages, cached under its own name
    (trixie-amd64+bench). A subclass rather than a new Cell field: the guest
    cache key is the cell's fields, so the test guests' keys stay as they are."""

    variant: str = ""

    @property
    def guest_name(self) -> str:
        return f"{self.suite}-{self.arch}+{self.variant}"

    @property
    def name(self) -> str:
        cpus = getattr(self, "cpus", 1)
        return self.guest_name + (f"-smp{cpus}" if cpus > 1 else "")


def bench_cell(cell: Cell) -> VariantCell:
    fields = dict(cell.__dict__, userspace=tuple(cell.userspace) + BENCH_PACKAGES)
    return VariantCell(variant="bench", **fields)


def host_arch() -> str:
    return ARCH_ALIASES.get(platform.machine(), "amd64")


def find_cell(kernel: str | None = None, arch: str | None = None) -> Cell:
    """Resolve --kernel/--arch (or TWTRACE_VM_KERNEL/TWTRACE_VM_ARCH) to a cell.

    --kernel takes a kernel label (6.1), a suite (bookworm) or a cell name
    (bookworm-arm64).
    """
    kernel = kernel or os.environ.get("TWTRACE_VM_KERNEL") or ""
    arch = arch or os.environ.get("TWTRACE_VM_ARCH") or ""
    if kernel in ALL_CELLS and not arch:
        return ALL_CELLS[kernel]
    want_arch = ARCH_ALIASES.get(arch, arch) if arch else None
    if arch and want_arch not in ARCHES:
        raise UserError(f"unknown guest architecture {arch!r}; known: {', '.join(sorted(ARCHES))}")
    if not kernel:
        default = CELLS[DEFAULT_CELL]
        kernel = default.kernel
    matches = [c for c in ALL_CELLS.values()
               if ((kernel in (c.kernel, c.suite, c.guest_name) and c.cpus == 1)
                   or kernel == c.name)
               and (want_arch is None or c.arch == want_arch)]
    if not matches:
        known = ", ".join(f"{c.kernel}/{c.arch}" for c in CELLS.values())
        raise UserError(f"no guest for kernel {kernel!r}"
                        f"{' on ' + arch if arch else ''}; known kernel/arch pairs: {known}")
    # Prefer amd64 when the arch was not given: it is what this host emulates fastest.
    matches.sort(key=lambda c: c.arch != "amd64")
    return matches[0]
