"""Func lines come from per-function totals kept as deltas arrive; they must
say exactly what summing every task's aggregates (and the totals of tasks
let go) says, through folds, late deltas, settles and the comm filter."""
from hypothesis import given, settings, strategies as st

from twtrace import model
from twtrace.totals import MAXES, SUMS, Totals, narrowed

FUNCS = (0x10, 0x20, 0x30)
TASKS = ((1, 1), (2, 1), (2, 9), (3, 1))  # (tid, gen): tid 2 recycled
NAMES = {0x10: "____fput", 0x20: "task_mm_cid_work", 0x30: "tctx_task_work"}

agg = st.fixed_dictionaries({**{k: st.integers(0, 50) for k in SUMS},
                             **{k: st.integers(0, 10**6) for k in MAXES},
                             "notify_mask": st.integers(0, 31),
                             "max_depth": st.integers(0, 9),
                             "comm": st.sampled_from(["python3", "sh", "nginx"]),
                             "pid": st.integers(1, 3)})
hist = st.dictionaries(st.integers(0, 60), st.integers(1, 20), max_size=3)
delta = st.fixed_dictionaries({
    "aggs": st.dictionaries(st.tuples(st.sampled_from(TASKS), st.sampled_from(FUNCS)), agg,
                            max_size=4),
    "hists": st.dictionaries(st.tuples(st.sampled_from(TASKS), st.sampled_from(FUNCS),
                                       st.sampled_from([model.QUEUE, model.RUN])), hist,
                             max_size=4),
    "pairs": st.dictionaries(st.tuples(st.integers(1, 3), st.sampled_from(TASKS),
                                       st.sampled_from(FUNCS)),
                             st.fixed_dictionaries({"adds": st.integers(1, 9),
                                                    "adder_comm": st.just("sh")}), max_size=3),
    "retired": st.dictionaries(st.sampled_from(TASKS), st.just({}), max_size=2),
    "settle": st.lists(st.tuples(st.sampled_from(TASKS), st.sampled_from(FUNCS)), max_size=2),
    "fold": st.booleans()})


def flatten(d):
    return {"aggs": {(tk[0], tk[1], f): a for (tk, f), a in d["aggs"].items()},
            # as the kernel writes them: a histogram beside its (task, func) aggregate
            "hists": {(tk[0], tk[1], f, k): h for (tk, f, k), h in d["hists"].items()
                      if (tk, f) in d["aggs"]},
            "pairs": {(p, tk[0], tk[1], f): v for (p, tk, f), v in d["pairs"].items()},
            "retired": d["retired"]}


def lines(snap, tot):
    return [line for line, _ in snap._func_lines(tot)]


def reference(snap, tot):
    saved = tot.func_aggs
    tot.func_aggs = None  # take the path that sums the tasks
    try:
        return lines(snap, tot)
    finally:
        tot.func_aggs = saved


@settings(max_examples=400, deadline=None)
@given(st.lists(delta, min_size=1, max_size=8), st.booleans(),
       st.sampled_from([None, "^python", "^(sh|nginx)$"]))
def test_kept_func_totals_equal_the_sum_over_tasks(deltas, keep_exited, comm):
    tot = Totals(comm, keep_exited=keep_exited)
    snap = model.Snapshotter(NAMES.get, lambda a: True)
    for d in deltas:
        tot.apply(flatten(d))
        tot.settle([{"tid": tk[0], "gen": tk[1], "func": f} for tk, f in d["settle"]])
        view = tot.view()
        assert lines(snap, view) == reference(snap, view)
        only = narrowed(view, lambda f: f != 0x20)
        assert lines(snap, only) == reference(snap, only)
        if d["fold"]:
            tot.fold_shown()
