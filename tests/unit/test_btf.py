"""The BTF reader finds task_struct's fields where a real kernel puts them:
inside anonymous unions, past bitfields, behind typedefs."""
import os
import struct

import pytest

from twtrace import btf


def _blob(types: list, strings: list, endian: str = "<") -> bytes:
    """A BTF image: types are (name, kind, kind_flag, vlen, size_or_type, extra bytes)."""
    strtab, offs = b"\0", {"": 0}
    for s in strings:
        offs[s] = len(strtab)
        strtab += s.encode() + b"\0"
    body = b""
    for name, kind, kflag, vlen, st, extra in types:
        info = (kflag << 31) | (kind << 24) | vlen
        body += struct.pack(endian + "III", offs[name], info, st) + extra
    hdr = struct.pack(endian + "HBBI4I", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strtab))
    return hdr + body + strtab


_NAMES = ["int", "u64", "char", "pid_t", "task_struct", "pid", "tgid", "start_time", "comm",
          "task_works", "flags", "callback_head", "other"]
_NAMES_OFF = {}
_o = 1
for _n in _NAMES:
    _NAMES_OFF[_n] = _o
    _o += len(_n) + 1


def _member(endian, name, tid, off):
    return struct.pack(endian + "III", _NAMES_OFF[name] if name else 0, tid, off)


def _task_btf(endian="<", comm_len=16, pid_type=4, drop=None, start_bits=128):
    m = lambda *a: _member(endian, *a)  # noqa: E731
    members = [("flags", 1, (3 << 24) | 0),  # a 3-bit bitfield (kind_flag encoding)
               ("pid", pid_type, 64), ("tgid", pid_type, 96),
               ("", 7, start_bits),           # anonymous union holding start_time
               ("comm", 3 + 3, 256), ("task_works", 5, 512)]
    members = [x for x in members if x[0] != drop]
    types = [
        ("int", btf.INT, 0, 0, 4, struct.pack(endian + "I", 32)),                    # 1
        ("u64", btf.INT, 0, 0, 8, struct.pack(endian + "I", 64)),                    # 2
        ("char", btf.INT, 0, 0, 1, struct.pack(endian + "I", 8)),                    # 3
        ("pid_t", btf.TYPEDEF, 0, 0, 1, b""),                                       # 4
        ("", btf.PTR, 0, 0, 9, b""),                                                 # 5
        ("", btf.ARRAY, 0, 0, 0, struct.pack(endian + "III", 3, 1, comm_len)),        # 6
        ("", btf.UNION, 0, 2, 8, m("start_time", 2, 0) + m("other", 1, 0)),           # 7
        ("task_struct", btf.STRUCT, 1, len(members), 128,
         b"".join(m(*x) for x in members)),                                          # 8
        ("callback_head", btf.FWD, 0, 0, 0, b""),                                    # 9
    ]
    return _blob(types, _NAMES, endian)


# the fields the synthetic image has
TASK_FIELDS = {k: v for k, v in btf.FIELDS.items()
               if k in {("task_struct", f) for f in ("pid", "tgid", "start_time", "comm", "task_works")}}


def _task(data, fields=TASK_FIELDS):
    return {f: off for (st, f), off in btf.offsets_from(data, fields).items() if st == "task_struct"}


def test_offsets_through_typedefs_unions_and_bitfields():
    assert _task(_task_btf()) == {
        "pid": 8, "tgid": 12, "start_time": 16, "comm": 32, "task_works": 64}


def test_big_endian_images_read_the_same():
    assert _task(_task_btf(">"))["start_time"] == 16


@pytest.mark.parametrize("kwargs, words", [
    ({"drop": "task_works"}, "no field task_struct.task_works"),
    ({"comm_len": 32}, "comm is not 16 bytes"),
    ({"pid_type": 2}, "pid is not 4 bytes"),
    ({"start_bits": 130}, "bitfield"),
])
def test_unexpected_layouts_are_refused(kwargs, words):
    with pytest.raises(btf.BTFError, match=words):
        _task(_task_btf(**kwargs))


@pytest.mark.parametrize("cut", [3, 24, 40, -5])
def test_truncated_or_foreign_data_is_refused(cut):
    data = _task_btf()
    with pytest.raises(btf.BTFError):
        _task(data[:cut] if cut > 0 else data[:24] + data[24:cut])
    with pytest.raises(btf.BTFError):
        _task(b"\x7fELF" + data[4:])


def test_missing_file_says_why(tmp_path):
    offsets, why = btf.field_offsets(str(tmp_path / "none"))
    assert offsets is None and "no kernel BTF" in why


def test_cflags_name_every_field():
    flags = btf.cflags(btf.offsets_from(_task_btf(), TASK_FIELDS))
    assert sorted(flags) == sorted(["-DTW_OFF_PID=8", "-DTW_OFF_TGID=12", "-DTW_OFF_START_TIME=16",
                                    "-DTW_OFF_COMM=32", "-DTW_OFF_TASK_WORKS=64"])


@pytest.mark.skipif(not os.path.exists(btf.BTF_PATH), reason="this kernel has no BTF")
def test_this_kernel():
    off = _task(open(btf.BTF_PATH, "rb").read(), btf.FIELDS)
    # the order struct task_struct has had in every kernel since 2.6
    assert off["pid"] + 4 == off["tgid"] and off["pid"] < off["start_time"] < off["comm"]


def test_a_struct_the_kernel_lacks_is_named():
    fields = {**TASK_FIELDS, ("no_such_struct", "x"): ("TW_OFF_X", 8)}
    with pytest.raises(btf.BTFError, match="no struct no_such_struct"):
        btf.offsets_from(_task_btf(), fields)
