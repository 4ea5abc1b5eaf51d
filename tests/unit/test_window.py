"""The counting window's edges: written ahead of their instant, and waited for."""
from twtrace.window import LEAD_MAX_NS, LEAD_MIN_NS, OPEN_END, Window, lead_for


class FakeHost:
    """A clock that advances by `write_ns` per map write and by the time slept."""

    def __init__(self, write_ns=1_000):
        self.now = 5_000_000_000
        self.write_ns = write_ns
        self.writes = []  # (clock when the write returned, start, end)

    def clock(self):
        return self.now

    def sleep(self, s):
        self.now += int(s * 1e9)

    def write(self, start, end):
        self.now += self.write_ns
        self.writes.append((self.now, start, end))


def window(host):
    return Window(host.write, clock=host.clock, sleep=host.sleep)


def test_open_writes_the_edge_before_its_instant_and_returns_after_it():
    host = FakeHost()
    w = window(host)
    w.calibrate()
    assert host.writes == [(host.writes[i][0], 0, 0) for i in range(3)]  # harmless: closed
    at = w.open()
    returned, start, end = host.writes[-1]
    assert (start, end) == (at, OPEN_END)
    assert returned < at <= host.now
    assert w.late_ns == 0


def test_close_keeps_the_start():
    host = FakeHost()
    w = window(host)
    start = w.open()
    end = w.close()
    assert host.writes[-1][1:] == (start, end) and start < end <= host.now
    assert host.writes[-1][0] < end


def test_a_stalled_write_is_reported_and_raises_the_lead():
    host = FakeHost(write_ns=LEAD_MIN_NS + 7)  # the write returns past its instant
    w = window(host)
    w.open()
    assert w.late_ns == 8  # fuzzy from the instant to the write's return, inclusive
    assert w.lead_ns == 4 * LEAD_MIN_NS


def test_calibration_scales_the_lead_with_the_slowest_write():
    host = FakeHost(write_ns=4_000_000)
    w = window(host)
    w.calibrate()
    assert w.lead_ns == 4_000_000 * 50
    w.open()
    assert w.late_ns == 0


def test_lead_bounds():
    assert lead_for(0) == LEAD_MIN_NS
    assert lead_for(10**12) == LEAD_MAX_NS


def test_rewrite_keeps_both_edges():
    host = FakeHost()
    w = window(host)
    start = w.open()
    w.rewrite()
    assert host.writes[-1][1:] == (start, OPEN_END)
