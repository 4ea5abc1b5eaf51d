"""A Timeline as a Perfetto trace (protobuf TracePackets, track events).

Uses the protobuf definitions the `perfetto` package ships; no encoding by
hand.  Layout of the trace:

- one process track per pid, and under it one thread track per tid, named
  from the recording's comm fields;
- on each thread track: task_work_run slices with their callback slices
  nested, batch callbacks, adds and failed adds made by that thread, and
  cancels of items queued on it, as instants;
- under each thread that had items queued: a "task_work queue" track whose
  lanes hold the queue waits, and a "task_work depth" counter track;
- flows from each add to the callback that ran the item.

Timestamps are CLOCK_MONOTONIC nanoseconds, as recorded: every packet says
so (timestamp_clock_id), and a first clock snapshot makes MONOTONIC the
trace's clock, so the UI shows the recording's own times.  All packets are
on one sequence with no interned data; its first packet clears the
incremental state, as the format asks a writer to.
"""
from __future__ import annotations

from typing import IO, Dict, Iterator, List, Tuple

from twtrace.export.timeline import Mark, Timeline, nest

SEQUENCE = 1
CATEGORY = "task_work"


def _protos():
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    return pb


class _Writer:
    """Packets are built in place inside a Trace message and written a batch
    at a time: serialized Trace messages concatenate into one trace, and
    building each packet on its own and copying it into a Trace of one
    (the package's streaming builder) cost more than the packet itself."""

    BATCH = 4096

    def __init__(self, pb, f: IO[bytes]):
        self.pb = pb
        self.f = f
        self.trace = pb.Trace()
        self.first = True

    def packet(self, ts: int):
        p = self.trace.packet.add()
        p.timestamp = ts
        p.timestamp_clock_id = self.pb.BUILTIN_CLOCK_MONOTONIC
        p.trusted_packet_sequence_id = SEQUENCE
        if self.first:
            p.sequence_flags = self.pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
            self.first = False
        return p

    def write(self, p) -> None:
        """p (from packet()) is complete."""
        if len(self.trace.packet) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if len(self.trace.packet):
            self.f.write(self.trace.SerializeToString())
            self.trace = self.pb.Trace()


class _Tracks:
    """uuids for every track, assigned in a fixed order so output is stable."""

    def __init__(self) -> None:
        self.uuids: Dict[Tuple, int] = {}

    def __getitem__(self, key: Tuple) -> int:
        if key not in self.uuids:
            self.uuids[key] = len(self.uuids) + 1
        return self.uuids[key]


def _annotate(pb, event, args: Dict) -> None:
    for name, value in args.items():
        if value is None:
            continue
        a = event.debug_annotations.add()
        a.name = name
        if isinstance(value, bool):
            a.bool_value = value
        elif isinstance(value, int):
            a.int_value = value
        else:
            a.string_value = str(value)


def _clock_snapshot(w: _Writer, ts: int) -> None:
    p = w.packet(ts)
    p.ClearField("timestamp_clock_id")  # a snapshot's own time is in the trace clock
    p.clock_snapshot.primary_trace_clock = w.pb.BUILTIN_CLOCK_MONOTONIC
    c = p.clock_snapshot.clocks.add()
    c.clock_id = w.pb.BUILTIN_CLOCK_MONOTONIC
    c.timestamp = ts
    w.write(p)


def _descriptors(w: _Writer, tl: Timeline, tracks: _Tracks) -> None:
    for pid, name in sorted(tl.process_names().items()):
        p = w.packet(tl.start_ns)
        d = p.track_descriptor
        d.uuid = tracks[("process", pid)]
        d.process.pid = pid
        d.process.process_name = name
        w.write(p)
    for tid, (pid, comm) in sorted(tl.threads.items()):
        p = w.packet(tl.start_ns)
        d = p.track_descriptor
        d.uuid = tracks[("thread", tid)]
        d.parent_uuid = tracks[("process", pid)]
        d.thread.pid = pid
        d.thread.tid = tid
        d.thread.thread_name = comm
        w.write(p)
    for tid in sorted(tl.lanes):
        _child(w, tl, tracks[("queues", tid)], tracks[("thread", tid)], "task_work queue")
        for lane in range(tl.lanes[tid]):
            _child(w, tl, tracks[("queue", tid, lane)], tracks[("queues", tid)],
                   f"queue wait {lane + 1}")
    for tid in sorted(tl.depth):
        p = w.packet(tl.start_ns)
        d = p.track_descriptor
        d.uuid = tracks[("depth", tid)]
        d.parent_uuid = tracks[("thread", tid)]
        d.name = "task_work depth"
        d.counter.unit = w.pb.CounterDescriptor.UNIT_COUNT
        w.write(p)


def _child(w: _Writer, tl: Timeline, uuid: int, parent: int, name: str) -> None:
    p = w.packet(tl.start_ns)
    p.track_descriptor.uuid = uuid
    p.track_descriptor.parent_uuid = parent
    p.track_descriptor.name = name
    w.write(p)


def _stream(tl: Timeline) -> List[Tuple[int, str, Tuple, Mark]]:
    """(ts, what, track, mark) for every event, in time order; per track the
    order nest() gives is kept (the sort is stable)."""
    by_track: Dict[Tuple, List[Mark]] = {}
    for m in tl.marks:
        by_track.setdefault(m.track, []).append(m)
    out = []
    for track in sorted(by_track, key=repr):
        for what, m in nest(by_track[track]):
            out.append((m.end if what == "end" else m.ts, what, track, m))
    out.sort(key=lambda x: x[0])
    return out


_TYPE = {"begin": "TYPE_SLICE_BEGIN", "end": "TYPE_SLICE_END", "instant": "TYPE_INSTANT"}


def _events(w: _Writer, tl: Timeline, tracks: _Tracks) -> Iterator:
    pb = w.pb
    for ts, what, track, m in _stream(tl):
        p = w.packet(ts)
        e = p.track_event
        e.type = getattr(pb.TrackEvent, _TYPE[what])
        e.track_uuid = tracks[track]
        if what != "end":
            e.name = m.name
            e.categories.append(CATEGORY)
            _annotate(pb, e, m.args)
            if m.flow_out is not None:
                e.flow_ids.append(m.flow_out)
            if m.flow_in is not None:
                e.terminating_flow_ids.append(m.flow_in)
        yield p
    for tid in sorted(tl.depth):
        for ts, value in tl.depth[tid]:
            p = w.packet(ts)
            p.track_event.type = pb.TrackEvent.TYPE_COUNTER
            p.track_event.track_uuid = tracks[("depth", tid)]
            p.track_event.counter_value = value
            yield p


def write_trace(tl: Timeline, f: IO[bytes]) -> None:
    """Write tl to the binary file f as a Perfetto trace."""
    w = _Writer(_protos(), f)
    tracks = _Tracks()
    _clock_snapshot(w, tl.start_ns)
    _descriptors(w, tl, tracks)
    for p in _events(w, tl, tracks):
        w.write(p)
    w.flush()
