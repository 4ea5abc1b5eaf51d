"""Offsets of the few kernel struct fields the BPF side reads, from the
kernel's own BTF (/sys/kernel/btf/vmlinux).

Why: including <linux/sched.h> is most of what bcc's clang spends compiling
twtrace's program (about half of it, measured in the test guests), and the
header can disagree with the running kernel when the headers package is a
near miss.  BTF describes the running kernel exactly.  When BTF is missing
or does not hold what we expect, the loader falls back to the header.
"""
from __future__ import annotations

import struct
from array import array
from typing import Dict, Optional, Tuple

BTF_PATH = "/sys/kernel/btf/vmlinux"
MAGIC = 0xEB9F

# BTF kinds (include/uapi/linux/btf.h) and the bytes that follow each type's
# 12-byte header: fixed, or per entry of its vlen.
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_FIXED = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
_PER_ENTRY = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}
_MODIFIERS = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}

# What the BPF side reads: (struct, field) -> (macro, size in bytes it must have).
FIELDS = {("task_struct", "pid"): ("TW_OFF_PID", 4), ("task_struct", "tgid"): ("TW_OFF_TGID", 4),
          ("task_struct", "start_time"): ("TW_OFF_START_TIME", 8),
          ("task_struct", "comm"): ("TW_OFF_COMM", 16),
          ("task_struct", "task_works"): ("TW_OFF_TASK_WORKS", 8),
          # a task's cgroup v2 id: task->cgroups->dfl_cgrp->kn->id, and a new
          # cgroup's parent: cgroup->self.parent->cgroup
          ("task_struct", "cgroups"): ("TW_OFF_TASK_CGROUPS", 8),
          ("css_set", "dfl_cgrp"): ("TW_OFF_CSS_SET_DFL_CGRP", 8),
          ("cgroup", "kn"): ("TW_OFF_CGROUP_KN", 8),
          ("cgroup", "self"): ("TW_OFF_CGROUP_SELF", None),  # an embedded struct
          ("cgroup_subsys_state", "parent"): ("TW_OFF_CSS_PARENT", 8),
          ("cgroup_subsys_state", "cgroup"): ("TW_OFF_CSS_CGROUP", 8),
          ("kernfs_node", "id"): ("TW_OFF_KERNFS_ID", 8)}


class BTFError(ValueError):
    pass


class BTF:
    """Just enough of a BTF reader to find struct members and their sizes."""

    def __init__(self, data: bytes):
        if len(data) < 24:
            raise BTFError("too short")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        self.end = "<"
        if magic != MAGIC:
            if struct.unpack_from(">H", data, 0)[0] != MAGIC:
                raise BTFError("not BTF")
            self.end = ">"
            hdr_len = struct.unpack_from(">I", data, 4)[0]
        type_off, type_len, str_off, str_len = struct.unpack_from(self.end + "4I", data, 8)
        self.data = data
        self.types = hdr_len + type_off
        self.types_end = self.types + type_len
        self.strs = hdr_len + str_off
        self.strs_end = self.strs + str_len
        if self.types_end > len(data) or self.strs_end > len(data):
            raise BTFError("sections run past the end")
        self.offsets = self._index()

    def _index(self) -> array:
        """Byte offset of every type, by id (id 0 is void); on the way, the
        first struct and the first function of each name (by name offset).
        One pass over ~100k types: the hot loop of start-up's BTF use."""
        offs = array("Q", [0])
        self._structs: Dict[int, int] = {}
        self._funcs: Dict[int, int] = {}
        unpack = struct.Struct(self.end + "III").unpack_from
        fixed = [12 + _FIXED.get(k, 0) for k in range(32)]
        per = [_PER_ENTRY.get(k, 0) for k in range(32)]
        append, data = offs.append, self.data
        pos, end = self.types, self.types_end
        while pos < end:
            if pos + 12 > end:
                raise BTFError("truncated type")
            name_off, info, _ = unpack(data, pos)
            kind = (info >> 24) & 0x1F
            if not INT <= kind <= ENUM64:
                raise BTFError(f"kind {kind} is newer than this reader")
            if name_off and (kind == STRUCT or kind == FUNC):
                (self._structs if kind == STRUCT else self._funcs).setdefault(name_off, len(offs))
            append(pos)
            pos += fixed[kind] + per[kind] * (info & 0xFFFF)
        if pos != end:
            raise BTFError("types overrun their section")
        return offs

    def name(self, off: int) -> str:
        start = self.strs + off
        if not self.strs <= start < self.strs_end:
            raise BTFError("name outside the string section")
        stop = self.data.index(b"\0", start, self.strs_end)
        return self.data[start:stop].decode("ascii", "replace")

    def type(self, tid: int) -> Tuple[int, int, bool, int, int]:
        """(name_off, kind, kind_flag, vlen, size_or_type) of type tid."""
        if not 0 < tid < len(self.offsets):
            raise BTFError(f"no type {tid}")
        name_off, info, st = struct.unpack_from(self.end + "III", self.data, self.offsets[tid])
        return name_off, (info >> 24) & 0x1F, bool(info >> 31), info & 0xFFFF, st

    def find_structs(self, names) -> Dict[str, int]:
        """Type id of each named struct."""
        found, strs = {}, self.data[self.strs:self.strs_end]
        for name in names:
            # strings are stored once each, each after the previous one's NUL
            at = strs.find(b"\0" + name.encode() + b"\0")
            tid = self._structs.get(at + 1) if at >= 0 else None
            if tid is not None:
                found[name] = tid
        missing = sorted(set(names) - set(found))
        if missing:
            raise BTFError("no struct " + ", ".join(missing))
        return found

    def find_func(self, name: str) -> Optional[int]:
        """Type id of the FUNC called name, or None."""
        at = self.data[self.strs:self.strs_end].find(b"\0" + name.encode() + b"\0")
        return self._funcs.get(at + 1) if at >= 0 else None

    def size_of(self, tid: int, depth: int = 0) -> int:
        if depth > 32:
            raise BTFError("type chain too long")
        _n, kind, _kf, _vlen, st = self.type(tid)
        if kind in _MODIFIERS:
            return self.size_of(st, depth + 1)
        if kind == PTR:
            return 8  # both machines we support are 64-bit
        if kind == ARRAY:
            elem, _index, nelems = struct.unpack_from(self.end + "III", self.data,
                                                      self.offsets[tid] + 12)
            return self.size_of(elem, depth + 1) * nelems
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT):
            return st
        raise BTFError(f"type {tid} has no size")

    def members(self, tid: int, base_bits: int = 0, depth: int = 0):
        """(name, bit offset, type id, bitfield size) of every named member,
        descending into anonymous structs and unions."""
        if depth > 8:
            raise BTFError("anonymous members nest too deep")
        _n, kind, kflag, vlen, _size = self.type(tid)
        pos = self.offsets[tid] + 12
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from(self.end + "III", self.data, pos + 12 * i)
            bits, bitsize = (moff & 0xFFFFFF, moff >> 24) if kflag else (moff, 0)
            if name_off:
                yield self.name(name_off), base_bits + bits, mtype, bitsize
                continue
            inner = self._strip(mtype)
            if self.type(inner)[1] in (STRUCT, UNION):
                yield from self.members(inner, base_bits + bits, depth + 1)

    def _strip(self, tid: int) -> int:
        for _ in range(32):
            _n, kind, _kf, _vlen, st = self.type(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = st
        raise BTFError("type chain too long")


_parsed: list = []  # [(data, BTF)]: the last one parsed


def parse(data: bytes) -> BTF:
    """BTF(data), parsed once per process for the same bytes: doctor's
    fentry trial and the loader's offsets both read the kernel's BTF at
    start-up, and a parse takes seconds in an emulated guest."""
    if _parsed and _parsed[0][0] == data:
        return _parsed[0][1]
    b = BTF(data)
    _parsed[:] = [(data, b)]
    return b


def forget() -> None:
    """Drops the parse kept by parse() (megabytes) once start-up is done."""
    _parsed.clear()


def offsets_from(data: bytes, fields=None) -> Dict[Tuple[str, str], int]:
    """Byte offset of each (struct, field) of fields (default FIELDS); raises
    BTFError unless every one is found, byte aligned and of the expected size."""
    fields = FIELDS if fields is None else fields
    btf = parse(data)
    ids = btf.find_structs({st for st, _ in fields})
    found: Dict[Tuple[str, str], int] = {}
    for st, tid in ids.items():
        for name, bits, mtype, bitsize in btf.members(tid):
            key = (st, name)
            if key not in fields or key in found:
                continue
            want = fields[key][1]
            if bitsize or bits % 8:
                raise BTFError(f"{st}.{name} is a bitfield")
            if want is not None and btf.size_of(mtype) != want:
                raise BTFError(f"{st}.{name} is not {want} bytes")
            found[key] = bits // 8
    missing = sorted(f"{st}.{n}" for st, n in set(fields) - set(found))
    if missing:
        raise BTFError("no field " + ", ".join(missing))
    return found


def field_offsets(path: str = BTF_PATH, fields=None) -> Tuple[Optional[Dict], str]:
    """(offsets, why not): offsets is None when they cannot be had from BTF."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, f"no kernel BTF ({e.strerror or e})"
    try:
        return offsets_from(data, fields), ""
    except BTFError as e:
        return None, f"kernel BTF unusable: {e}"


def cflags(offsets: Dict[Tuple[str, str], int], fields=None) -> list:
    fields = FIELDS if fields is None else fields
    return [f"-D{fields[k][0]}={off}" for k, off in sorted(offsets.items())]
