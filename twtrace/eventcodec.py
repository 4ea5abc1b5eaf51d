"""Kernel events from their raw bytes.

bcc hands each event over as a ctypes object, and reading its twenty fields
one attribute at a time is most of what decoding costs.  The layout is
bcc's own class, built from `struct tw_event` in bpf/twtrace.h (the one
place it is defined); from it one struct.Struct is compiled, so an event
costs one copy and one unpack.
"""
from __future__ import annotations

import ctypes
import struct
from typing import Dict, List, Tuple

_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}


def _code(ctype) -> str:
    """The struct code of one ctypes field type (native order, standard sizes)."""
    size = ctypes.sizeof(ctype)
    if issubclass(ctype, ctypes.Array):
        if ctypes.sizeof(ctype._type_) != 1:
            raise TypeError(f"array of {ctype._type_.__name__} in an event")
        return f"{size}s"
    if size not in _INT_CODES or not hasattr(ctype, "_type_"):
        raise TypeError(f"field type {ctype.__name__} in an event")
    signed = ctype(-1).value < 0
    code = _INT_CODES[size]
    return code if signed else code.upper()


def layout(cls) -> Tuple[str, List[str], List[str]]:
    """(struct format, field names, names of char-array fields) of a ctypes
    Structure, padding included, so unpacking raw bytes gives the fields."""
    fmt, names, texts, at = "=", [], [], 0
    for name, ctype in cls._fields_:
        off = getattr(cls, name).offset
        if off > at:
            fmt += f"{off - at}x"
        code = _code(ctype)
        fmt += code
        names.append(name)
        if code.endswith("s"):
            texts.append(name)
        at = off + ctypes.sizeof(ctype)
    if ctypes.sizeof(cls) > at:
        fmt += f"{ctypes.sizeof(cls) - at}x"
    return fmt, names, texts


class Decoder:
    """decode(address) -> the event as a dict of its fields: `kind` named
    through `kinds`, char arrays as str up to their first NUL."""

    def __init__(self, cls, kinds: Dict[int, str]):
        fmt, self._names, self._texts = layout(cls)
        self.format = fmt
        self._unpack = struct.Struct(fmt).unpack_from
        self.size = ctypes.sizeof(cls)
        self._kinds = kinds

    @property
    def names(self) -> List[str]:
        """The fields of unpack()'s tuples, in order."""
        return self._names

    def unpack(self, raw: bytes) -> tuple:
        return self._unpack(raw)

    def from_tuple(self, t: tuple) -> dict:
        ev = dict(zip(self._names, t))
        ev["kind"] = self._kinds.get(ev["kind"], "?")
        for name in self._texts:
            ev[name] = ev[name].split(b"\0", 1)[0].decode(errors="replace")
        return ev

    def from_bytes(self, raw: bytes) -> dict:
        return self.from_tuple(self._unpack(raw))

    def __call__(self, address) -> dict:
        return self.from_bytes(ctypes.string_at(address, self.size))


class Framed:
    """Records as they lie in a ring buffer's pages, `header` (a struct
    format) and then the event, `step` bytes apart: a chunk of them is
    unpacked by one struct.iter_unpack, the header's fields first.  Offers
    what the tuple lane needs of a Decoder (names, from_tuple)."""

    def __init__(self, dec: Decoder, header: str, step: int):
        hdr = struct.Struct(header)
        self._dec, self._skip = dec, len(hdr.unpack(bytes(hdr.size)))
        fmt = "=" + header.lstrip("=<>!@") + dec.format.lstrip("=")
        pad = step - struct.calcsize(fmt)
        if pad < 0:
            raise ValueError("records longer than their step")
        self._iter = struct.Struct(fmt + (f"{pad}x" if pad else "")).iter_unpack
        self.step = step
        self.names = [f"_hdr{i}" for i in range(self._skip)] + dec.names

    def iter(self, chunk: bytes):
        return self._iter(chunk)

    def from_tuple(self, t: tuple) -> dict:
        return self._dec.from_tuple(t[self._skip:])
