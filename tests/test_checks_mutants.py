"""Every known bug is named by its own part's check, and fails no other part.

Each bug from the teacher's catalogue is swapped into the reference in turn; all five checks run.
Select one part with its marker: ``pytest -m attention``. One dependency is allowed and must say so:
Part 3's property items run a live attention, so an attention bug may fail them, with the words
"fix Part 2 first" (``encoder.ATTENTION_FIRST``) and nothing else.

The sweep runs 48 bugs x 5 checks (about 40 s on 2 cores), so it is in the slow tier; the fast tier
names each bug with its own part's check (``test_checks_PART.py::test_each_bug_is_named``).
"""

import importlib

import pytest

from scratchmlm.classroom.checks import PARTS
from scratchmlm.classroom.checks.encoder import ATTENTION_FIRST
from scratchmlm.classroom.checks.mutants import MUTANTS

CASES = [pytest.param(part, bug, marks=getattr(pytest.mark, part), id=f"{part}-{bug}")
         for part, bugs in MUTANTS.items() for bug in bugs]


def test_every_part_has_a_catalogue_of_bugs():
    assert set(MUTANTS) == set(PARTS)
    for part, bugs in MUTANTS.items():
        causes = importlib.import_module(f"scratchmlm.classroom.checks.{part}").CAUSES
        assert len(bugs) >= 3, f"{part}: only {len(bugs)} known bugs"
        assert set(bugs) <= set(causes), f"{part}: bugs without words for the student: {set(bugs) - set(causes)}"


@pytest.mark.slow
@pytest.mark.parametrize("part, bug", CASES)
def test_each_bug_is_named_by_its_part_and_fails_no_other(part, bug):
    words = importlib.import_module(f"scratchmlm.classroom.checks.{part}").CAUSES[bug]
    with MUTANTS[part][bug]():
        reports = {name: check() for name, check in PARTS.items()}
    failing = [item for item in reports[part].items if not item.passed]
    assert failing, f"{bug} passed the {part} check:\n{reports[part].to_text()}"
    causes = {item.cause for item in failing}
    assert causes == {words}, f"{bug} was diagnosed as {causes}:\n{reports[part].to_text()}"
    def blames_this_part(name, report):
        failing = [item for item in report.items if not item.passed]
        if part == "attention" and name == "encoder" and not report.not_implemented:
            return any(item.cause != ATTENTION_FIRST for item in failing)
        return not report.passed

    others = [name for name, report in reports.items() if name != part and blames_this_part(name, report)]
    assert not others, f"{bug} in {part} also failed {others}:\n" + "\n".join(reports[n].to_text() for n in others)
