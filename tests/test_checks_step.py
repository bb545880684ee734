"""Part 4's graded check: the reference passes, each known bug is named, other parts' bugs cannot fail
it, a correct implementation written differently passes, and its frozen snapshot is current."""

import pytest
import torch

import scratchmlm.classroom.checks
from scratchmlm import step
from scratchmlm.classroom.checks import adapters
from scratchmlm.classroom.checks.make_snapshots import check_distinguishable, step_snapshot
from scratchmlm.classroom.checks.mutants import MUTANTS, replaced
from scratchmlm.classroom.checks.snapshots import load_snapshot
from scratchmlm.classroom.checks.step import CAUSES, check_step
from scratchmlm.step import StepResult

pytestmark = pytest.mark.step


def test_the_reference_passes():
    threads = torch.get_num_threads()
    report = check_step()
    assert report.passed, report.to_text()
    assert report.score == report.points == 25
    assert len(report.items) == 18
    assert all(item.tolerance for item in report.items)
    assert torch.get_num_threads() == threads           # the check runs on one thread and gives it back


@pytest.mark.parametrize("bug", sorted(MUTANTS["step"]))
def test_each_bug_is_named(bug):
    with MUTANTS["step"][bug]():
        report = check_step()
    failing = [item for item in report.items if not item.passed]
    assert failing, f"{bug} passed:\n{report.to_text()}"
    assert {item.cause for item in failing} == {CAUSES[bug]}, report.to_text()


@pytest.mark.slow                                   # 36 runs of the check; the catalogue sweep's step column
@pytest.mark.parametrize("part, bug", [(part, bug) for part in ("masking", "attention", "encoder", "noam")
                                       for bug in sorted(MUTANTS[part])])
def test_a_bug_in_another_part_does_not_fail_the_step_check(part, bug):
    with MUTANTS[part][bug]():
        report = check_step()
    assert report.passed, f"{part} bug {bug} failed Part 4:\n{report.to_text()}"


def test_the_snapshot_is_current():
    fresh, disk = step_snapshot(), load_snapshot("step")
    assert set(fresh) == set(disk), "rerun python -m scratchmlm.classroom.checks.make_snapshots step"
    for name, tensor in fresh.items():
        assert tensor.dtype == disk[name].dtype and tensor.shape == disk[name].shape, name
        assert torch.allclose(tensor.double(), disk[name].double(), rtol=0, atol=1e-12, equal_nan=True), name
    check_distinguishable("step", fresh)


def test_the_snapshot_activates_clipping_and_uses_distinct_rates():
    snapshot = load_snapshot("step")
    assert (snapshot["expected/step/result/grad_norm"] > 10 * snapshot["step/clip_norm"]).all()
    assert len(set(snapshot["step/lr_table"][:5].tolist())) == 5
    assert not snapshot["expected/loss/grad_unselected"].any()


def _written_out_loss(logits, labels):
    """The masked loss again, in float64, by indexing the selected positions first."""
    selected = labels != -100
    count = selected.sum()
    picked = logits[selected].log_softmax(-1).gather(-1, labels[selected].unsqueeze(-1))
    return -picked.sum() / count.clamp(min=1), count


def _written_out_step(model, ids, masker, rng, optimizer, scheduler, clip_norm, *, zero_grad="end"):
    """The step again: clipping by hand, the rate from the scheduler, gradients zeroed (not None)."""
    if zero_grad == "start":
        optimizer.zero_grad(set_to_none=False)
    with torch.no_grad():
        masked = masker(ids, rng)
    logits = model(masked.inputs)
    loss, count = _written_out_loss(logits, masked.labels)
    loss.backward()
    if zero_grad == "before_step":
        optimizer.zero_grad(set_to_none=True)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads)) if grads else torch.tensor(0.0)
    for g in grads:
        g.mul_(min(1.0, clip_norm / float(norm)))
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    if zero_grad == "end":
        optimizer.zero_grad(set_to_none=False)
    correct = ((logits.argmax(-1) == masked.labels) & (masked.labels != -100)).sum()
    return StepResult(loss.detach(), norm, lr, int(count), int(correct))


def test_an_independent_implementation_passes():
    def run_train_step(*args):
        return _written_out_step(*args)

    report = check_step(run_masked_cross_entropy=_written_out_loss, run_train_step=run_train_step)
    assert report.passed, report.to_text()


def test_gradients_cleared_at_the_start_instead_of_the_end_pass():
    report = check_step(run_masked_cross_entropy=_written_out_loss,
                        run_train_step=lambda *args: _written_out_step(*args, zero_grad="start"))
    assert report.passed, report.to_text()


def test_gradients_cleared_before_the_optimizer_step_are_named_as_cannot_overfit():
    report = check_step(run_masked_cross_entropy=_written_out_loss,
                        run_train_step=lambda *args: _written_out_step(*args, zero_grad="before_step"))
    failing = [item for item in report.items if not item.passed]
    assert failing and {item.cause for item in failing} == {CAUSES["cannot_overfit_one_batch"]}, report.to_text()


def test_a_stub_gives_a_not_implemented_report():
    def stub(logits, labels):
        raise NotImplementedError("Part 4 (step): implement masked_cross_entropy")

    with replaced(step, "masked_cross_entropy", stub), replaced(adapters, "masked_cross_entropy", stub):
        report = scratchmlm.classroom.checks.check_step()
    assert report.not_implemented == "Part 4 (step): implement masked_cross_entropy"
    assert not report.passed and report.score == 0


@pytest.mark.parametrize("variant", ["zero_grad_at_the_start", "guarded_mean_cross_entropy"])
def test_a_correct_variant_passes(variant):
    from scratchmlm.classroom.checks.mutants import VARIANTS

    with VARIANTS["step"][variant]():
        report = check_step()
    assert report.passed and report.score == report.points, report.to_text()


@pytest.mark.parametrize("empty", ["python_zero", "float32_zero", "zero_times_logits"])
def test_a_mean_cross_entropy_guarded_against_an_empty_selection_passes(empty):
    """torch's mean cross-entropy is NaN on an empty selection; any guard that returns 0 is right."""
    import torch.nn.functional as F

    def guarded(logits, labels):
        count = (labels != -100).sum()
        if int(count) == 0:
            return {"python_zero": (0.0, 0), "float32_zero": (torch.tensor(0.0), count),
                    "zero_times_logits": (logits.sum() * 0.0, count)}[empty]
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100), count

    report = check_step(run_masked_cross_entropy=guarded)
    assert report.passed, report.to_text()
