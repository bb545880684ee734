import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

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
    with pytest.raises(ScratchMLMError, match="lone surrogates"):
        CharTokenizer.from_text("a\ud800")


def test_decode_rejects_out_of_range_ids(tokenizer):
    with pytest.raises(ScratchMLMError, match="ids must lie in 0..67"):
        tokenizer.decode([3, 99])
    assert tokenizer.decode([0, 1, 2, 3], skip_special=True) == tokenizer.vocab[3]


def every_character_and_some_text(corpus_text: str) -> str:
    """Each character of the corpus once, then its first 100,000 characters as they come."""
    return "".join(sorted(set(corpus_text))) + corpus_text[:100_000]


def test_saved_tokenizer_json_is_a_huggingface_file_with_identical_ids(tmp_path, tokenizer, corpus_text):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    hf = Tokenizer.from_file(str(path))
    text = every_character_and_some_text(corpus_text)
    assert hf.encode(text, add_special_tokens=False).ids == tokenizer.encode(text, parse_special=False).tolist()
    prompt = "Now is the [MASK]inter of our discontent€\n[MASK][MASK] [PAD]x"
    assert hf.encode(prompt).ids == tokenizer.encode(prompt).tolist()
    assert hf.encode(prompt).ids[11] == tokenizer.mask_id
    assert hf.token_to_id("[MASK]") == 1 and hf.get_vocab_size() == tokenizer.vocab_size
    assert hf.get_vocab() == tokenizer.token_to_id
    assert [p for p in tmp_path.iterdir()] == [path]                  # the temporary file was renamed away


def test_huggingface_decode_round_trips_text(tmp_path, tokenizer, corpus_text):
    tokenizer.save(tmp_path / "tokenizer.json")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = every_character_and_some_text(corpus_text)
    assert hf.decode(hf.encode(text).ids) == text                      # spaces and newlines included
    for text in ["  a\n\n b ", "\n", " ", "x"]:
        assert hf.decode(hf.encode(text).ids) == text
    prompt = "To be, or [MASK]ot to be"
    ids = hf.encode(prompt).ids
    # Hugging Face's decode drops special tokens unless told not to; CharTokenizer.decode keeps them.
    assert hf.decode(ids, skip_special_tokens=False) == prompt == tokenizer.decode(ids)
    assert hf.decode(ids) == prompt.replace("[MASK]", "") == tokenizer.decode(ids, skip_special=True)


def test_save_and_load_round_trip(tmp_path, tokenizer):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    assert CharTokenizer.load(path).vocab == tokenizer.vocab
    small = CharTokenizer.from_text("ab🙂 é\n")
    small.save(path)                                                   # overwrites
    assert CharTokenizer.load(path).vocab == small.vocab
    assert "🙂" in path.read_text(encoding="utf-8")                     # UTF-8, not \u escapes
    assert Tokenizer.from_file(str(path)).encode("é🙂").ids == small.encode("é🙂").tolist()


def test_load_accepts_the_old_chartokenizer_format(tmp_path, tokenizer):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"type": "CharTokenizer", "vocab": tokenizer.vocab}, ensure_ascii=False),
                    encoding="utf-8")
    assert CharTokenizer.load(path).vocab == tokenizer.vocab


def test_save_to_a_missing_directory_is_a_clear_error(tmp_path, tokenizer):
    with pytest.raises(ScratchMLMError, match="Could not write tokenizer .*nowhere"):
        tokenizer.save(tmp_path / "nowhere" / "tokenizer.json")


def _good() -> dict:
    """The tokenizer.json that CharTokenizer.save writes for a small alphabet, as a dict."""
    return json.loads(CharTokenizer.from_text("ab c\n").to_huggingface().to_str())


def _json(data) -> bytes:
    return json.dumps(data).encode()


def _with(change) -> bytes:
    data = _good()
    change(data)
    return _json(data)


def _hf_file(model, pre_tokenizer=None) -> bytes:
    hf = Tokenizer(model)
    if pre_tokenizer is not None:
        hf.pre_tokenizer = pre_tokenizer
    hf.add_special_tokens(["[PAD]", "[MASK]", "[UNK]"])
    return hf.to_str().encode()


def _vocab(data) -> dict:
    return data["model"]["vocab"]


_GOOD_IDS = {"[PAD]": 0, "[MASK]": 1, "[UNK]": 2, "\n": 3, " ": 4, "a": 5, "b": 6, "c": 7}
MALFORMED = {
    # name: (file content, or None for no file / "dir" for a directory; expected message part)
    "missing": (None, "is missing or unreadable: no such file"),
    "directory": ("dir", "is missing or unreadable: it is a directory"),
    "not utf-8": (b'{"model": "\xff\xfe"}', "not UTF-8 text"),
    "invalid json": (b'{"model": ', "not valid JSON"),
    "empty file": (b"", "not valid JSON"),
    "deeply nested": (b"[" * 100_000, "nested too deeply"),
    "deeply nested objects": (b'{"a":' * 100_000, "nested too deeply"),
    "5000-digit id": (_json(_good()).replace(b'"a": 5', b'"a": ' + b"5" * 5000), "integer with too many digits"),
    "duplicate key": (_json(_GOOD_IDS).replace(b'"b": 6', b'"a": 6'), "appears twice"),
    "top level array": (b"[1, 2]", "top level is a JSON array, not an object"),
    "top level string": (b'"tokenizer"', "top level is a JSON string"),
    "top level null": (b"null", "top level is a JSON null"),
    "no model": (_json({"version": "1.0"}), "no 'model' object"),
    "BPE model": (_hf_file(models.BPE()), "model type is 'BPE'"),
    "vocab not a dict": (_with(lambda d: d["model"].update(vocab=list(_vocab(d)))), "model.vocab must be an object"),
    "string id": (_with(lambda d: _vocab(d).update(a="5")), "id of token 'a' is '5', not an integer"),
    "float id": (_with(lambda d: _vocab(d).update(a=5.0)), "id of token 'a' is 5.0"),
    "bool id": (_with(lambda d: _vocab(d).update({"[MASK]": True})), "is True, not an integer"),
    "null id": (_with(lambda d: _vocab(d).update(a=None)), "is None, not an integer"),
    "id gap": (_with(lambda d: _vocab(d).update(c=9)), "ids must be exactly 0..7, but id 7 is missing"),
    "repeated id": (_with(lambda d: _vocab(d).update(c=6)), "id 7 is missing and id 6 is repeated"),
    "negative id": (_with(lambda d: _vocab(d).update({"[PAD]": -1})), "id 0 is missing"),
    "word-level over words": (_hf_file(models.WordLevel({"[PAD]": 0, "[MASK]": 1, "[UNK]": 2, "hello": 3}, "[UNK]"),
                                       pre_tokenizers.Whitespace()), "pre_tokenizer must split off every character"),
    "multi-character token": (_with(lambda d: _vocab(d).update(ab=8)), "token 8 is 'ab', not a single character"),
    "specials swapped": (_with(lambda d: _vocab(d).update({"[PAD]": 1, "[MASK]": 0})), "ids 0, 1, 2 must be"),
    "unsorted characters": (_with(lambda d: _vocab(d).update(a=6, b=5)), "distinct and sorted"),
    "no characters": (_with(lambda d: d["model"].update(vocab={"[PAD]": 0, "[MASK]": 1, "[UNK]": 2})),
                      "no characters after the special tokens"),
    "lone surrogate": (_json(_good()).replace(b'"c": 7', b'"\\ud800": 7'), "lone surrogate"),
    "other unk token": (_with(lambda d: d["model"].update(unk_token="a")), "unk_token is 'a'"),
    "normalizer": (_with(lambda d: d.update(normalizer={"type": "Lowercase"})), "has a normalizer"),
    "no pre-tokenizer": (_with(lambda d: d.update(pre_tokenizer=None)), "pre_tokenizer must split"),
    "post-processor": (_with(lambda d: d.update(post_processor={"type": "BertProcessing", "sep": ["[PAD]", 0],
                                                               "cls": ["[MASK]", 1]})), "post_processor"),
    "other decoder": (_with(lambda d: d.update(decoder={"type": "WordPiece", "prefix": "##", "cleanup": True})),
                      "decoder is"),
    "extra added token": (_with(lambda d: d["added_tokens"].append({**d["added_tokens"][0], "id": 5,
                                                                   "content": "a"})), "added_tokens must be"),
    "lstrip mask": (_with(lambda d: d["added_tokens"][1].update(lstrip=True)), "added_tokens must be"),
    "no added tokens": (_with(lambda d: d.pop("added_tokens")), "added_tokens must be"),
    "old format, vocab not a list": (_json({"type": "CharTokenizer", "vocab": {"a": 3}}), "'vocab' must be a list"),
    "old format, token not a string": (_json({"type": "CharTokenizer", "vocab": ["[PAD]", "[MASK]", "[UNK]", 7]}),
                                       "token 3 is 7, not a string"),
    "old format, repeated character": (_json({"type": "CharTokenizer", "vocab": ["[PAD]", "[MASK]", "[UNK]", "a",
                                                                                 "a"]}), "distinct and sorted"),
    "old format, no specials": (_json({"type": "CharTokenizer", "vocab": ["a", "b"]}), "ids 0, 1, 2 must be"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_load_rejects_malformed_files_with_one_line_errors(tmp_path, name):
    content, message = MALFORMED[name]
    path = tmp_path / "tokenizer.json"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ScratchMLMError) as caught:
        CharTokenizer.load(path)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(str(path)) and message in text, text
    assert len(text) < 300


def test_load_of_an_unreadable_file_is_a_clear_error(tmp_path, monkeypatch, tokenizer):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(type(path), "read_bytes", refuse)   # chmod would not stop root
    with pytest.raises(ScratchMLMError, match=r"tokenizer\.json is missing or unreadable: permission denied\.$"):
        CharTokenizer.load(path)


def test_the_good_file_of_the_malformed_cases_loads(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_bytes(_json(_good()))
    assert CharTokenizer.load(path).vocab == list(_GOOD_IDS)


def test_encode_array_is_int64_numpy(tokenizer):
    array = tokenizer.encode_array("abc")
    assert isinstance(array, np.ndarray) and array.dtype == np.int64
