"""The storm process (storm.py) as seen from the driver."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


class StormProc:
    def __init__(self, files=64):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "storm.py"), str(files)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     universal_newlines=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("storm did not start")
        self.pid = self.proc.pid

    def phase(self, seconds, rate=0):
        self.proc.stdin.write("go %s %s\n" % (seconds, rate))
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("storm died (rc %s)" % self.proc.wait())
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(60)
