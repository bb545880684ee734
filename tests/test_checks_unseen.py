"""The grader on wrong code outside its catalogue: every bug of ``unseen_bugs.py`` (plausible bugs the
checks were not written against, with no frozen outputs and no words of their own) fails its part,
and every failed item says which property failed and where, not the generic "no known bug" line.

``python -m scratchmlm.classroom.checks.unseen_bugs`` prints caught / named / located / passed for the
catalogue and for this set.
"""

import pytest

from scratchmlm.classroom.checks.mutants import MUTANTS
from scratchmlm.classroom.checks.unseen_bugs import UNSEEN, judge

CASES = [pytest.param(part, bug, marks=getattr(pytest.mark, part), id=f"{part}-{bug}")
         for part, bugs in UNSEEN.items() for bug in bugs]


def test_the_unseen_set_is_large_and_disjoint_from_the_catalogue():
    assert sum(len(bugs) for bugs in UNSEEN.values()) >= 10
    assert set(UNSEEN) == set(MUTANTS)
    for part, bugs in UNSEEN.items():
        assert not set(bugs) & set(MUTANTS[part]), part


@pytest.mark.parametrize("part, bug", CASES)
def test_an_unseen_bug_is_caught_and_located(part, bug):
    result = judge(part, UNSEEN[part][bug])
    assert result["caught"], f"{part}/{bug} passed the {part} check"
    assert result["located"], f"{part}/{bug}: a failed item gave only the generic line: {result['causes']}"
    assert result["score"] < result["points"]
