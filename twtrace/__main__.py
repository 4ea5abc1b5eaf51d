"""`python3 -m twtrace` and the `twtrace` command both start here, so that a
Ctrl-C or SIGTERM at any moment of start-up exits quietly with 128+signal."""
import os  # (already loaded by the interpreter's own start-up)

# The C module itself: signal.py first builds its IntEnums, which took over
# a second in an emulated guest, and a Ctrl-C then was a traceback.
import _signal


def _before_anything(signum, frame):
    # Nothing is made yet, so there is nothing to clean: leave at once.
    os._exit(128 + signum)


for _sig in (_signal.SIGINT, _signal.SIGTERM):
    _signal.signal(_sig, _before_anything)


def run() -> None:
    import signal

    from twtrace.signals import quiet_exit

    # Before the slow imports (typer, rich): the signal unwinds quietly.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, quiet_exit)
    from twtrace.cli import main

    main()


if __name__ == "__main__":
    run()
