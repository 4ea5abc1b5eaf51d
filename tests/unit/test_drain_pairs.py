"""A task's adds to itself come out of its aggregate as the pair (its process
-> itself), merged with what other threads of that process added."""
import ctypes
from types import SimpleNamespace as NS

from twtrace.drain import _self_pairs
from twtrace.record import RecordOptions, lost_warning, niceness


def agg(pid, own, comm=b"closer", cgroup=7):
    return NS(pid=pid, own_adds=own, comm=ctypes.create_string_buffer(comm, 16).value,
              cgroup=cgroup)


def test_own_adds_become_the_self_pair():
    pairs = {}
    _self_pairs([(NS(tid=11, gen=3, func=0xf0), agg(10, 5))], pairs)
    assert pairs == {(10, 11, 3, 0xf0): {"adds": 5, "adder_comm": "closer", "adder_cgroup": 7}}


def test_own_adds_join_a_sibling_threads_pair_and_zero_is_no_pair():
    pairs = {(10, 11, 3, 0xf0): {"adds": 2, "adder_comm": "sibling", "adder_cgroup": 7}}
    _self_pairs([(NS(tid=11, gen=3, func=0xf0), agg(10, 5)),
                 (NS(tid=12, gen=1, func=0xf0), agg(10, 0))], pairs)
    assert pairs == {(10, 11, 3, 0xf0): {"adds": 7, "adder_comm": "sibling", "adder_cgroup": 7}}


def test_events_lower_the_niceness_unless_told():
    assert niceness(RecordOptions(output="-", events=True)) == 19
    assert niceness(RecordOptions(output="-")) == 0
    assert niceness(RecordOptions(output="-", events=True, nice=0)) == 0
    assert niceness(RecordOptions(output="-", nice=5)) == 5


def test_lost_events_are_said_at_the_end_with_what_to_do():
    assert lost_warning(0, 19) is None
    w = lost_warning(1234, 19)
    assert w.startswith("twtrace: warning: 1234 events") and "--nice 0" in w and "\n" not in w
    assert "--nice" not in lost_warning(5, 0)
