"""`twtrace top`: a live (or replayed) view of the task_work queue.

sample.py   what a source hands over each interval
metrics.py  the maths: rates, interval latency, twtrace's own cost
state.py    the view model (rows, sort, filter, selection, ageing); pure
keys.py     terminal bytes -> key names -> state actions
columns.py  table columns of both views, fitted to the width by priority
render.py   rich renderables of the state, fitted to the terminal
plain.py    bcc-style plain tables and JSON Lines, for pipes and COUNT
sources.py  LiveSource (the kernel) and ReplaySource (a recording)
app.py      the interactive loop: raw terminal, redraws, always restored
main.py     what `twtrace top` runs
"""
