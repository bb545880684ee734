"""The per-part markers select every test of their part, as the teacher's guide says
(``pytest -m masking`` ... ``pytest -m noam``): the reference's unit tests and the graded checks.

The suite is collected once here (``--collect-only``) and each part selected as ``-m PART`` selects,
by marker name. Every test in the part's own files must be selected, the part's cases of the
catalogue-wide files too, and the count must stay near what it is today, so a marker lost from a
file, a decorator or a parameter fails here.
"""

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# part -> (the files that test only this part: its unit tests, then its graded check; the fewest
#          tests `-m PART` may select, half of its count when this was written: 66, 51, 51, 79, 28)
PARTS = {
    "masking": (["test_masking.py", "test_word_and_span_masking.py", "test_checks_masking.py"], 33),
    "attention": (["test_checks_attention.py"], 25),
    "encoder": (["test_checks_encoder.py"], 25),
    "step": (["test_step.py", "test_checks_step.py"], 40),
    "noam": (["test_noam.py", "test_checks_noam.py"], 14),
}
# files that test several parts, each test or parameter marked with its own part
SHARED = {
    "test_model.py": {"attention", "encoder"},
    "test_checks_mutants.py": set(PARTS),
    "test_checks_unseen.py": set(PARTS),
    "test_checks_containment.py": {"masking", "attention", "step", "noam"},
}


class Collected:
    """A pytest plugin that keeps each collected test's marker names (what ``-m NAME`` selects on)."""

    def __init__(self):
        self.markers: dict[str, set[str]] = {}

    def pytest_collection_finish(self, session):
        self.markers = {item.nodeid: {mark.name for mark in item.iter_markers()} for item in session.items}


@pytest.fixture(scope="module")
def collected() -> dict[str, set[str]]:
    """Every test under tests/ with its markers, collected once in this process (``--collect-only``)."""
    plugin = Collected()
    status = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", str(TESTS)], plugins=[plugin])
    assert status == pytest.ExitCode.OK, f"collection failed: {status}"
    return plugin.markers


def file_of(nodeid: str) -> str:
    return Path(nodeid.split("::")[0]).name


@pytest.mark.parametrize("part", PARTS)
def test_a_part_marker_selects_every_test_of_that_part(part, collected):
    own_files, fewest = PARTS[part]
    everything = list(collected)
    selected = [nodeid for nodeid, markers in collected.items() if part in markers]     # what -m PART runs
    chosen = set(selected)
    for name in own_files:
        in_file = [nodeid for nodeid in everything if file_of(nodeid) == name]
        assert in_file, f"{name} holds no tests"
        missed = [nodeid for nodeid in in_file if nodeid not in chosen]
        assert not missed, f"-m {part} misses {len(missed)} tests of {name}, e.g. {missed[0]}"
    files = {file_of(nodeid) for nodeid in selected}
    for name, parts in SHARED.items():
        if part in parts:
            assert name in files, f"-m {part} selects none of {name}'s tests of Part {part}"
    for name in ("test_checks_mutants.py", "test_checks_unseen.py"):      # cases named "[part-bug]"
        cases = [nodeid for nodeid in everything if file_of(nodeid) == name and f"[{part}-" in nodeid]
        assert cases and all(nodeid in chosen for nodeid in cases), f"-m {part} misses {name}'s {part} cases"
    assert len(selected) >= fewest, f"-m {part} selects only {len(selected)} tests (at least {fewest} expected)"
