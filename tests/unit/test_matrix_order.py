"""The matrix starts its cells longest first, so its two lanes end together."""
import dataclasses

from twtrace.vm import cells, matrix


def test_every_cell_once_longest_first():
    order = matrix._select(None)
    assert sorted(c.name for c in order) == sorted(cells.ALL_CELLS)
    assert order[0].name == cells.DEFAULT_CELL  # it runs every test
    expected = [matrix._expected_s(c) for c in order]
    assert expected == sorted(expected, reverse=True)
    assert all(c.cpus > 1 for c in order[-len(cells.SMP_CELLS):])  # the short ones end it


def test_unlisted_cells_are_placed_by_kind():
    arm = dataclasses.replace(cells.CELLS["trixie-arm64"], suite="forky")
    amd = dataclasses.replace(cells.CELLS["trixie-amd64"], suite="forky")
    smp = dataclasses.replace(amd, cpus=2)
    assert arm.name not in matrix.EXPECTED_S and smp.name not in matrix.EXPECTED_S
    # emulating the other architecture is slower; two vCPUs run fewer tests
    assert matrix._expected_s(arm) > matrix._expected_s(amd) > matrix._expected_s(smp)
