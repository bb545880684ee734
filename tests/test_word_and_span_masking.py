"""Whole-word and span masking against their definitions, on real Tiny Shakespeare windows.

Rates are judged in units that are independent of each other, so that binomial (or CLT) bounds
of 5 standard deviations hold: words for the whole-word selection, spans for the span masker's
per-span 80/10/10 draw, and whole rows for the span masker's selection rate (positions inside a
row are correlated, rows are not). A correct masker fails such a bound with probability < 1e-6;
each planted bug below sits far outside it.
"""

import math

import pytest
import torch

from scratchmlm import IGNORE_INDEX, ScratchMLMError
from scratchmlm.batches import random_windows
from scratchmlm.harness.build import make_masker
from scratchmlm.harness.config import TrainConfig
from scratchmlm.masking import MASKED, NOT_SELECTED, RANDOMISED, UNCHANGED, SpanMasker, WholeWordMasker
from scratchmlm.subword_tokenizer import SubwordTokenizer
from test_masking import binomial_violation

pytestmark = pytest.mark.masking

SIGMAS = 5.0


@pytest.fixture(scope="module")
def char_windows(corpus_ids):
    return random_windows(corpus_ids, 8192, 32, torch.Generator().manual_seed(0))      # [8192, 32]


@pytest.fixture(scope="module")
def bpe(corpus_text):
    return SubwordTokenizer.train(corpus_text[:200_000], "bpe", 1000)          # from the training split


def words_of_row(row: list[str]) -> list[list[int]]:
    """Positions grouped into words, written out from the definition: a word is a maximal run of
    letters and apostrophes; every other character is a word of its own."""
    words, current = [], []
    for i, char in enumerate(row):
        in_word = char.isalpha() or char == "'"
        if current and in_word and (row[current[-1]].isalpha() or row[current[-1]] == "'"):
            current.append(i)
        else:
            if current:
                words.append(current)
            current = [i]
    return words + [current]


def structural_problems(originals, batch, mask_id=1):
    """What the 80/10/10 replacement must satisfy whatever was selected."""
    problems = []
    selected = batch.labels != IGNORE_INDEX
    if not torch.equal(batch.labels[selected], originals[selected]):
        problems.append("labels at selected positions are not the original ids")
    if not torch.equal(batch.inputs[~selected], originals[~selected]):
        problems.append("an unselected position was changed")
    if not torch.equal(batch.kinds != NOT_SELECTED, selected):
        problems.append("the kinds do not cover exactly the selection")
    if not torch.equal(batch.kinds == MASKED, selected & (batch.inputs == mask_id)):
        problems.append("[MASK] is shown exactly where the kind says so")
    if not torch.equal(batch.inputs[batch.kinds == UNCHANGED], originals[batch.kinds == UNCHANGED]):
        problems.append("an 'unchanged' position was changed")
    if bool((batch.inputs[batch.kinds == RANDOMISED] < 3).any()):
        problems.append("a special id was inserted as a random token")
    return problems


# -- whole words ---------------------------------------------------------------------------------
def test_whole_word_masker_selects_words_whole_at_15_percent(tokenizer, char_windows):
    masker = WholeWordMasker.for_tokenizer(tokenizer)
    batch = masker(char_windows, torch.Generator().manual_seed(1))
    assert structural_problems(char_windows, batch) == []
    selected = batch.labels != IGNORE_INDEX
    chosen_words = total_words = 0
    for row in range(0, 2048):
        chars = [tokenizer.vocab[i] for i in char_windows[row].tolist()]
        for word in words_of_row(chars):
            flags = selected[row, word]
            assert bool(flags.all()) or not bool(flags.any()), f"word {''.join(chars[i] for i in word)!r} split"
            chosen_words += int(flags[0])
            total_words += 1
    assert binomial_violation("words selected", chosen_words, total_words, 0.15) is None
    # every position is selected with probability 0.15 (rows are independent: CLT over rows)
    per_row = selected.sum(1).double()
    z = (per_row.mean() - 0.15 * 32) / (per_row.std() / math.sqrt(len(per_row)))
    assert abs(z) < SIGMAS
    # each selected character draws its own kind: binomial over selected characters
    n = int(selected.sum())
    assert binomial_violation("[MASK]", int((batch.kinds == MASKED).sum()), n, 0.8) is None
    assert binomial_violation("random", int((batch.kinds == RANDOMISED).sum()), n, 0.1) is None
    assert binomial_violation("unchanged", int((batch.kinds == UNCHANGED).sum()), n, 0.1) is None


def test_whole_word_masker_on_subwords_follows_the_tokenizers_word_ids(bpe, corpus_text):
    # the tokenizer's own word ids (Hugging Face's pre-token index of each token)
    encoding = bpe.hf.encode(corpus_text[-60_000:], add_special_tokens=False)
    ids, word_ids = torch.tensor(encoding.ids), torch.tensor(encoding.word_ids)
    starts = torch.randint(0, len(ids) - 32, (1024, 1), generator=torch.Generator().manual_seed(2))
    windows, window_words = ids[starts + torch.arange(32)], word_ids[starts + torch.arange(32)]
    batch = WholeWordMasker.for_tokenizer(bpe)(windows, torch.Generator().manual_seed(3))
    assert structural_problems(windows, batch) == []
    selected = batch.labels != IGNORE_INDEX
    split_words = chosen = total = 0
    for row in range(len(windows)):
        for word in window_words[row].unique():
            flags = selected[row, window_words[row] == word]
            split_words += int(bool(flags.any()) and not bool(flags.all()))
            chosen += int(flags[0])
            total += 1
    assert split_words == 0
    assert binomial_violation("words selected", chosen, total, 0.15) is None


def test_a_per_token_selection_is_caught_by_the_whole_word_check(tokenizer, char_windows):
    """The planted bug: selecting characters independently splits words."""
    class PerToken(WholeWordMasker):
        def word_starts(self, ids):
            return torch.ones_like(ids, dtype=torch.bool)

    batch = PerToken.for_tokenizer(tokenizer)(char_windows[:64], torch.Generator().manual_seed(1))
    selected = batch.labels != IGNORE_INDEX
    split = 0
    for row in range(64):
        chars = [tokenizer.vocab[i] for i in char_windows[row].tolist()]
        split += sum(bool(selected[row, w].any()) and not bool(selected[row, w].all()) for w in words_of_row(chars))
    assert split > 10


# -- spans ---------------------------------------------------------------------------------------
def spans_of(selected_row: list[bool]) -> list[tuple[int, int]]:
    """(start, length) of each maximal run of selected positions."""
    spans, start = [], None
    for i, flag in enumerate(selected_row + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            spans.append((start, i - start))
            start = None
    return spans


@pytest.mark.parametrize("span_mean", [1.0, 3.0, 5.0])
def test_span_masker_lengths_budget_and_per_span_kinds(tokenizer, char_windows, span_mean):
    windows = char_windows.repeat(2, 1)                                   # [16384, 32]
    batch = SpanMasker.for_tokenizer(tokenizer, span_mean=span_mean)(windows, torch.Generator().manual_seed(4))
    assert structural_problems(windows, batch) == []
    selected = batch.labels != IGNORE_INDEX
    # the 15% budget, at every position including the window's edges (CLT over rows)
    per_row = selected.sum(1).double()
    z = (per_row.mean() - 0.15 * 32) / (per_row.std() / math.sqrt(len(per_row)))
    assert abs(z) < SIGMAS, f"selection rate {per_row.mean() / 32:.4f}"
    for edge in (0, 31):
        assert binomial_violation(f"position {edge}", int(selected[:, edge].sum()), len(windows), 0.15) is None
    # geometric lengths of mean span_mean: inside a span, each next position ends it with
    # probability q = 1 / span_mean, independently of the span so far (the geometric's memoryless
    # law); counted over every selected position that has a next one
    inside_then = selected[:, :-1]
    trials, ends = int(inside_then.sum()), int((inside_then & ~selected[:, 1:]).sum())
    q = 1 / span_mean
    if span_mean == 1:
        assert ends == trials
    else:
        assert binomial_violation("span ends", ends, trials, q) is None
    kinds_per_span = []
    for row in range(len(windows)):
        for start, length in spans_of(selected[row].tolist()):
            kinds = batch.kinds[row, start:start + length]
            assert bool((kinds == kinds[0]).all()), "one 80/10/10 draw per span"
            kinds_per_span.append(int(kinds[0]))
    kinds = torch.tensor(kinds_per_span)
    assert binomial_violation("[MASK] spans", int((kinds == MASKED).sum()), len(kinds), 0.8) is None
    assert binomial_violation("random spans", int((kinds == RANDOMISED).sum()), len(kinds), 0.1) is None


def test_span_masker_with_wrong_lengths_is_caught(tokenizer, char_windows):
    """The planted bug: ending spans with probability 1 / (mean + 1) (lengths of mean 4, not 3)."""
    masker = SpanMasker.for_tokenizer(tokenizer, span_mean=3.0)
    masker.end_prob = 1 / 4
    selected = masker(char_windows, torch.Generator().manual_seed(4)).labels != IGNORE_INDEX
    inside_then = selected[:, :-1]
    trials, ends = int(inside_then.sum()), int((inside_then & ~selected[:, 1:]).sum())
    assert binomial_violation("span ends", ends, trials, 1 / 3) is not None


def test_span_masker_with_a_naive_start_rate_is_caught(tokenizer, char_windows):
    """The planted bug: starting spans at rate p / mean (ignoring that spans need gaps between them)
    selects about 13%, not 15%."""
    masker = SpanMasker.for_tokenizer(tokenizer, span_mean=3.0)
    masker.start_prob = 0.15 / 3.0
    selected = masker(char_windows, torch.Generator().manual_seed(4)).labels != IGNORE_INDEX
    per_row = selected.sum(1).double()
    z = (per_row.mean() - 0.15 * 32) / (per_row.std() / math.sqrt(len(per_row)))
    assert abs(z) > 2 * SIGMAS


def test_maskers_are_reproducible_move_to_a_device_and_reject_bad_input(tokenizer, char_windows):
    for masker in (WholeWordMasker.for_tokenizer(tokenizer), SpanMasker.for_tokenizer(tokenizer)):
        first = masker(char_windows[:8], torch.Generator().manual_seed(5))
        again = masker.to("cpu")(char_windows[:8], torch.Generator().manual_seed(5))
        assert torch.equal(first.inputs, again.inputs) and torch.equal(first.kinds, again.kinds)
        with pytest.raises(ScratchMLMError, match=r"\[batch, seq\]"):
            masker(char_windows[0], torch.Generator())
    with pytest.raises(ScratchMLMError, match="span_mean"):
        SpanMasker.for_tokenizer(tokenizer, span_mean=0.5)
    with pytest.raises(ScratchMLMError, match="not reachable"):
        SpanMasker.for_tokenizer(tokenizer, span_mean=1.0, select_prob=0.6)


def test_the_configuration_picks_the_masker(tokenizer):
    assert type(make_masker(tokenizer, TrainConfig(masking="whole-word"))) is WholeWordMasker
    span = make_masker(tokenizer, TrainConfig(masking="span", span_mean=4.0, select_prob=0.3))
    assert type(span) is SpanMasker and span.span_mean == 4.0 and span.select_prob == 0.3
