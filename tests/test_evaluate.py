import json
import math

import pytest
import torch

from scratchmlm import BertMasker, FrozenValidationSet, TransformerMLM
from scratchmlm.evaluate import (bigram_infill_baseline, bigram_log_table, evaluate, pseudo_perplexity,
                                 score_log_probs, unigram_baseline)
from scratchmlm.masking import MASKED, RANDOMISED, UNCHANGED, MaskedBatch


def test_scores_by_hand():
    # three scored positions, vocab 5, of kinds mask, random, unchanged
    log_probs = torch.log(torch.tensor([[.1, .6, .1, .1, .1], [.5, .1, .2, .1, .1], [.05, .05, .1, .3, .5]]))
    labels = torch.tensor([1, 2, 0])
    kinds = torch.tensor([MASKED, RANDOMISED, UNCHANGED], dtype=torch.uint8)
    result = score_log_probs(log_probs, labels, kinds, "fp", "x")
    assert result.overall.count == 3
    assert result.overall.top1 == pytest.approx(1 / 3)           # only the first is right
    assert result.overall.top5 == pytest.approx(1.0)
    assert result.overall.loss == pytest.approx(-(math.log(.6) + math.log(.2) + math.log(.05)) / 3)
    assert result.overall.perplexity == pytest.approx(math.exp(result.overall.loss))
    assert result.by_kind["mask"].top1 == 1.0 and result.by_kind["random"].top1 == 0.0
    assert result.by_kind["unchanged"].loss == pytest.approx(-math.log(.05))
    only_masks = score_log_probs(log_probs[:1], labels[:1], kinds[:1], "fp", "x")
    assert only_masks.by_kind["random"].count == 0 and only_masks.by_kind["random"].top1 is None
    assert "NaN" not in json.dumps(only_masks.to_dict())           # metrics.jsonl stays valid JSON


def test_bigram_infill_by_hand():
    """p(c | left, right) ∝ p(c | left) p(right | c), from add-one smoothed training bigrams."""
    vocab = 6
    train_ids = torch.tensor([3, 4, 5, 3, 4, 5, 3, 5, 4, 3])
    windows = torch.tensor([[3, 4, 5, 3], [4, 3, 5, 5]])
    labels = torch.full((2, 4), -100)
    labels[0, 1], labels[1, 0], labels[1, 2] = 4, 4, 5
    inputs = windows.clone()
    inputs[0, 1], inputs[1, 0], inputs[1, 3] = 1, 1, 1               # [MASK]s, one a hidden neighbour
    kinds = torch.where(labels != -100, MASKED, 0).to(torch.uint8)
    valid = FrozenValidationSet(MaskedBatch(inputs, labels, kinds), windows, "fp")
    result = bigram_infill_baseline(train_ids, valid, vocab, mask_id=1)
    table = bigram_log_table(train_ids, vocab)
    expected = [
        (table[3] + table[:, 5]).log_softmax(0)[4],   # row 0, col 1: left 3, right 5
        (table[:, 3]).log_softmax(0)[4],              # row 1, col 0: no left, right 3
        (table[3]).log_softmax(0)[5],                 # row 1, col 2: left 3, right is [MASK]
    ]
    assert result.overall.loss == pytest.approx(-sum(e.item() for e in expected) / 3)


def test_bigram_table_rows_are_distributions():
    table = bigram_log_table(torch.tensor([3, 4, 3, 4, 3, 5]), 6)
    torch.testing.assert_close(table.exp().sum(1), torch.ones(6, dtype=torch.float64))
    assert table[3, 4] > table[3, 5] > table[3, 0]


def test_baselines_on_the_real_validation_set(corpus_text, tokenizer):
    cut = int(0.9 * len(corpus_text))
    train_ids = tokenizer.encode(corpus_text[:cut], parse_special=False)
    valid_ids = tokenizer.encode(corpus_text[cut:], parse_special=False)
    valid = FrozenValidationSet.build(valid_ids, BertMasker.for_tokenizer(tokenizer), 32)
    unigram = unigram_baseline(train_ids, valid, tokenizer.vocab_size)
    bigram = bigram_infill_baseline(train_ids, valid, tokenizer.vocab_size, tokenizer.mask_id)
    # unigram top-1 is the frequency of the most common character (space) among scored positions
    assert 0.13 < unigram.overall.top1 < 0.17 and 3.2 < unigram.overall.loss < 3.5
    assert bigram.overall.top1 > unigram.overall.top1 + 0.15
    assert bigram.overall.loss < unigram.overall.loss - 1.0
    assert unigram.fingerprint == bigram.fingerprint == valid.fingerprint


def test_evaluate_restores_training_mode_and_is_deterministic(tokenizer, corpus_text):
    valid_ids = tokenizer.encode(corpus_text[-5000:], parse_special=False)
    valid = FrozenValidationSet.build(valid_ids, BertMasker.for_tokenizer(tokenizer), 32, num_windows=64)
    torch.manual_seed(0)
    model = TransformerMLM(tokenizer.vocab_size).train()
    first = evaluate(model, valid, batch_size=16)
    second = evaluate(model, valid, batch_size=64)
    assert model.training
    assert first.overall.top1 == second.overall.top1
    assert first.overall.loss == pytest.approx(second.overall.loss, rel=1e-6)


def test_pseudo_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids):
            return torch.zeros(*ids.shape, 7) + self.weight

    ids = torch.randint(3, 7, (50,))
    assert pseudo_perplexity(Uniform(), ids, mask_id=1, window=8) == pytest.approx(7.0)


def test_pseudo_perplexity_masks_each_position_in_its_window():
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids):
            seen.append(ids.clone())
            return torch.zeros(*ids.shape, 10)

    ids = torch.arange(3, 10)
    pseudo_perplexity(Recorder(), ids, mask_id=1, window=4)
    windows = torch.cat(seen)
    assert windows.shape == (7, 4)
    assert torch.all((windows == 1).sum(1) == 1)                  # exactly one mask per window
    for position in range(7):
        start = min(max(position - 2, 0), 7 - 4)       # the window of 4 centred on the position
        expected = ids[start:start + 4].clone()
        expected[position - start] = 1
        assert windows[position].tolist() == expected.tolist()
