import signal

from twtrace.signals import quiet_exit

# Before the slow imports (typer, rich): Ctrl-C or SIGTERM exits quietly.
for _sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_sig, quiet_exit)

from twtrace.cli import main  # noqa: E402

main()
