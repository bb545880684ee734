"""Whatever the code under test does, the checks finish: an exception, a RecursionError, a wrong
return type or an endless loop becomes a failed item with its reason and the student's last line; the
other items and parts are still graded; ``scratchmlm check all --json`` prints one complete document;
points are split over the items (or all-or-nothing on request)."""

import json
import math

import pytest
import torch

import scratchmlm.classroom.checks
from scratchmlm import noam
from scratchmlm.classroom.checks import adapters, guard
from scratchmlm.classroom.checks.mutants import MUTANTS, replaced
from scratchmlm.harness.cli import main
from scratchmlm.masking import BertMasker
from scratchmlm.model import MultiHeadAttention


def view_after_transpose(self, x, key_padding_mask=None, return_weights=False):
    batch, seq, d_model = x.shape
    q, k, v = self.qkv(x).view(batch, seq, 3, self.num_heads, self.d_k).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)
    heads = scores.softmax(-1) @ v
    merged = heads.transpose(1, 2).view(batch, seq, d_model)        # RuntimeError: view of a non-contiguous tensor
    return self.out(merged)


def index_error_noam_lr(step, d_model, warmup, factor=1.0):
    table = [factor * d_model ** -0.5 * min(s ** -0.5, s * warmup ** -1.5) for s in range(1, 100)]
    return table[step - 1]                                            # IndexError past step 99


@pytest.mark.attention
def test_an_exception_in_the_attention_is_a_failed_item_with_the_students_line():
    with replaced(MultiHeadAttention, "forward", view_after_transpose):
        report = scratchmlm.classroom.checks.check_attention()
    failing = [item for item in report.items if not item.passed]
    assert failing and len(report.items) == scratchmlm.classroom.checks.attention.PLANNED_ITEMS, report.to_text()
    first = failing[0]
    assert first.detail.startswith("RuntimeError: view size is not compatible"), first.detail
    assert "test_checks_containment.py" in first.detail and "merged = heads.transpose(1, 2).view" in first.detail
    assert "checks/attention.py" not in first.detail and "checks/guard.py" not in first.detail


def test_check_all_json_is_one_document_whatever_the_students_code_does(capsys):
    def noisy_masker(self, ids, rng):
        print("debugging my masker")                                  # must not corrupt the JSON
        raise RecursionError("maximum recursion depth exceeded")

    with replaced(MultiHeadAttention, "forward", view_after_transpose), \
            replaced(noam, "noam_lr", index_error_noam_lr), replaced(adapters, "noam_lr", index_error_noam_lr), \
            replaced(BertMasker, "__call__", noisy_masker):
        code = main(["check", "all", "--json"])
    out = capsys.readouterr().out
    document = json.loads(out)
    assert code == 1
    parts = {part["part"]: part for part in document["parts"]}
    assert set(parts) == set(scratchmlm.classroom.checks.PARTS)
    assert parts["step"]["passed"] and parts["step"]["score"] == 25
    masking_detail = parts["masking"]["items"][0]["detail"]
    assert masking_detail.startswith("RecursionError") and "noisy_masker" in masking_detail
    noam_details = [item["detail"] for item in parts["noam"]["items"] if not item["passed"]]
    assert noam_details and all(d.startswith("IndexError: list index out of range") for d in noam_details)
    assert all("index_error_noam_lr" in d for d in noam_details)
    assert 0 < parts["noam"]["score"] < 10                    # the short table and the scheduler still count
    for part in document["parts"]:
        assert part["items"] and all({"passed", "points", "score", "detail", "cause"} <= set(i) for i in part["items"])
        assert math.isclose(sum(i["points"] for i in part["items"]), part["points"], abs_tol=0.05)
        assert math.isclose(sum(i["score"] for i in part["items"]), part["score"], abs_tol=0.05)
    assert document["points"] == 100
    assert math.isclose(document["score"], sum(part["score"] for part in document["parts"]))
    assert 25 < document["score"] < 100


@pytest.mark.masking
def test_an_endless_loop_is_stopped_by_the_time_limit(monkeypatch):
    monkeypatch.setattr(guard, "CALL_TIME_LIMIT", 0.5)

    def endless(self, ids, rng):
        while True:
            pass

    with replaced(BertMasker, "__call__", endless):
        report = scratchmlm.classroom.checks.check_masking()
    assert not report.passed and report.score == 0
    assert "ran longer than 0.5 s" in report.items[0].detail and "endless" in report.items[0].detail


@pytest.mark.noam
def test_an_except_exception_in_student_code_does_not_swallow_the_time_limit(monkeypatch):
    monkeypatch.setattr(guard, "CALL_TIME_LIMIT", 0.1)                # each stubborn call costs this long

    def stubborn(step, d_model, warmup, factor=1.0):
        while True:
            try:
                while True:
                    pass
            except Exception:                                         # noqa: BLE001  (what a student might write)
                pass

    with replaced(noam, "noam_lr", stubborn), replaced(adapters, "noam_lr", stubborn):
        report = scratchmlm.classroom.checks.check_noam()
    assert not report.passed and any("ran longer" in item.detail for item in report.items)


@pytest.mark.step
@pytest.mark.parametrize("returned", [None, [1.0, 2.0], "loss", torch.zeros(3)])
def test_a_wrong_return_type_is_a_failed_item(returned):
    report = scratchmlm.classroom.checks.check_step(run_masked_cross_entropy=lambda logits, labels: returned)
    assert not report.passed
    loss_items = [item for item in report.items if item.name.startswith("masked_cross_entropy")]
    assert loss_items and not any(item.passed for item in loss_items), report.to_text()
    assert all(item.detail for item in loss_items if not item.passed)


@pytest.mark.attention
def test_a_wrong_return_type_of_the_attention_is_a_failed_item():
    report = scratchmlm.classroom.checks.check_attention(run_attention=lambda *args, **kwargs: [[0.0]])
    failing = [item for item in report.items if not item.passed]
    assert len(failing) == len(report.items) and "expected a tensor, got list" in failing[0].detail, report.to_text()
    assert report.score == 0


@pytest.mark.attention
def test_partial_credit_counts_the_items_that_pass_and_all_or_nothing_counts_none():
    with MUTANTS["attention"]["no_scaling"]():
        report = scratchmlm.classroom.checks.check_attention()
    passed = [item for item in report.items if item.passed]
    assert 0 < len(passed) < len(report.items)
    assert report.score == pytest.approx(report.points * len(passed) / len(report.items), abs=0.01)
    assert sum(report.item_points(item) for item in report.items) == pytest.approx(report.points, abs=0.05)
    report.all_or_nothing = True
    assert report.score == 0 and report.to_dict()["all_or_nothing"]
    assert all(item["score"] == 0 for item in report.to_dict()["items"])


@pytest.mark.masking
def test_a_crash_midway_scores_no_more_than_the_items_graded_before_it():
    """A masker that works once, then raises: the check cannot go on, and the items it never graded
    count as failed (one item with their weight), so 10 passed items of 16 do not become 10 of 11."""
    calls = {"n": 0}

    def works_once(ids, *args):
        calls["n"] += 1
        if calls["n"] > 1:
            raise ValueError("only once")
        return adapters.run_masker(ids, *args)

    report = scratchmlm.classroom.checks.check_masking(run_masker=works_once)
    planned = scratchmlm.classroom.checks.masking.PLANNED_ITEMS
    last = report.items[-1]
    assert not last.passed and last.weight == planned - (len(report.items) - 1)
    assert "ValueError: only once" in last.detail and "works_once" in last.detail
    assert report.score == pytest.approx(report.points * (len(report.items) - 1) / planned, abs=0.01)


@pytest.mark.noam
def test_the_time_limit_is_restored_after_a_check():
    import signal
    scratchmlm.classroom.checks.check_noam()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
