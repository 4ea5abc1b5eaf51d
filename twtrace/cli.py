"""twtrace's command line: one screen from flags to the module doing the work."""
from __future__ import annotations

import signal
import sys

from twtrace.signals import check_pending, quiet_exit

# First, before the slow imports: Ctrl-C or SIGTERM now exits quietly.
for _sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_sig, quiet_exit)

import os  # noqa: E402
from pathlib import Path
from typing import List, Optional

import typer  # noqa: E402

from twtrace import __version__  # noqa: E402
from twtrace import validate as check  # noqa: E402
from twtrace.errors import UserError  # noqa: E402
from twtrace.validate import ProbeMode  # noqa: E402

PROBE_MODE_HELP = "auto, kprobe or fentry."

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Trace the kernel's task_work queue: who queues callbacks on "
                       "which task, queue depth, queue latency and callback run time.")


CGROUP_OPT = typer.Option([], "--cgroup", metavar="PATH", help="Only tasks in this cgroup v2 "
                                       "or below it (repeatable; /sys/fs/cgroup/X or /X).")


def _version(value: bool) -> None:
    if value:
        print(f"twtrace {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


@app.command()
def doctor(json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON.")) -> None:
    """Check whether this host can run twtrace, and say how to fix what is missing."""
    from twtrace import doctor as doc

    raise typer.Exit(doc.main(json_out=json_out))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def record(ctx: typer.Context,
           output: str = typer.Option(..., "-o", "--output", help="File to write, or - for stdout."),
           duration: Optional[float] = typer.Option(None, "--duration", "-d",
                                                    help="Stop after this many seconds."),
           interval: Optional[float] = typer.Option(None, "--interval", "-i",
                                                    help="Also write aggregates every this many seconds: tasks that changed; an exited task once more, then only in the function totals."),
           events: bool = typer.Option(False, "--events", help="Write one line per add, callback, "
                                                               "cancel and run."),
           pid: List[int] = typer.Option([], "-p", "--pid", help="Trace this process (repeatable)."),
           tid: List[int] = typer.Option([], "-t", "--tid", help="Trace this thread (repeatable)."),
           comm: Optional[str] = typer.Option(None, "--comm", help="Only tasks whose name matches "
                                                                  "this regular expression."),
           probe_mode: ProbeMode = typer.Option(ProbeMode.auto, "--probe-mode",
                                                help=PROBE_MODE_HELP),
           stacks: bool = typer.Option(False, "--stacks", help="Record the adder's kernel stack: "
                                                               "which code path queued each item."),
           cgroup: List[str] = CGROUP_OPT,
           nice: Optional[int] = typer.Option(
               None, "--nice", help="Niceness of the thread that reads and writes (-20..19; "
                                    "default 19 with --events, so the host's own work keeps "
                                    "busy CPUs and what does not fit is counted lost; "
                                    "else unchanged).")) -> None:
    """Trace task_work and write JSON Lines: twtrace record -o FILE [-- COMMAND ARGS...]"""
    from twtrace import record as rec

    opts = rec.RecordOptions(output=output, duration=duration, interval=interval, events=events,
                             pids=list(pid), tids=list(tid), comm=comm, command=list(ctx.args),
                             probe_mode=probe_mode.value, stacks=stacks, cgroups=list(cgroup),
                             nice=nice)
    raise typer.Exit(rec.run(opts))


@app.command()
def report(file: str = typer.Argument(..., help="A recording made by twtrace record."),
           top: int = typer.Option(10, "--top", help="Rows per table (0 = all)."),
           histograms: int = typer.Option(3, "--histograms", help="Callbacks to draw histograms for.")) -> None:
    """Per-task and per-callback tables with percentiles, and latency histograms."""
    from rich.console import Console

    from twtrace.recordfile import RecordError, read_record
    from twtrace.report import render_report

    check.count("--top", top, low=0)
    check.count("--histograms", histograms, low=0)
    try:
        rec = read_record(file, keep_events=False)
    except RecordError as e:
        raise UserError(str(e))
    render_report(rec, Console(), top=top or None, histograms=histograms)


@app.command()
def export(file: str = typer.Argument(..., help="A recording made by twtrace record --events."),
           output: str = typer.Option(..., "-o", "--output", help="Trace file to write."),
           perfetto: bool = typer.Option(False, "--perfetto",
                                         help="Write a Perfetto trace (protobuf), for "
                                              "ui.perfetto.dev.")) -> None:
    """Convert a recording into a timeline for another tool:
    twtrace export --perfetto REC.jsonl -o OUT.pftrace"""
    from twtrace.export import main as exportmain

    if not perfetto:
        raise UserError("say which format to export: --perfetto")
    raise typer.Exit(exportmain.run(file, output))


@app.command()
def top(interval_arg: Optional[float] = typer.Argument(None, metavar="[INTERVAL]",
                                                       help="Seconds between refreshes."),
        count: Optional[int] = typer.Argument(None, metavar="[COUNT]",
                                              help="Print this many plain tables, then exit."),
        interval: Optional[float] = typer.Option(None, "--interval", "-i",
                                                 help="Seconds between refreshes (default 1)."),
        pid: List[int] = typer.Option([], "-p", "--pid", help="Only this process (repeatable)."),
        tid: List[int] = typer.Option([], "-t", "--tid", help="Only this thread (repeatable)."),
        comm: Optional[str] = typer.Option(None, "--comm", help="Only tasks whose name matches "
                                                               "this regular expression."),
        func: Optional[str] = typer.Option(None, "--func", help="Only callback functions "
                                                               "matching this regular expression."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON Lines snapshot group "
                                                            "per interval."),
        replay: Optional[str] = typer.Option(None, "--replay", help="Show a recording made by "
                                                                    "twtrace record instead."),
        speed: str = typer.Option("1", "--speed", help="Replay pace: 1 = as recorded, 2 = twice "
                                                       "as fast, max (or 0) = no waiting."),
        probe_mode: ProbeMode = typer.Option(ProbeMode.auto, "--probe-mode",
                                             help=PROBE_MODE_HELP),
        cgroup: List[str] = CGROUP_OPT) -> None:
    """Live view of task_work: busiest tasks and callbacks, refreshed every interval.
    Interactive on a terminal (? for keys); plain tables per interval otherwise."""
    from twtrace.top import main as topmain

    if interval_arg is not None and interval is not None and interval_arg != interval:
        raise UserError("give the interval either as INTERVAL or as --interval, not both")
    opts = topmain.TopOptions(
        interval=interval_arg if interval_arg is not None else (1.0 if interval is None else interval),
        count=count, pids=list(pid), tids=list(tid), comm=comm, func=func, json=json_out,
        replay=replay, speed=topmain.parse_speed(speed), probe_mode=probe_mode.value,
        cgroups=list(cgroup))
    raise typer.Exit(topmain.run(opts))


@app.command()
def serve(listen: Optional[str] = typer.Option(None, "--listen", "-l", metavar="ADDR:PORT",
                                             help="Where to serve /metrics (default "
                                                  "127.0.0.1:19868)."),
          textfile: Optional[str] = typer.Option(None, "--textfile", metavar="PATH",
                                                 help="Write node_exporter's textfile format "
                                                      "to PATH (*.prom) instead."),
          interval: float = typer.Option(1.0, "--interval", "-i",
                                         help="Seconds between reads of the kernel (and "
                                              "textfile writes)."),
          pid: List[int] = typer.Option([], "-p", "--pid", help="Only this process (repeatable)."),
          tid: List[int] = typer.Option([], "-t", "--tid", help="Only this thread (repeatable)."),
          comm: Optional[str] = typer.Option(None, "--comm", help="Only tasks whose name matches "
                                                                 "this regular expression."),
          func: Optional[str] = typer.Option(None, "--func", help="Only callback functions "
                                                                 "matching this regular expression."),
          label_comm: int = typer.Option(0, "--label-comm", metavar="N",
                                         help="Also export per-task-name metrics for the N "
                                              "busiest names, the rest as other (0 = off)."),
          probe_mode: ProbeMode = typer.Option(ProbeMode.auto, "--probe-mode",
                                               help=PROBE_MODE_HELP),
          cgroup: List[str] = CGROUP_OPT) -> None:
    """Serve task_work metrics for Prometheus (OpenMetrics at /metrics), or write
    them for node_exporter's textfile collector. Metrics: docs/prometheus.md"""
    from twtrace.serve import main as servemain

    opts = servemain.ServeOptions(listen=listen, textfile=textfile, interval=interval,
                                  pids=list(pid), tids=list(tid), comm=comm, func=func,
                                  label_comm=label_comm, probe_mode=probe_mode.value,
                                  cgroups=list(cgroup))
    raise typer.Exit(servemain.run(opts))


# Unknown options are errors: `vm --kernal 6.12 -- true` must not run "--kernal"
# in the guest. Everything after -- is the command, options included.
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def vm(ctx: typer.Context,
       kernel: Optional[str] = typer.Option(None, "--kernel", "-k",
                                            help="Guest kernel: 6.1, 5.10, 6.12, 7.2, a Debian "
                                                 "suite, or a cell like bookworm-arm64."),
       arch: Optional[str] = typer.Option(None, "--arch", help="Guest architecture: amd64 or arm64."),
       memory: int = typer.Option(1024, "--memory", help="Guest memory in MiB."),
       rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the cached guest first."),
       list_cells: bool = typer.Option(False, "--list", help="List the guests and exit.")) -> None:
    """Run a command in a QEMU guest booted on a real distro kernel:
    twtrace vm [--kernel K] [--arch A] -- COMMAND [ARGS...]"""
    from twtrace.vm import cli as vmcli

    check.count("--memory", memory, low=128, high=1 << 20)
    raise typer.Exit(vmcli.main(ctx.args, kernel, arch, memory, rebuild, list_cells))


@app.command("try")
def try_(duration: float = typer.Option(10.0, "--duration", "-d", help="Seconds to trace."),
         kernel: Optional[str] = typer.Option(None, "--kernel", help="Guest kernel if this host "
                                                                     "cannot trace.")) -> None:
    """Trace this host for a few seconds and show the report; on a host that
    cannot trace, say why and do the same in a guest VM with a demo workload."""
    from twtrace import quick

    check.seconds("--duration", duration)
    raise typer.Exit(quick.main(duration, kernel))


def main() -> None:
    # The imports are done: Ctrl-C is KeyboardInterrupt again (top, vm and
    # record install their own handlers where they need more).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    check_pending()
    try:
        rc = app(standalone_mode=False)
    except UserError as e:
        print(f"twtrace: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("twtrace: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        # Usage errors (click's, or the copy newer typer vendors): one line, no traceback.
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):
            print(f"twtrace: {e.format_message()}", file=sys.stderr)
            sys.exit(e.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
