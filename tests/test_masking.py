"""The masker against its definition, on over a million real positions.

Every rate is checked within 5 standard deviations of its binomial expectation: a correct masker
fails such a check with probability < 1e-6, while the common "independent draws" bug (81/10/9)
sits more than 10 standard deviations away.
"""

import math

import pytest
import torch

from scratchmlm import IGNORE_INDEX, BertMasker, MaskedBatch, ScratchMLMError
from scratchmlm.masking import MASKED, NOT_SELECTED, RANDOMISED, UNCHANGED

pytestmark = pytest.mark.masking

SIGMAS = 5.0


def binomial_violation(name, count, trials, p):
    """A message when ``count`` is more than 5 sigma away from Binomial(trials, p)'s mean."""
    expected = trials * p
    sigma = math.sqrt(trials * p * (1 - p))
    z = (count - expected) / sigma
    return None if abs(z) <= SIGMAS else f"{name}: {count}/{trials} is {z:+.1f} sigma from p={p}"


def bert_masking_violations(originals, batch: MaskedBatch, vocab_size, first_real_id=3, mask_id=1,
                            never_ids=(0, 1, 2), select=0.15, mask=0.8, random=0.1):
    """Everything observably wrong with ``batch`` as a BERT masking of ``originals``.

    Judged from what the model sees (``inputs`` against ``originals``), not only from the kinds
    the masker reports about itself.
    """
    problems = []
    inputs, labels = batch.inputs, batch.labels
    selected = labels != IGNORE_INDEX
    maskable = ~torch.isin(originals, torch.tensor(never_ids))
    if bool((selected & ~maskable).any()):
        problems.append("a never-selectable id was selected")
    if not torch.equal(labels[selected], originals[selected]):
        problems.append("labels at selected positions are not the original ids")
    if not torch.equal(inputs[~selected], originals[~selected]):
        problems.append("an unselected position was changed")
    shown_mask = selected & (inputs == mask_id)
    shown_random = selected & (inputs != mask_id) & (inputs != originals)
    shown_same = selected & (inputs == originals)
    inserted = inputs[selected & (inputs != originals) & (inputs != mask_id)]
    if bool(((inserted < first_real_id) | (inserted >= vocab_size)).any()):
        problems.append("a special or out-of-range id was inserted as a random token")
    # The kinds the masker reports: exactly one of the three at each selected position (a sum of
    # overlapping kind flags, e.g. RANDOMISED + UNCHANGED, is none of them), none elsewhere, and
    # matching what the model sees.
    kinds = batch.kinds
    if not torch.equal(kinds != NOT_SELECTED, selected):
        problems.append("reported kinds do not cover exactly the selection")
    if not bool(torch.isin(kinds[selected], torch.tensor([MASKED, RANDOMISED, UNCHANGED])).all()):
        problems.append("a selected position reports none of the three kinds")
    if not torch.equal(kinds == MASKED, shown_mask):
        problems.append("reported [MASK] positions differ from the positions showing [MASK]")
    if not torch.equal(inputs[kinds == UNCHANGED], originals[kinds == UNCHANGED]):
        problems.append("a position reported unchanged was changed")
    # Rates. A random replacement equals the original with probability 1 / num_real.
    num_real = vocab_size - first_real_id
    n_maskable, n_selected = int(maskable.sum()), int(selected.sum())
    for violation in (
        binomial_violation("selection", n_selected, n_maskable, select),
        binomial_violation("[MASK]", int(shown_mask.sum()), n_selected, mask),
        binomial_violation("random", int(shown_random.sum()), n_selected, random * (1 - 1 / num_real)),
        binomial_violation("unchanged", int(shown_same.sum()), n_selected,
                           (1 - mask - random) + random / num_real),
        binomial_violation("reported random", int((kinds == RANDOMISED).sum()), n_selected, random),
        binomial_violation("reported unchanged", int((kinds == UNCHANGED).sum()), n_selected,
                           1 - mask - random),
    ):
        if violation:
            problems.append(violation)
    return problems


def independent_draws_masker(ids, rng, vocab_size=68):
    """The common bug: "unchanged" and "random" are drawn independently, so they overlap (~81/10/9)."""
    selected = (torch.rand(ids.shape, generator=rng) < 0.15) & (ids >= 3)
    unchanged = selected & (torch.rand(ids.shape, generator=rng) < 0.1)
    randomised = selected & (torch.rand(ids.shape, generator=rng) < 0.1)
    masked = selected & ~unchanged & ~randomised
    random_tokens = torch.randint(3, vocab_size, ids.shape, generator=rng)
    inputs = torch.where(masked, torch.ones_like(ids), ids)
    inputs = torch.where(randomised, random_tokens, inputs)
    kinds = (masked * MASKED + (randomised * RANDOMISED) + (unchanged & ~randomised) * UNCHANGED).to(torch.uint8)
    return MaskedBatch(inputs, torch.where(selected, ids, torch.full_like(ids, -100)), kinds)


@pytest.fixture(scope="module")
def windows(corpus_ids):
    """The whole real corpus as [34856, 32] windows: 1.1 million positions, with [PAD] sprinkled in."""
    usable = len(corpus_ids) // 32 * 32
    ids = corpus_ids[:usable].view(-1, 32).clone()
    ids[::97, -3:] = 0  # some padding, which must never be selected
    return ids


@pytest.fixture(scope="module")
def masker(tokenizer):
    return BertMasker.for_tokenizer(tokenizer)


def test_matches_bert_definition_on_a_million_positions(windows, masker, tokenizer):
    assert windows.numel() > 1_000_000
    batch = masker(windows, torch.Generator().manual_seed(0))
    assert bert_masking_violations(windows, batch, tokenizer.vocab_size) == []


@pytest.mark.parametrize("seed", [1, 2])
def test_the_checks_catch_the_independent_draws_bug(windows, seed, tokenizer):
    batch = independent_draws_masker(windows, torch.Generator().manual_seed(seed))
    problems = bert_masking_violations(windows, batch, tokenizer.vocab_size)
    assert any(p.startswith("[MASK]") for p in problems), problems
    assert any(p.startswith("unchanged") for p in problems), problems


def test_the_checks_catch_special_ids_inserted_as_random(windows, masker, tokenizer):
    batch = masker(windows, torch.Generator().manual_seed(3))
    inputs = batch.inputs.clone()
    randomised = batch.kinds == RANDOMISED
    inputs[randomised] = torch.where(torch.rand(int(randomised.sum())) < 0.05, 0, inputs[randomised])
    problems = bert_masking_violations(windows, MaskedBatch(inputs, batch.labels, batch.kinds),
                                       tokenizer.vocab_size)
    assert "a special or out-of-range id was inserted as a random token" in problems


def test_the_checks_catch_overlapping_kind_flags(windows, masker, tokenizer):
    # kinds built as masked * MASKED + randomised * RANDOMISED + unchanged * UNCHANGED from flags
    # that overlap: a few positions both randomised and unchanged report 2 + 3 = 5
    batch = masker(windows, torch.Generator().manual_seed(3))
    kinds = batch.kinds.clone()
    randomised = (kinds == RANDOMISED).nonzero()
    kinds[tuple(randomised[::200].T)] = RANDOMISED + UNCHANGED
    problems = bert_masking_violations(windows, MaskedBatch(batch.inputs, batch.labels, kinds),
                                       tokenizer.vocab_size)
    assert problems == ["a selected position reports none of the three kinds"]


def test_random_tokens_cover_all_real_characters_uniformly(windows, masker, tokenizer):
    batch = masker(windows, torch.Generator().manual_seed(4))
    inserted = batch.inputs[batch.kinds == RANDOMISED]
    counts = torch.bincount(inserted, minlength=tokenizer.vocab_size)
    assert counts[:3].sum() == 0
    n, k = int(counts.sum()), tokenizer.vocab_size - 3
    for count in counts[3:].tolist():  # each real id ~ Binomial(n, 1/k)
        assert binomial_violation("id", count, n, 1 / k) is None


def test_never_mutates_input_and_is_reproducible(windows, masker):
    before = windows.clone()
    first = masker(windows, torch.Generator().manual_seed(7))
    again = masker(windows, torch.Generator().manual_seed(7))
    other = masker(windows, torch.Generator().manual_seed(8))
    assert torch.equal(windows, before)
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.labels, other.labels)
    assert first.inputs.data_ptr() != windows.data_ptr()


def test_caller_named_ids_are_never_selected(windows, tokenizer):
    newline = tokenizer.token_to_id["\n"]
    masker = BertMasker.for_tokenizer(tokenizer, extra_never_select_ids=[newline])
    batch = masker(windows, torch.Generator().manual_seed(5))
    assert not bool(batch.selected[windows == newline].any())
    assert bool(batch.selected[windows != newline].any())


def label_violations(ids, batch: MaskedBatch):
    """What is wrong with ``batch.labels`` as the labels of ``ids``, judged against the reported
    kinds (not against ``batch.selected``, which is derived from the labels themselves)."""
    problems = []
    if not batch.inputs.shape == batch.labels.shape == batch.kinds.shape == ids.shape:
        problems.append("inputs, labels and kinds do not all have the shape of the ids")
    if batch.labels.dtype != torch.int64:
        problems.append(f"labels are {batch.labels.dtype}, not int64 (cross_entropy needs int64)")
    unselected = batch.kinds == NOT_SELECTED
    if not bool((batch.labels[unselected] == IGNORE_INDEX).all()):
        problems.append("an unselected position has a label other than -100")
    if not torch.equal(batch.labels[~unselected], ids[~unselected].long()):
        problems.append("a selected position's label is not its original id")
    return problems


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_labels_are_the_ids_at_selected_positions_and_ignored_elsewhere(masker, dtype):
    ids = torch.randint(3, 68, (16, 32), dtype=dtype)
    batch = masker(ids, torch.Generator().manual_seed(0))
    assert 0 < int((batch.kinds != NOT_SELECTED).sum()) < ids.numel()
    assert label_violations(ids, batch) == []
    # the check itself catches a masker that labels every position, one that labels only the
    # positions it changed, and one whose labels keep the ids' dtype
    selected = batch.kinds != NOT_SELECTED
    everywhere = MaskedBatch(batch.inputs, ids.long(), batch.kinds)
    only_changed = MaskedBatch(batch.inputs, torch.where(selected & (batch.kinds != UNCHANGED), ids.long(),
                                                         IGNORE_INDEX), batch.kinds)
    int32 = MaskedBatch(batch.inputs, batch.labels.int(), batch.kinds)
    assert label_violations(ids, everywhere) == ["an unselected position has a label other than -100"]
    assert label_violations(ids, only_changed) == ["a selected position's label is not its original id"]
    assert label_violations(ids, int32)[0].startswith("labels are torch.int32")


@pytest.mark.parametrize("kwargs, message", [
    (dict(select_prob=1.5), "select_prob must be a probability"),
    (dict(mask_token_prob=-0.1), "mask_token_prob must be a probability"),
    (dict(mask_token_prob=0.8, random_token_prob=0.3), "at most 1"),
    (dict(select_prob="0.15"), "select_prob must be a probability"),
])
def test_invalid_probabilities_are_rejected(tokenizer, kwargs, message):
    with pytest.raises(ScratchMLMError, match=message):
        BertMasker.for_tokenizer(tokenizer, **kwargs)


def test_bad_arguments_get_clear_errors(masker):
    with pytest.raises(ScratchMLMError, match="explicit torch.Generator"):
        masker(torch.zeros(2, 4, dtype=torch.long), None)
    with pytest.raises(ScratchMLMError, match="integer tensor"):
        masker(torch.zeros(2, 4), torch.Generator())
    with pytest.raises(ScratchMLMError, match="must not contain"):
        BertMasker(mask_id=1, replacement_ids=[0, 3, 4], never_select_ids=[0, 1, 2])


def test_runs_on_the_inputs_device(masker):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ids = torch.randint(3, 68, (8, 32), device=device)
    batch = masker(ids, torch.Generator(device=device).manual_seed(0))
    assert batch.inputs.device == ids.device and batch.labels.device == ids.device
