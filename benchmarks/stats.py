"""The harness's arithmetic: ratios within one run, medians, minima, slopes.

Every figure the benchmark reports is a ratio of two measurements made in the
same guest in the same run (interleaved windows), because absolute figures
from an emulated CPU do not carry over to hardware; ratios mostly do.
"""


def median(values):
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2.0


def minimum(values):
    vals = [v for v in values if v is not None]
    return min(vals) if vals else None


def ratio(a, b):
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / float(b)


def summary(values):
    """median, minimum, maximum and count of the values that exist."""
    vals = [v for v in values if v is not None]
    return {"median": median(vals), "min": minimum(vals),
            "max": max(vals) if vals else None, "n": len(vals)}


def slowdown(untraced_rate, traced_rate):
    """How many times slower the workload ran traced (1.0 = no slowdown)."""
    return ratio(untraced_rate, traced_rate)


def prog_deltas(before, after):
    """{prog_id: (run_time_ns, run_cnt)} over a window, from two snapshots of
    procfs.prog_stats. Programs that appeared during the window count from 0."""
    out = {}
    for pid, (t1, n1) in after.items():
        t0, n0 = before.get(pid, (0, 0))
        out[pid] = (t1 - t0, n1 - n0)
    return out


def slope(points):
    """Least-squares slope of (x, y) points, or None with fewer than two
    distinct x. Used to say whether memory or read cost grows over time."""
    pts = [(float(x), float(y)) for x, y in points if x is not None and y is not None]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def growth(points):
    """Relative change fitted over the whole run: slope * span / mean y.
    0.05 means the fitted line rises by 5 % of the mean from first to last
    sample; a flat series is near 0."""
    pts = [(x, y) for x, y in points if x is not None and y is not None]
    s = slope(pts)
    if s is None:
        return None
    xs = [x for x, _ in pts]
    mean_y = sum(y for _, y in pts) / len(pts)
    if mean_y == 0:
        return 0.0 if s == 0 else None
    return s * (max(xs) - min(xs)) / mean_y
