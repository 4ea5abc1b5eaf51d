"""How full a tracer's BPF hash maps are, from outside the tracer.

The maps are opened by id (root may) and their keys counted with the bpf
syscall's batch lookup (5.6+; a few calls for a whole map), or one key at a
time where batching is refused. Arrays, ring buffers and stack maps are
skipped: their size is fixed and says nothing about growth.
"""
import ctypes
import errno
import os
import platform

NR_BPF = {"x86_64": 321, "aarch64": 280}
MAP_GET_NEXT_KEY, MAP_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD, MAP_LOOKUP_BATCH = 4, 14, 15, 24
HASH_TYPES = {1: "hash", 5: "percpu_hash", 9: "lru_hash", 10: "lru_percpu_hash"}
PERCPU = (5, 10)
BATCH = 1024

_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd, attr):
    nr = NR_BPF[platform.machine()]
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr),
                        ctypes.c_uint(ctypes.sizeof(attr)))
    return ret, (ctypes.get_errno() if ret < 0 else 0)


def possible_cpus(text=None):
    """Number of possible CPUs from a list like '0-3,6' (percpu values are
    sized by it)."""
    if text is None:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read()
    n = 0
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def map_info(fd):
    info = (ctypes.c_uint32 * 64)()
    attr = (ctypes.c_uint64 * 4)()
    attr[0] = fd | (ctypes.sizeof(info) << 32)  # bpf_fd, info_len
    attr[1] = ctypes.addressof(info)
    ret, err = _bpf(OBJ_GET_INFO_BY_FD, attr)
    if ret < 0:
        raise OSError(err, os.strerror(err))
    name = bytes(ctypes.string_at(ctypes.addressof(info) + 24, 16)).split(b"\0")[0].decode()
    return {"type": info[0], "id": info[1], "key_size": info[2], "value_size": info[3],
            "max_entries": info[4], "name": name}


def open_map(map_id):
    attr = (ctypes.c_uint32 * 4)()
    attr[0] = map_id
    ret, err = _bpf(MAP_GET_FD_BY_ID, attr)
    if ret < 0:
        raise OSError(err, os.strerror(err))
    return ret


def count_batch(fd, info):
    vsize = (info["value_size"] + 7) // 8 * 8
    if info["type"] in PERCPU:
        vsize *= possible_cpus()
    keys = ctypes.create_string_buffer(info["key_size"] * BATCH)
    vals = ctypes.create_string_buffer(vsize * BATCH)
    tokens = [ctypes.create_string_buffer(max(info["key_size"], 8)) for _ in range(2)]
    total, first = 0, True
    while True:
        attr = (ctypes.c_uint64 * 7)()
        attr[0] = 0 if first else ctypes.addressof(tokens[0])
        attr[1] = ctypes.addressof(tokens[1])
        attr[2], attr[3] = ctypes.addressof(keys), ctypes.addressof(vals)
        attr[4] = BATCH | (fd << 32)  # count, map_fd
        ret, err = _bpf(MAP_LOOKUP_BATCH, attr)
        got = attr[4] & 0xFFFFFFFF
        if ret < 0 and err != errno.ENOENT:
            raise OSError(err, os.strerror(err))
        total += got
        if ret < 0:  # ENOENT: that was the last batch
            return total
        ctypes.memmove(tokens[0], tokens[1], len(tokens[1]))
        first = False


def count_keys(fd, info):
    key = ctypes.create_string_buffer(info["key_size"])
    nxt = ctypes.create_string_buffer(info["key_size"])
    total, first = 0, True
    while True:
        attr = (ctypes.c_uint64 * 3)()
        attr[0] = fd
        attr[1] = 0 if first else ctypes.addressof(key)
        attr[2] = ctypes.addressof(nxt)
        ret, err = _bpf(MAP_GET_NEXT_KEY, attr)
        if ret < 0:
            return total
        total += 1
        ctypes.memmove(key, nxt, info["key_size"])
        first = False


def occupancy(map_ids):
    """{name: (entries, max_entries)} of the hash maps among map_ids."""
    out = {}
    for map_id in map_ids:
        try:
            fd = open_map(map_id)
        except OSError:
            continue  # gone meanwhile
        try:
            info = map_info(fd)
            if info["type"] not in HASH_TYPES:
                continue
            try:
                n = count_batch(fd, info)
            except OSError:
                n = count_keys(fd, info)
            out[info["name"] or "id%d" % map_id] = (n, info["max_entries"])
        finally:
            os.close(fd)
    return out
