"""Part 5's graded check: the reference passes, each known bug is named, and its frozen snapshot is
current."""

import pytest
import torch

import scratchmlm.classroom.checks
from scratchmlm import noam
from scratchmlm.classroom.checks import adapters
from scratchmlm.classroom.checks.make_snapshots import check_distinguishable, noam_snapshot
from scratchmlm.classroom.checks.mutants import MUTANTS, replaced
from scratchmlm.classroom.checks.noam import CAUSES, check_noam
from scratchmlm.classroom.checks.snapshots import load_snapshot

pytestmark = pytest.mark.noam


def test_the_reference_passes():
    report = check_noam()
    assert report.passed, report.to_text()
    assert report.score == report.points == 10
    assert all(item.tolerance for item in report.items)


@pytest.mark.parametrize("bug", sorted(MUTANTS["noam"]))
def test_each_bug_is_named(bug):
    with MUTANTS["noam"][bug]():
        report = check_noam()
    failing = [item for item in report.items if not item.passed]
    assert failing, f"{bug} passed:\n{report.to_text()}"
    assert {item.cause for item in failing} == {CAUSES[bug]}, report.to_text()


def test_the_snapshot_is_current():
    fresh, disk = noam_snapshot(), load_snapshot("noam")
    assert set(fresh) == set(disk), "rerun python -m scratchmlm.classroom.checks.make_snapshots noam"
    for name, tensor in fresh.items():
        assert tensor.dtype == disk[name].dtype and tensor.shape == disk[name].shape, name
        assert torch.allclose(tensor.double(), disk[name].double(), rtol=1e-12, atol=0), name
    check_distinguishable("noam", fresh)


def _formula(step, d_model, warmup, factor=1.0):
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def test_an_independent_implementation_passes():
    """The formula written again, and torch's own LambdaLR as the scheduler."""
    def make_scheduler(optimizer, d_model, warmup, factor=1.0):
        for group in optimizer.param_groups:
            group["lr"] = 1.0                              # LambdaLR multiplies the group's lr
        return torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                 lambda done: _formula(done + 1, d_model, warmup, factor))

    report = check_noam(run_noam=_formula, make_noam_scheduler=make_scheduler)
    assert report.passed, report.to_text()


def test_the_scheduler_follows_an_unknown_table_bug_with_its_own_words():
    def wrong(step, d_model, warmup, factor=1.0):          # warmup^-1 instead of warmup^-1.5
        return factor * d_model ** -0.5 * min(step ** -0.5, step / warmup)

    with replaced(noam, "noam_lr", wrong), replaced(adapters, "noam_lr", wrong):
        report = check_noam()
    assert not report.passed
    scheduler = [item for item in report.items if item.name.startswith("scheduler")]
    assert scheduler and all(not item.passed and "come from your noam_lr" in item.cause for item in scheduler)


def test_a_stub_gives_a_not_implemented_report():
    def stub(step, d_model, warmup, factor=1.0):
        raise NotImplementedError("Part 5 (noam): implement noam_lr")

    with replaced(noam, "noam_lr", stub), replaced(adapters, "noam_lr", stub):
        report = scratchmlm.classroom.checks.check_noam()
    assert report.not_implemented == "Part 5 (noam): implement noam_lr"
    assert not report.passed and report.score == 0
