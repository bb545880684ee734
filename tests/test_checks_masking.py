"""Part 1's graded check: the reference passes, each known bug is named, and the statistical bounds
hold for other seeds and on a masker that draws in another order.

The masking check is statistical: it has no frozen snapshot (a correct masker may draw its random
numbers in any order), so instead of a stale-snapshot test its sample size is checked against the
premise of its tightest bound.
"""

import math

import pytest
import torch

import scratchmlm.classroom.checks
from scratchmlm.classroom.checks import masking as masking_check
from scratchmlm.classroom.checks.make_snapshots import SNAPSHOTS
from scratchmlm.classroom.checks.masking import CAUSES, check_masking
from scratchmlm.classroom.checks.mutants import MUTANTS, VARIANTS, replaced
from scratchmlm.classroom.checks.snapshots import snapshot_path
from scratchmlm.masking import BertMasker, MaskedBatch

pytestmark = pytest.mark.masking


def test_the_reference_passes():
    report = check_masking()
    assert report.passed, report.to_text()
    assert report.score == report.points == 20
    assert all(item.tolerance for item in report.items)


@pytest.mark.parametrize("bug", sorted(MUTANTS["masking"]))
def test_each_bug_is_named(bug):
    with MUTANTS["masking"][bug]():
        report = check_masking()
    failing = [item for item in report.items if not item.passed]
    assert failing, f"{bug} passed:\n{report.to_text()}"
    assert {item.cause for item in failing} == {CAUSES[bug]}, report.to_text()


def test_the_required_bugs_are_in_the_catalogue():
    assert {"independent_draws", "special_ids_inserted", "labels_kept_at_unselected", "input_modified_in_place",
            "selection_shared_across_rows", "selection_depends_on_position", "generator_ignored"} <= set(MUTANTS["masking"])


def google_bert_masker(ids, rng, mask_id, replacement_ids, never_select_ids, select_prob=0.15,
                       mask_token_prob=0.8, random_token_prob=0.1):
    """Google's BERT: a fixed count per sequence, max(1, round(select_prob * n_maskable)), at random
    positions; then one draw per selected position for [MASK] / random / unchanged."""
    replacement_ids = torch.as_tensor(list(replacement_ids))
    maskable = ~torch.isin(ids, torch.as_tensor(list(never_select_ids)))
    counts = (maskable.sum(-1) * select_prob).round().clamp(min=1)
    scores = torch.rand(ids.shape, generator=rng).masked_fill(~maskable, 2.0)
    ranks = scores.argsort(-1).argsort(-1)
    selected = (ranks < counts[:, None]) & maskable
    u = torch.rand(ids.shape, generator=rng)
    masked = selected & (u < mask_token_prob)
    randomised = selected & ~masked & (u < mask_token_prob + random_token_prob)
    tokens = replacement_ids[torch.randint(len(replacement_ids), ids.shape, generator=rng)]
    inputs = torch.where(masked, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(randomised, tokens, inputs)
    kinds = masked * 1 + randomised * 2 + (selected & ~masked & ~randomised) * 3
    return MaskedBatch(inputs, torch.where(selected, ids, torch.full_like(ids, -100)), kinds.to(torch.uint8))


def test_a_fixed_count_per_sequence_is_accepted_by_the_default_rule():
    """Google's BERT selects round(0.15 * n) per sequence: correct under the default rule ("either")."""
    report = check_masking(run_masker=google_bert_masker)
    assert report.passed, report.to_text()
    with VARIANTS["masking"]["fixed_count_per_row"]():
        assert check_masking().passed
        assert check_masking(selection="fixed_count").passed


def test_a_teacher_who_requires_independent_selection_gets_the_fixed_count_named():
    with VARIANTS["masking"]["fixed_count_per_row"]():
        report = check_masking(selection="independent")
    failing = [item for item in report.items if not item.passed]
    assert failing and {item.cause for item in failing} == {CAUSES["fixed_count_per_row"]}, report.to_text()
    assert not check_masking(selection="fixed_count").passed       # the reference is binomial


def test_a_selection_broadcast_over_the_batch_is_named_as_shared_not_as_a_fixed_count():
    """The instructor's case: rows selected 229/235/231/228 because every row used the same draws."""
    def broadcast(ids, rng, mask_id, replacement_ids, never_select_ids, select_prob=0.15, *rest):
        batch = masking_check.adapters.run_masker(ids, rng, mask_id, replacement_ids, never_select_ids,
                                                  select_prob, *rest)
        maskable = ~torch.isin(ids, torch.as_tensor(list(never_select_ids)))
        shared = (torch.rand(ids.shape[-1], generator=rng) < select_prob) & maskable
        kinds = torch.where(shared, torch.ones_like(batch.kinds), torch.zeros_like(batch.kinds))
        inputs = torch.where(shared, torch.full_like(ids, mask_id), ids)
        labels = torch.where(shared, ids, torch.full_like(ids, -100))
        return MaskedBatch(inputs, labels, kinds)

    report = check_masking(run_masker=broadcast, selection="independent")
    causes = {item.cause for item in report.items if not item.passed}
    assert CAUSES["selection_shared_across_rows"] in causes and CAUSES["fixed_count_per_row"] not in causes, \
        report.to_text()


def test_the_check_is_statistical_and_has_no_snapshot():
    assert "masking" not in SNAPSHOTS
    assert not snapshot_path("masking").exists()


def test_the_sample_is_large_enough_for_the_split_bound():
    """The +-0.005 bound on the 80/10/10 split is 6 standard errors only with >= MIN_SELECTED selected:
    the main case's maskable positions give that many even 6 standard errors below the mean."""
    ids = masking_check.make_ids(masking_check.BATCH, masking_check.SEQ,
                                 torch.Generator().manual_seed(masking_check.DATA_SEED))
    maskable = int((~torch.isin(ids, torch.tensor(masking_check.SPECIAL_IDS))).sum())
    p = masking_check.SELECT_PROB
    lowest = maskable * p - 6 * math.sqrt(maskable * p * (1 - p))
    assert masking_check.MIN_SELECTED == 230_400
    assert lowest >= masking_check.MIN_SELECTED
    # and the bound sits halfway between the right shares and independent draws' 81/10/9
    assert masking_check._independent_shares(0.8, 0.1) == pytest.approx([0.81, 0.1, 0.09])
    assert masking_check.SHARE_ATOL == pytest.approx(0.01 / 2)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_bounds_hold_for_other_seeds(monkeypatch, seed):
    """The check is seeded; other seeds must pass too, and still catch the bug closest to its bounds."""
    monkeypatch.setattr(masking_check, "MASK_SEED", seed)
    monkeypatch.setattr(masking_check, "GLOBAL_SEED", seed)
    report = check_masking()
    assert report.passed, report.to_text()
    with MUTANTS["masking"]["independent_draws"]():
        report = check_masking()
    assert {item.cause for item in report.items if not item.passed} == {CAUSES["independent_draws"]}


def hf_style_masker(ids, rng, mask_id, replacement_ids, never_select_ids, select_prob=0.15,
                    mask_token_prob=0.8, random_token_prob=0.1):
    """A correct masker written differently (Hugging Face's draw order: Bernoulli draws for
    [MASK], then for random among the rest; int64 kinds), to show the check judges properties."""
    replacement_ids = torch.as_tensor(list(replacement_ids))
    special = torch.isin(ids, torch.as_tensor(list(never_select_ids) + [mask_id]))
    selected = torch.bernoulli(torch.full(ids.shape, select_prob), generator=rng).bool() & ~special
    masked = torch.bernoulli(torch.full(ids.shape, mask_token_prob), generator=rng).bool() & selected
    random_share = random_token_prob / (1.0 - mask_token_prob)
    randomised = torch.bernoulli(torch.full(ids.shape, random_share), generator=rng).bool() & selected & ~masked
    tokens = replacement_ids[torch.randint(len(replacement_ids), ids.shape, generator=rng)]
    inputs = ids.clone()
    inputs[masked] = mask_id
    inputs[randomised] = tokens[randomised]
    labels = ids.clone()
    labels[~selected] = -100
    kinds = torch.zeros(ids.shape, dtype=torch.long)
    kinds[masked], kinds[randomised], kinds[selected & ~masked & ~randomised] = 1, 2, 3
    return MaskedBatch(inputs, labels, kinds)


def test_an_independent_implementation_passes():
    report = check_masking(run_masker=hf_style_masker)
    assert report.passed, report.to_text()


def test_an_unknown_bug_gets_generic_words():
    def wrong(ids, rng, mask_id, replacement_ids, never_select_ids, select_prob=0.15, *rest):
        return hf_style_masker(ids, rng, mask_id, replacement_ids, never_select_ids, 0.2, *rest)  # 20% selected

    report = check_masking(run_masker=wrong)
    failing = [item for item in report.items if not item.passed]
    assert failing and "selection rate" in failing[0].name
    assert failing[0].cause == masking_check.GENERIC["rate"]
    assert not set(item.cause for item in failing) & set(CAUSES.values())


def test_the_check_leaves_the_global_random_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with MUTANTS["masking"]["generator_ignored"]():
        check_masking()
    assert torch.equal(torch.rand(3), expected)


def test_a_stub_gives_a_not_implemented_report():
    def stub(self, ids, rng):
        raise NotImplementedError("Part 1 (masking): implement BertMasker.__call__")

    with replaced(BertMasker, "__call__", stub):
        report = scratchmlm.classroom.checks.check_masking()
    assert report.not_implemented == "Part 1 (masking): implement BertMasker.__call__"
    assert not report.passed and report.score == 0
