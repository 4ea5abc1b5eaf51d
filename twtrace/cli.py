"""twtrace's command line: one screen from flags to the module doing the work."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from twtrace import __version__
from twtrace.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Trace the kernel's task_work queue: who queues callbacks on "
                       "which task, queue depth, queue latency and callback run time.")


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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
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

    raise typer.Exit(vmcli.main(ctx.args, kernel, arch, memory, rebuild, list_cells))


def main() -> None:
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
