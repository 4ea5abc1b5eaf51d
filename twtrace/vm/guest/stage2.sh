# Stage 2, in the guest's real root: set the environment and let the agent
# (Python, already needed for everything else) do the rest, saving the cost
# of a process per mount under emulation.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TWTRACE_IN_VM=1 TERM=${TERM:-linux}
agent=${0%/*}/agent.py
export PYTHONPATH="${0%/twtrace/vm/guest/*}:/opt/twtrace-pydeps"
cd /root
python3 "$agent" --init
/bin/busybox poweroff -f
