import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from scratchmlm import CharTokenizer, ScratchMLMError


def test_ids_specials_first_then_sorted_characters(tokenizer, corpus_text):
    assert tokenizer.vocab[:3] == ["[PAD]", "[MASK]", "[UNK]"]
    assert (tokenizer.pad_id, tokenizer.mask_id, tokenizer.unk_id) == (0, 1, 2)
    assert tokenizer.vocab[3:] == sorted(set(corpus_text))
    assert tokenizer.vocab_size == 68 and tokenizer.first_real_id == 3


def test_whole_corpus_round_trips_exactly(tokenizer, corpus_text, corpus_ids):
    assert corpus_ids.dtype == torch.int64 and corpus_ids.shape == (len(corpus_text),)
    assert int(corpus_ids.min()) >= 3
    assert tokenizer.decode(corpus_ids) == corpus_text


def test_bulk_encoding_matches_the_per_character_definition(tokenizer, corpus_text, corpus_ids):
    sample = corpus_text[:5000]
    expected = [tokenizer.token_to_id[char] for char in sample]
    assert corpus_ids[:5000].tolist() == expected


def test_literal_mask_in_a_prompt_is_the_mask_id(tokenizer):
    ids = tokenizer.encode("To be, or [MASK]ot to be").tolist()
    assert ids[10] == tokenizer.mask_id
    assert len(ids) == len("To be, or ") + 1 + len("ot to be")
    assert tokenizer.decode(ids) == "To be, or [MASK]ot to be"
    assert tokenizer.encode("[MASK][MASK]").tolist() == [1, 1]
    # corpora are encoded without special parsing: '[' stays a character (or [UNK])
    assert tokenizer.mask_id not in tokenizer.encode("[MASK]", parse_special=False).tolist()


def test_unknown_characters(tokenizer):
    ids = tokenizer.encode("a€b").tolist()
    assert ids == [tokenizer.token_to_id["a"], tokenizer.unk_id, tokenizer.token_to_id["b"]]
    with pytest.raises(ScratchMLMError, match=r"'€' at position 1 is not in the tokenizer's alphabet"):
        tokenizer.encode("a€b", strict=True)
    with pytest.raises(ScratchMLMError, match=r"'€' at position 15 "):   # counted across a [MASK]
        tokenizer.encode("abcdefg [MASK]x€", strict=True)


def test_non_bmp_and_empty_text():
    tok = CharTokenizer.from_text("ab🙂")
    assert tok.decode(tok.encode("🙂ba")) == "🙂ba"
    assert tok.encode("").tolist() == []
    with pytest.raises(ScratchMLMError):
        CharTokenizer.from_text("")


def test_decode_rejects_out_of_range_ids(tokenizer):
    with pytest.raises(ScratchMLMError, match="ids must lie in 0..67"):
        tokenizer.decode([3, 99])
    assert tokenizer.decode([0, 1, 2, 3], skip_special=True) == tokenizer.vocab[3]


def test_save_and_load(tmp_path, tokenizer):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    loaded = CharTokenizer.load(path)
    assert loaded.vocab == tokenizer.vocab
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"vocab": ["a", "b"]}))
    with pytest.raises(ScratchMLMError, match="Not a CharTokenizer"):
        CharTokenizer.load(bad)


def test_huggingface_export_gives_identical_ids(tmp_path, tokenizer, corpus_text, corpus_ids):
    path = tmp_path / "tokenizer.json"
    tokenizer.save_huggingface(path)
    hf = Tokenizer.from_file(str(path))
    assert hf.encode(corpus_text, add_special_tokens=False).ids == corpus_ids.tolist()
    prompt = "Now is the [MASK]inter of our discontent€"
    assert hf.encode(prompt).ids == tokenizer.encode(prompt).tolist()
    assert hf.token_to_id("[MASK]") == 1 and hf.get_vocab_size() == tokenizer.vocab_size


def test_encode_array_is_int64_numpy(tokenizer):
    array = tokenizer.encode_array("abc")
    assert isinstance(array, np.ndarray) and array.dtype == np.int64
