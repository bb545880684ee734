import json
import math
from collections import Counter
from fractions import Fraction

import pytest
import torch

from scratchmlm import BertMasker, FrozenValidationSet, TransformerMLM
from scratchmlm.evaluate import (Scores, bigram_infill_baseline, bigram_log_table, eval_mode, evaluate,
                                 pseudo_perplexity, score_log_probs, unigram_baseline)
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


# Bigram infill by hand: add-one smoothed counts and Bayes' rule in plain Python fractions.
VOCAB, M = 6, 1                                            # ids 0-2 are specials, 1 is [MASK]
TRAIN = [3, 4, 5, 3, 4, 5, 3, 5, 4, 3]


def infill_probability_by_hand(label, left=None, right=None):
    """p(label | visible neighbours): p(c | left) (or p(c) without a left) times p(right | c)."""
    unigram = Counter(TRAIN)
    pairs = Counter(zip(TRAIN, TRAIN[1:]))
    followers = Counter(TRAIN[:-1])                        # how often each id has a next one

    def p(c):                                              # p(c), add-one smoothed
        return Fraction(unigram[c] + 1, len(TRAIN) + VOCAB)

    def p_next(b, a):                                      # p(next = b | current = a)
        return Fraction(pairs[a, b] + 1, followers[a] + VOCAB)

    weight = {c: (p(c) if left is None else p_next(c, left)) * (1 if right is None else p_next(right, c))
              for c in range(VOCAB)}
    return weight[label] / sum(weight.values())


def test_the_hand_computation_itself():
    # right neighbour 3 only: p(c) p(3 | c) is 1/16 * 1/6 for each special, 5/16 * 1/9 for c = 3,
    # 4/16 * 2/9 for c = 4 and 4/16 * 3/9 for c = 5, so p(4 | right 3) = (8/144) / (59/288)
    assert infill_probability_by_hand(4, right=3) == Fraction(16, 59)
    assert infill_probability_by_hand(4) == Fraction(4, 16)


# Each row has one selected position (the [MASK] at `position`); its visible neighbours are given.
INFILL_CASES = {  # name: (row, position, label, left, right)
    "both sides": ([3, M, 5, 3], 1, 4, 3, 5),
    "right only, at the window start": ([M, 3, 4, 5], 0, 4, None, 3),
    "right only, left is [MASK]": ([M, M, 5, 4], 1, 3, None, 5),
    "left only, right is [MASK]": ([4, 5, M, M], 2, 3, 5, None),
    "left only, at the window end": ([5, 3, 4, M], 3, 5, 4, None),
    "neither: unigram": ([3, M, M, M], 2, 4, None, None),
}


def bigram_infill_loss(rows, positions, labels):
    """The bigram infill baseline's cross-entropy on windows ``rows`` with one selected position each."""
    inputs = torch.tensor(rows)
    label_tensor = torch.full_like(inputs, -100)
    label_tensor[torch.arange(len(rows)), torch.tensor(positions)] = torch.tensor(labels)
    originals = torch.where(label_tensor != -100, label_tensor, inputs)
    kinds = torch.where(label_tensor != -100, MASKED, 0).to(torch.uint8)
    valid = FrozenValidationSet(MaskedBatch(inputs, label_tensor, kinds), originals, "fp")
    return bigram_infill_baseline(torch.tensor(TRAIN), valid, VOCAB, mask_id=M).overall.loss


@pytest.mark.parametrize("case", INFILL_CASES)
def test_bigram_infill_by_hand(case):
    row, position, label, left, right = INFILL_CASES[case]
    expected = -math.log(infill_probability_by_hand(label, left, right))
    assert bigram_infill_loss([row], [position], [label]) == pytest.approx(expected, rel=1e-12)


def test_bigram_infill_by_hand_in_one_batch():
    """Neighbours never come from the row before or after: the right-only row at the window start
    follows a row ending in a visible 3, and the left-only row at the window end precedes one
    starting with a visible 3."""
    rows, positions, labels, left, right = zip(*INFILL_CASES.values())
    expected = [-math.log(infill_probability_by_hand(*case)) for case in zip(labels, left, right)]
    assert bigram_infill_loss(rows, positions, labels) == pytest.approx(sum(expected) / len(expected),
                                                                        rel=1e-12)


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


def tiny_model(vocab_size):
    return TransformerMLM(vocab_size, d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=32)


def test_eval_mode_restores_the_training_flags_even_when_the_body_raises():
    model = tiny_model(10).train()
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(model):
            assert not any(module.training for module in model.modules())
            raise RuntimeError("raised inside")
    assert all(module.training for module in model.modules())
    model.eval()
    with eval_mode(model):
        pass
    assert not any(module.training for module in model.modules())
    model.train()
    model.embeddings.eval()                                    # a mixed model comes back mixed
    with eval_mode(model):
        pass
    assert model.training and model.encoder.training and not model.embeddings.training


def test_evaluate_restores_training_mode_when_the_model_raises(tokenizer, corpus_text):
    class Failing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids):
            raise RuntimeError("forward failed")

    valid_ids = tokenizer.encode(corpus_text[-2000:], parse_special=False)
    valid = FrozenValidationSet.build(valid_ids, BertMasker.for_tokenizer(tokenizer), 32, num_windows=8)
    model = Failing().train()
    with pytest.raises(RuntimeError, match="forward failed"):
        evaluate(model, valid)
    assert model.training
    with pytest.raises(RuntimeError, match="forward failed"):
        pseudo_perplexity(model, valid_ids[:20], tokenizer.mask_id, window=8)
    assert model.training


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_diverged_model_is_scored_with_nan_and_written_as_null(value, tokenizer, corpus_text):
    valid_ids = tokenizer.encode(corpus_text[-2000:], parse_special=False)
    valid = FrozenValidationSet.build(valid_ids, BertMasker.for_tokenizer(tokenizer), 32, num_windows=8)
    model = tiny_model(tokenizer.vocab_size)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(value)
    result = evaluate(model, valid)                            # inf weights give NaN logits too
    assert math.isnan(result.overall.loss) and math.isnan(result.overall.perplexity)
    assert "CE nan  ppl nan" in result.summary()
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))   # strict JSON
    assert record["count"] == result.overall.count > 0
    assert record["loss"] is None and record["perplexity"] is None
    assert all(kind["loss"] is None for kind in record["by_kind"].values() if kind["count"])
    assert math.isnan(pseudo_perplexity(model, valid_ids[:20], tokenizer.mask_id, window=8))


def test_infinite_and_huge_losses_give_infinite_perplexity():
    assert Scores(3, 0.0, 0.0, math.inf).perplexity == math.inf
    assert Scores(3, 0.0, 0.0, 1000.0).perplexity == math.inf          # exp overflows a float
    assert Scores(3, 0.0, 0.0, 700.0).perplexity == pytest.approx(math.exp(700.0))
    huge = Scores(3, 0.0, 0.0, 1000.0).to_dict()
    assert huge["loss"] == 1000.0 and huge["perplexity"] is None
    assert Scores(3, 0.0, 0.0, math.inf).to_dict()["loss"] is None

    class Confident(torch.nn.Module):                          # always sure of id 0, never right
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids):
            logits = torch.zeros(*ids.shape, 7) + self.weight
            logits[..., 0] = 1e4
            return logits

    assert pseudo_perplexity(Confident(), torch.randint(3, 7, (20,)), mask_id=1, window=8) == math.inf
