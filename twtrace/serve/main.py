"""`twtrace serve`: the in-kernel aggregates of `top`, for Prometheus.

Either an HTTP endpoint (/metrics, through prometheus_client, OpenMetrics
when the scraper asks for it) or, with --textfile, a file for
node_exporter's textfile collector rewritten every interval.  The source is
top's LiveSource: cumulative snapshot groups, read once per interval and
once more at each scrape, so a scrape shows the kernel as of that moment.
"""
from __future__ import annotations

import ipaddress
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from twtrace.errors import UserError

DEFAULT_HOST = "127.0.0.1"
# Outside 9100-9999, Prometheus's list of exporter ports (full since 2023).
DEFAULT_PORT = 19868
DEFAULT_LISTEN = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
MAX_LABEL_COMM = 100


@dataclass
class ServeOptions:
    listen: Optional[str] = None
    textfile: Optional[str] = None
    interval: float = 1.0
    pids: List[int] = field(default_factory=list)
    tids: List[int] = field(default_factory=list)
    comm: Optional[str] = None
    func: Optional[str] = None
    label_comm: int = 0
    probe_mode: str = "auto"


def parse_listen(text: str) -> Tuple[str, int]:
    """ADDR:PORT or [IPv6]:PORT -> (addr, port); ADDR is an IP address or
    localhost (a name could resolve to anything)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise UserError(f"--listen {text!r}: give ADDR:PORT, e.g. {DEFAULT_LISTEN} "
                        "or [::1]:19868")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UserError(f"--listen {text!r}: {host!r} is not an IP address") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UserError(f"--listen {text!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def validate(opts: ServeOptions) -> Optional[Tuple[str, int]]:
    """Checks every flag; returns where to listen (None with --textfile)."""
    from twtrace.top.main import TopOptions, validate as validate_top

    if not (isinstance(opts.interval, (int, float)) and math.isfinite(opts.interval)
            and 0.05 <= opts.interval <= 3600):
        raise UserError("--interval must be a number of seconds from 0.05 to 3600")
    if not 0 <= opts.label_comm <= MAX_LABEL_COMM:
        raise UserError(f"--label-comm must be from 0 (off) to {MAX_LABEL_COMM}")
    validate_top(TopOptions(interval=opts.interval, pids=opts.pids, tids=opts.tids,
                            comm=opts.comm, func=opts.func, probe_mode=opts.probe_mode))
    if opts.textfile is not None:
        if opts.listen is not None:
            raise UserError("--textfile writes a file instead of listening: give one of "
                            "--listen and --textfile")
        if not opts.textfile.endswith(".prom"):
            raise UserError(f"--textfile {opts.textfile!r}: node_exporter reads only files "
                            "ending in .prom")
        if not os.path.isdir(os.path.dirname(os.path.abspath(opts.textfile))):
            raise UserError(f"--textfile {opts.textfile!r}: no such directory")
        return None
    return parse_listen(opts.listen or DEFAULT_LISTEN)


class Server:
    """The source, the aggregator and the lock that serialises reads of the
    kernel between the interval loop and scrapes."""

    def __init__(self, source, label_comm: int):
        from twtrace import __version__
        from twtrace.serve.metrics import Aggregator

        self.source = source
        self.lock = threading.Lock()
        self.agg = Aggregator(source.meta, __version__, label_comm)
        self.agg.push(source.baseline())

    def refresh(self) -> None:
        """Read the kernel once (caller holds the lock)."""
        self.agg.push(self.source.next(0))

    def tick(self) -> None:
        with self.lock:
            self.refresh()

    def registry(self):
        from prometheus_client import CollectorRegistry

        from twtrace.serve.exposition import Collector

        reg = CollectorRegistry(auto_describe=False)
        reg.register(Collector(self.agg, self.refresh, self.lock))
        return reg


def _on_sigterm(signum, frame):
    raise SystemExit(0)  # a service manager's stop is a normal end


def _need_prometheus_client() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise UserError("twtrace serve needs the prometheus_client Python package "
                        "(pip install prometheus_client, or Debian's "
                        "python3-prometheus-client)") from None


def run(opts: ServeOptions) -> int:
    where = validate(opts)
    _need_prometheus_client()
    from twtrace.top import sources

    sources.check_live_targets(opts.pids, opts.tids)
    old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    source = None
    try:
        source = sources.LiveSource(opts.probe_mode, opts.pids, opts.tids, opts.comm, opts.func)
        server = Server(source, opts.label_comm)
        if where is None:
            return _textfile_loop(server, opts)
        return _http_loop(server, where, opts.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if source is not None:
            source.close()
        signal.signal(signal.SIGTERM, old_term)


def _http_loop(server: Server, where: Tuple[str, int], interval: float) -> int:
    from prometheus_client import start_http_server

    host, port = where
    try:
        start_http_server(port, addr=host, registry=server.registry())
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    shown = f"[{host}]" if ":" in host else host
    print(f"twtrace: serving http://{shown}:{port}/metrics (Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    while True:
        time.sleep(interval)
        server.tick()  # between scrapes: probe new callbacks, follow queue depth


def _textfile_loop(server: Server, opts: ServeOptions) -> int:
    from prometheus_client import generate_latest

    from twtrace.atomicfile import write_atomic

    registry = server.registry()
    print(f"twtrace: writing {opts.textfile} every {opts.interval:g} s (Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    while True:
        time.sleep(opts.interval)
        data = generate_latest(registry)  # collects: reads the kernel
        # 0644: node_exporter usually runs as another user and must read it.
        write_atomic(opts.textfile, lambda f: f.write(data), mode=0o644)
