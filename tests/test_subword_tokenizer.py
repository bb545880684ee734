"""BPE and WordPiece vocabularies: learned from the training split only, deterministic, lossless,
readable by Hugging Face ``tokenizers``, and usable everywhere the character tokenizer is."""

import json

import pytest
import torch
from tokenizers import Tokenizer

from scratchmlm import ScratchMLMError
from scratchmlm.batches import FrozenValidationSet
from scratchmlm.harness.build import RunData
from scratchmlm.harness.config import TrainConfig
from scratchmlm.evaluate import bigram_infill_baseline, bigram_log_table, score_log_probs, unigram_log_probs
from scratchmlm.masking import BertMasker
from scratchmlm.subword_tokenizer import SubwordTokenizer
from scratchmlm.harness.build import load_tokenizer


@pytest.fixture(scope="module")
def split(corpus_text):
    cut = int(0.9 * len(corpus_text))
    return corpus_text[:cut], corpus_text[cut:]


@pytest.fixture(scope="module", params=["bpe", "wordpiece"])
def subword(request, split):
    return SubwordTokenizer.train(split[0], request.param, 1000)


def test_the_vocabulary_has_the_asked_size_specials_first_and_is_deterministic(subword, split):
    assert subword.vocab_size == 1000
    assert subword.vocab[:3] == ["[PAD]", "[MASK]", "[UNK]"]
    # the same text twice gives the same vocabulary, file and ids (a fifth of the split is enough text)
    once, again = (SubwordTokenizer.train(split[0][:200_000], subword.kind, 1000) for _ in range(2))
    assert again.vocab == once.vocab
    assert again.hf.to_str() == once.hf.to_str()
    assert (once.encode(split[1][:5000], parse_special=False)
            .equal(again.encode(split[1][:5000], parse_special=False)))


def test_encoding_is_lossless_and_shorter_than_characters(subword, split):
    valid = split[1]
    ids = subword.encode(valid, parse_special=False)
    assert subword.decode(ids) == valid
    assert subword.hf.decode(ids.tolist(), skip_special_tokens=False) == valid      # Hugging Face agrees
    assert int((ids == subword.unk_id).sum()) == 0
    assert len(ids) < 0.5 * len(valid)                 # ~2.6 characters per token at 1000 ids


def test_the_saved_file_is_a_hugging_face_tokenizer_with_the_same_ids(subword, split, tmp_path):
    path = tmp_path / "tokenizer.json"
    subword.save(path)
    text = split[1][:3000]
    assert Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids == \
        subword.encode(text, parse_special=False).tolist()
    loaded = load_tokenizer(path)
    assert isinstance(loaded, SubwordTokenizer) and loaded.vocab == subword.vocab
    path.write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(ScratchMLMError, match="not a Hugging Face tokenizer file"):
        load_tokenizer(path)


def test_words_continue_exactly_where_the_tokenizer_says(subword, split):
    encoding = subword.hf.encode(split[1][:20000], add_special_tokens=False)
    ids = torch.tensor(encoding.ids)
    assert subword.word_ids(ids).tolist() == encoding.word_ids


def test_a_mask_in_a_prompt_takes_the_place_of_a_whole_word(subword):
    ids = subword.encode("to be or [MASK] to be")
    pieces = [subword.pieces[i] for i in ids.tolist()]
    at = pieces.index("[MASK]")
    assert pieces[at - 1:] == [" or", "[MASK]", " to", " be"]      # the mask swallows its space


def test_unknown_characters_are_unk_or_a_clear_error(subword):
    assert subword.unknown_characters("abc 7€") == ["7", "€"]
    assert subword.unk_id in subword.encode("the 7 kings", parse_special=False).tolist()
    with pytest.raises(ScratchMLMError, match="'7' at position 4"):
        subword.encode("the 7 kings", strict=True)


def test_only_the_training_split_is_learned_from():
    """A word that fills the validation part is not a token of a vocabulary learned from training."""
    text = "the king and the queen sat down.\n" * 300 + "zyzzyva " * 100
    data = RunData.prepare(TrainConfig(tokenizer="bpe", vocab_size=120, seq_len=16), text)
    assert not any("zyzz" in token for token in data.tokenizer.vocab)
    full = SubwordTokenizer.train(text, "bpe", 120)
    assert any("zyzz" in token for token in full.vocab)


def test_bad_settings_are_clear_errors(split):
    with pytest.raises(ScratchMLMError, match="too small"):
        SubwordTokenizer.train(split[0], "bpe", 50)
    with pytest.raises(ScratchMLMError, match="reserve"):
        SubwordTokenizer.train("a ## b", "bpe", 100)
    with pytest.raises(ScratchMLMError, match="vocab_size"):
        TrainConfig(vocab_size=500).validate()


def test_sparse_bigram_baseline_equals_the_dense_definition(subword, split):
    """The baseline keeps only the pairs that occur; written out densely it must be the same."""
    train_ids = subword.encode(split[0], parse_special=False)
    valid = FrozenValidationSet.build(subword.encode(split[1], parse_special=False),
                                      BertMasker.for_tokenizer(subword), 32, 256)
    vocab = subword.vocab_size
    sparse = bigram_infill_baseline(train_ids, valid, vocab, subword.mask_id)
    # dense reference: log p(c | a) + log p(b | c), or the unigram where a is not visible
    table, unigram = bigram_log_table(train_ids, vocab), unigram_log_probs(train_ids, vocab)
    inputs, labels = valid.batch.inputs, valid.batch.labels
    rows, cols = (labels != -100).nonzero(as_tuple=True)
    scores = []
    for r, c in zip(rows.tolist(), cols.tolist()):
        left, right = (inputs[r, c - 1] if c > 0 else None), (inputs[r, c + 1] if c < 31 else None)
        score = table[left] if left is not None and left != subword.mask_id else unigram.clone()
        if right is not None and right != subword.mask_id:
            score = score + table[:, right]
        scores.append(score.log_softmax(-1))
    dense = score_log_probs(torch.stack(scores), labels[rows, cols], valid.batch.kinds[rows, cols],
                            valid.fingerprint, "dense")
    assert sparse.overall.top1 == dense.overall.top1 and sparse.overall.top5 == dense.overall.top5
    assert sparse.overall.loss == pytest.approx(dense.overall.loss, rel=1e-10)
