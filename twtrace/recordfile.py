"""Reading and checking twtrace JSON Lines recordings (docs/format.md).

Validation uses the jsonschema package when it is importable (it is a test
dependency, not a runtime one), against twtrace/record.schema.json.
Without it, a structural check derived from the same schema runs instead:
the line is an object, its "type" is known, every key in that type's
"required" list is present, and top-level "const" fields match (so a
header must say schema 1).  Field types and ranges are then not checked;
that is deliberate: the reader only needs the shape to be right, and a
second hand-written validator would drift from the schema.

read_record also gives event lines (add/callback/cancel/run, possibly
millions) only the structural check unless asked to be strict: jsonschema
costs a few hundred microseconds per line, minutes for a large recording,
while the report reads only the header, snapshot groups and summary,
which always get the full check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Tuple

from twtrace import jsonline
from twtrace.errors import UserError

SCHEMA_VERSION = 1
SCHEMA_FILE = "record.schema.json"
EVENT_TYPES = ("add", "callback", "cancel", "run")
AGGREGATE_TYPES = ("task", "func")


class RecordError(ValueError):
    """One line does not match the record format; the message is one line."""


@lru_cache(maxsize=None)
def _schema_text() -> str:
    from importlib.resources import files

    return files("twtrace").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def load_schema() -> Dict[str, Any]:
    """The record schema as a fresh dict (callers may modify it)."""
    return json.loads(_schema_text())


@lru_cache(maxsize=None)
def _type_defs() -> Dict[str, str]:
    """Line type -> name of its $defs entry, read off the top-level oneOf."""
    schema = load_schema()
    out = {}
    for branch in schema["oneOf"]:
        name = branch["$ref"].rsplit("/", 1)[-1]
        out[schema["$defs"][name]["properties"]["type"]["const"]] = name
    return out


def line_types() -> Tuple[str, ...]:
    return tuple(_type_defs())


def _jsonschema_class() -> Optional[type]:
    try:
        import jsonschema
    except ImportError:
        return None
    # Older jsonschema (e.g. a distro's 3.x) cannot read draft 2020-12.
    return getattr(jsonschema, "Draft202012Validator", None)


def validator_backend() -> str:
    """"jsonschema" or "structural": which check validate_line performs."""
    return "jsonschema" if _jsonschema_class() is not None else "structural"


@lru_cache(maxsize=None)
def _checker(line_type: str, structural: bool = False) -> Callable[[Any], Optional[str]]:
    """A function returning None if obj is a valid line_type line, else why not."""
    schema = load_schema()
    name = _type_defs()[line_type]
    cls = None if structural else _jsonschema_class()
    if cls is not None:
        from jsonschema.exceptions import best_match

        # Validating one branch directly gives a precise message instead of
        # oneOf's "not valid under any of the given schemas".
        sub = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{name}"}
        validator = cls(sub)

        def check(obj: Any) -> Optional[str]:
            err = best_match(validator.iter_errors(obj))
            if err is None:
                return None
            where = "/".join(str(p) for p in err.absolute_path)
            return f"{where}: {err.message}" if where else err.message

        return check

    definition = schema["$defs"][name]
    required = list(definition.get("required", ()))
    consts = {k: v["const"] for k, v in definition.get("properties", {}).items() if "const" in v}

    def check_structure(obj: Any) -> Optional[str]:
        missing = [k for k in required if k not in obj]
        if missing:
            return "missing " + ", ".join(repr(k) for k in missing)
        for key, want in consts.items():
            if key in obj and obj[key] != want:
                return f"{key}: {json.dumps(want)} was expected, got {json.dumps(obj[key])}"
        return None

    return check_structure


def validate_line(obj: Any, structural: bool = False) -> None:
    """Raise RecordError (one line) unless obj is a valid record line.
    structural=True skips jsonschema even when it is importable."""
    if not isinstance(obj, dict):
        raise RecordError("not a JSON object")
    line_type = obj.get("type")
    if not isinstance(line_type, str):
        raise RecordError('no "type" field')
    if line_type not in _type_defs():
        raise RecordError(f"unknown line type {line_type!r}")
    problem = _checker(line_type, structural)(obj)
    if problem:
        raise RecordError(f"invalid {line_type} line: {problem}")


@dataclass
class Snapshot:
    """Cumulative per-task and per-func totals as of ts_ns."""

    ts_ns: int
    seq: int
    final: bool
    lost: int = 0  # lost events counted by the "lost" lines before this snapshot
    skipped: Optional[int] = None  # the kernel's skipped probe runs, where it counts them
    tasks: List[Dict[str, Any]] = field(default_factory=list)
    funcs: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class Record:
    path: str
    header: Dict[str, Any]
    summary: Dict[str, Any]
    events: List[Dict[str, Any]] = field(default_factory=list)  # add/callback/cancel/run
    snapshots: List[Snapshot] = field(default_factory=list)
    lost: int = 0  # sum of the "lost" lines' counts

    def final_snapshot(self) -> Optional[Snapshot]:
        """The snapshot marked final, else the last one, else None."""
        for snap in reversed(self.snapshots):
            if snap.final:
                return snap
        return self.snapshots[-1] if self.snapshots else None

    def task_totals(self) -> List[Dict[str, Any]]:
        """Every task's latest line, keyed by (tid, gen), up to the final
        snapshot: with --interval, a snapshot lists only changed tasks and
        exited ones are let go after one listing (docs/format.md)."""
        final = self.final_snapshot()
        if final is None:
            return []
        if any("gen" not in t for t in final.tasks):  # written before gen: one full snapshot
            return list(final.tasks)
        latest: Dict[tuple, Dict[str, Any]] = {}
        for snap in self.snapshots:
            for t in snap.tasks:
                latest[(t["tid"], t.get("gen"))] = t
            if snap is final:
                break
        return list(latest.values())


def read_record(path: Any, keep_events: bool = True, strict: bool = False) -> Record:
    """Parse and check a recording.  Every problem becomes a UserError with
    one line naming the file (and the line number where there is one).
    keep_events=False still checks event lines but does not keep them, for
    callers that only want the aggregates of a large recording.
    strict=True validates event lines fully too (slow; see module doc)."""
    name = str(path)
    try:
        f = jsonline.open_regular(name)
    except jsonline.LineError as e:
        raise UserError(f"{name}: {e}") from None
    except FileNotFoundError:
        raise UserError(f"{name}: no such file") from None
    except OSError as e:
        raise UserError(f"{name}: cannot read: {e.strerror or e}") from None
    builder = _Builder(name, keep_events, strict)
    with f:
        try:
            for lineno, raw in jsonline.lines(f):
                builder.feed(raw, lineno)
        except jsonline.LineError as e:
            raise UserError(f"{name}: {e}") from None
        except OSError as e:
            raise UserError(f"{name}: cannot read: {e.strerror or e}") from None
    return builder.finish()


class _Builder:
    """Accumulates a Record line by line, enforcing the line order."""

    def __init__(self, name: str, keep_events: bool, strict: bool):
        self.name = name
        self.keep_events = keep_events
        self.strict = strict
        self.header: Optional[Dict[str, Any]] = None
        self.summary: Optional[Dict[str, Any]] = None
        self.events: List[Dict[str, Any]] = []
        self.snapshots: List[Snapshot] = []
        self.lost = 0

    def fail(self, msg: str, lineno: Optional[int] = None) -> UserError:
        where = f"{self.name}: line {lineno}" if lineno else self.name
        return UserError(f"{where}: {msg}")

    def feed(self, raw: bytes, lineno: int) -> None:
        if not raw.strip():
            return
        try:
            obj = jsonline.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise self.fail("not UTF-8 text", lineno) from None
        except jsonline.LineError as e:
            raise self.fail(str(e), lineno) from None
        except ValueError as e:
            # Only the last line can lack its newline: the writer was stopped mid-line.
            if not raw.endswith(b"\n"):
                raise self.fail(f"truncated: line {lineno} is incomplete; "
                                "the recording was cut short") from None
            raise self.fail(f"not JSON ({getattr(e, 'msg', e)})", lineno) from None

        line_type = obj.get("type") if isinstance(obj, dict) else None
        if self.header is None:
            if line_type != "header":
                raise self.fail(f"line {lineno} is not a twtrace header; "
                                "this is not a twtrace recording")
            # Checked before validation: a newer header may lack fields we require.
            version = obj.get("schema")
            if isinstance(version, int) and not isinstance(version, bool) \
                    and version != SCHEMA_VERSION:
                raise self.fail(f"recorded with schema {version}; "
                                f"this twtrace reads schema {SCHEMA_VERSION}")
        elif self.summary is not None:
            raise self.fail("data after the summary line", lineno)

        try:
            validate_line(obj, structural=line_type in EVENT_TYPES and not self.strict)
        except RecordError as e:
            raise self.fail(str(e), lineno) from None
        except RecursionError:  # a validator walking a deep value
            raise self.fail("nested too deeply", lineno) from None

        if line_type == "header":
            if self.header is not None:
                raise self.fail("a second header line", lineno)
            self.header = obj
        elif line_type in EVENT_TYPES:
            if self.keep_events:
                self.events.append(obj)
        elif line_type == "snapshot":
            self.snapshots.append(Snapshot(ts_ns=obj["ts_ns"], seq=obj["seq"], final=obj["final"],
                                           lost=self.lost, skipped=obj.get("skipped_runs")))
        elif line_type in AGGREGATE_TYPES:
            if not self.snapshots:
                raise self.fail(f"{line_type} line before any snapshot line", lineno)
            snap = self.snapshots[-1]
            (snap.tasks if line_type == "task" else snap.funcs).append(obj)
        elif line_type == "lost":
            self.lost += obj["count"]
        elif line_type == "summary":
            self.summary = obj

    def finish(self) -> Record:
        if self.header is None:
            raise self.fail("empty file; this is not a twtrace recording")
        if self.summary is None:
            raise self.fail("truncated: no summary line; the recording was cut short")
        return Record(path=self.name, header=self.header, summary=self.summary,
                      events=self.events, snapshots=self.snapshots, lost=self.lost)
