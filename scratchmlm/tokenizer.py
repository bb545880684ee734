"""CharTokenizer: one id per character, plus three special tokens.

Ids: ``[PAD]`` = 0, ``[MASK]`` = 1, ``[UNK]`` = 2, then the corpus characters in sorted order
(so the "real" characters are exactly the ids ``3 .. vocab_size - 1``).

Bulk encoding is a vectorised lookup: the text becomes an array of Unicode code points and
``np.searchsorted`` finds each one in the sorted alphabet — no Python loop per character.

A run directory's ``tokenizer.json`` (written by :meth:`CharTokenizer.save`) is a Hugging Face
tokenizer file — a WordLevel model over single characters, each character split off as its own
pre-token, the specials as added tokens and a ``Fuse`` decoder — so ``tokenizers.Tokenizer.from_file``
loads it and gives the same ids. :meth:`CharTokenizer.load` reads it back (and still reads the older
``{"type": "CharTokenizer", "vocab": [...]}`` file), rejecting anything else with a one-line
``ScratchMLMError``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from .errors import ScratchMLMError
from .files import write_atomically

PAD, MASK, UNK = "[PAD]", "[MASK]", "[UNK]"
SPECIAL_TOKENS = (PAD, MASK, UNK)
PAD_ID, MASK_ID, UNK_ID = 0, 1, 2
_SPECIAL_PATTERN = re.compile("(" + "|".join(re.escape(token) for token in SPECIAL_TOKENS) + ")")


def _code_points(text: str) -> np.ndarray:
    """``text`` as a uint32 array of Unicode code points, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class CharTokenizer:
    """Character-level tokenizer with ``[PAD] [MASK] [UNK]`` specials at ids 0, 1, 2."""

    def __init__(self, characters: str | list[str]):
        chars = sorted(set(characters))
        if not chars:
            raise ScratchMLMError("A CharTokenizer needs at least one character; the text was empty.")
        if any(len(char) != 1 for char in chars):
            raise ScratchMLMError("CharTokenizer characters must be single characters.")
        if any(_is_surrogate(char) for char in chars):
            raise ScratchMLMError("CharTokenizer characters cannot be lone surrogates (U+D800..U+DFFF); "
                                  "the text is not valid Unicode.")
        self.characters: list[str] = chars
        self.vocab: list[str] = list(SPECIAL_TOKENS) + chars
        self.token_to_id: dict[str, int] = {token: i for i, token in enumerate(self.vocab)}
        self._sorted_code_points = _code_points("".join(chars))
        self._decode_table = np.array(self.vocab, dtype=object)
        #: the text each id stands for (for characters, the vocabulary itself)
        self.pieces: list[str] = self.vocab
        # Whole-word masking: a word is a run of letters and apostrophes, so a position continues
        # the word of the one before it when both are such characters.
        in_word = torch.tensor([i >= self.first_real_id and (token.isalpha() or token == "'")
                                for i, token in enumerate(self.vocab)])
        #: per id: this character can continue the word before it
        self.starts_inside_word = in_word
        #: per id: a word can go on after this character
        self.ends_inside_word = in_word

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """A tokenizer whose alphabet is every distinct character of ``text``."""
        return cls(list(set(text)))

    # -- sizes and ids ------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    pad_id, mask_id, unk_id = PAD_ID, MASK_ID, UNK_ID
    special_ids = (PAD_ID, MASK_ID, UNK_ID)

    @property
    def first_real_id(self) -> int:
        """Real characters are ids ``first_real_id .. vocab_size - 1``."""
        return len(SPECIAL_TOKENS)

    # -- encoding -----------------------------------------------------------------------------
    def unknown_characters(self, text: str) -> list[str]:
        """The distinct characters of ``text`` outside the alphabet (they become ``[UNK]``)."""
        return sorted(set(text) - set(self.characters))

    def encode_array(self, text: str, strict: bool = False, offset: int = 0) -> np.ndarray:
        """Encode plain text (no special-token parsing) to an int64 array, vectorised.

        ``offset`` is where ``text`` starts in a longer prompt (only used in error messages)."""
        points = _code_points(text)
        table = self._sorted_code_points
        where = np.searchsorted(table, points)
        where_clipped = np.minimum(where, len(table) - 1)
        known = table[where_clipped] == points
        if strict and not known.all():
            first = int(np.argmin(known))
            unknown = sorted(set(chr(p) for p in points[~known]))
            raise ScratchMLMError(
                f"Character {text[first]!r} at position {offset + first} is not in the tokenizer's alphabet "
                f"(unknown: {''.join(unknown)!r}). Remove it, or encode with strict=False to map "
                f"unknown characters to {UNK}."
            )
        return np.where(known, where_clipped + self.first_real_id, UNK_ID).astype(np.int64)

    def encode(self, text: str, strict: bool = False, parse_special: bool = True) -> torch.Tensor:
        """Encode ``text`` to a 1-D LongTensor ``[len]``.

        With ``parse_special`` (the default, meant for prompts) the literal strings ``[MASK]``,
        ``[PAD]`` and ``[UNK]`` become their ids. Corpora are encoded with ``parse_special=False``
        so that every character round-trips. Unknown characters become ``[UNK]``, or raise a
        ``ScratchMLMError`` when ``strict``.
        """
        if not parse_special or "[" not in text:
            return torch.from_numpy(self.encode_array(text, strict))
        pieces, offset = [], 0
        for piece in _SPECIAL_PATTERN.split(text):
            if piece in SPECIAL_TOKENS:
                pieces.append(np.array([self.token_to_id[piece]], dtype=np.int64))
            elif piece:
                pieces.append(self.encode_array(piece, strict, offset))
            offset += len(piece)
        return torch.from_numpy(np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64))

    def decode(self, ids, skip_special: bool = False) -> str:
        """Ids (tensor, array or list; 1-D) back to text; specials decode to their literal names."""
        ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ScratchMLMError(
                f"Cannot decode id {int(ids.max() if ids.max() >= self.vocab_size else ids.min())}: "
                f"ids must lie in 0..{self.vocab_size - 1} for this tokenizer."
            )
        if skip_special:
            ids = ids[ids >= self.first_real_id]
        return "".join(self._decode_table[ids])

    # -- persistence ---------------------------------------------------------------------------
    def to_huggingface(self):
        """An equivalent Hugging Face ``tokenizers.Tokenizer`` (WordLevel over single characters).

        Each character is its own pre-token; the three specials are added tokens, so ``[MASK]`` in
        a text is matched before splitting, exactly as :meth:`encode` does. The ``Fuse`` decoder
        joins tokens without separators, so ``decode(encode(text).ids) == text``. (Hugging Face's
        ``decode`` drops special tokens by default; pass ``skip_special_tokens=False`` to keep a
        ``[MASK]`` — this class's :meth:`decode` keeps them by default.)
        """
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

        hf = Tokenizer(models.WordLevel(dict(self.token_to_id), unk_token=UNK))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(_ONE_CHARACTER), behavior="isolated")
        hf.decoder = decoders.Fuse()
        hf.add_special_tokens(list(SPECIAL_TOKENS))
        return hf

    def save(self, path: str | Path) -> None:
        """Write a Hugging Face ``tokenizer.json`` (UTF-8, atomically: temp file, then rename)."""
        write_atomically(path, self.to_huggingface().to_str(pretty=True) + "\n", "tokenizer")

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        """Read a ``tokenizer.json`` written by :meth:`save` (or the older ``{"type": "CharTokenizer",
        "vocab": [...]}`` file). Anything else is a one-line ``ScratchMLMError`` naming the file."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as error:
            reason = {FileNotFoundError: "no such file", IsADirectoryError: "it is a directory",
                      PermissionError: "permission denied"}.get(type(error), error.strerror)
            raise ScratchMLMError(f"{path} is missing or unreadable: {reason or type(error).__name__}.") from None
        try:
            vocab = _vocab_from_json(_parse_json(raw))
            _check_vocab(vocab)
            return cls(vocab[len(SPECIAL_TOKENS):])
        except _Malformed as problem:
            raise ScratchMLMError(f"{path} is not a CharTokenizer tokenizer.json: {problem}.") from None

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# -- reading tokenizer.json ----------------------------------------------------------------------
_ONE_CHARACTER = r"[\s\S]"   # the pre-tokenizer's pattern: any single character, newlines included
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


class _Malformed(Exception):
    """What is wrong with a tokenizer file (``load`` adds the file name)."""


def _short(value, limit: int = 40) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (hostile files can hold huge values)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _no_duplicate_keys(pairs: list) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _Malformed(f"the key {_short(duplicate)} appears twice in one JSON object")
    return result


def _parse_json(raw: bytes):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _Malformed(f"it is not UTF-8 text (byte {error.start} cannot be decoded)") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise _Malformed("the JSON is nested too deeply") from None
    except json.JSONDecodeError as error:
        raise _Malformed(f"it is not valid JSON ({error})") from None
    except ValueError:                 # an integer with more digits than int() accepts (4300 by default)
        raise _Malformed("it holds an integer with too many digits") from None


def _vocab_from_json(data) -> list:
    """The id-ordered vocabulary a tokenizer file describes (not yet validated)."""
    if not isinstance(data, dict):
        raise _Malformed(f"the top level is a JSON {_JSON_TYPES.get(type(data), 'value')}, not an object")
    if data.get("type") == "CharTokenizer":       # the format scratchmlm wrote before tokenizer.json was HF's
        vocab = data.get("vocab")
        if not isinstance(vocab, list):
            raise _Malformed("'vocab' must be a list of tokens")
        return vocab
    model = data.get("model")
    if not isinstance(model, dict):
        raise _Malformed("it has no 'model' object, so it is not a Hugging Face tokenizer file")
    if model.get("type") != "WordLevel":
        raise _Malformed(f"the model type is {_short(model.get('type'))}, not 'WordLevel'")
    mapping = model.get("vocab")
    if not isinstance(mapping, dict):
        raise _Malformed("model.vocab must be an object mapping each token to its id")
    for token, token_id in mapping.items():
        if type(token_id) is not int:
            raise _Malformed(f"the id of token {_short(token)} is {_short(token_id)}, not an integer")
    ids = sorted(mapping.values())
    if ids != list(range(len(ids))):
        present = set(ids)
        missing = next(i for i in range(len(ids)) if i not in present)    # one exists: len(ids) ids, not 0..len-1
        repeated = next((a for a, b in zip(ids, ids[1:]) if a == b), None)
        raise _Malformed(f"model.vocab ids must be exactly 0..{len(ids) - 1}, but id {missing} is missing"
                         + (f" and id {repeated} is repeated" if repeated is not None else ""))
    if model.get("unk_token") != UNK:
        raise _Malformed(f"model.unk_token is {_short(model.get('unk_token'))}, not '{UNK}'")
    _check_pipeline(data)
    return sorted(mapping, key=mapping.__getitem__)


def _check_pipeline(data: dict) -> None:
    """The parts of a Hugging Face file that change its ids must be exactly what ``save`` writes."""
    if data.get("normalizer") is not None:
        raise _Malformed("it has a normalizer, which a character tokenizer does not use")
    pre = data.get("pre_tokenizer")
    if not (isinstance(pre, dict) and pre.get("type") == "Split" and pre.get("pattern") == {"Regex": _ONE_CHARACTER}
            and pre.get("behavior") == "Isolated" and not pre.get("invert")):
        raise _Malformed(f"the pre_tokenizer must split off every character (Split, regex {_ONE_CHARACTER}, "
                         "Isolated)")
    if data.get("post_processor") is not None:
        raise _Malformed("it has a post_processor, which would add tokens a character tokenizer does not")
    decoder = data.get("decoder")
    if decoder is not None and decoder != {"type": "Fuse"}:
        raise _Malformed(f"the decoder is {_short(decoder)}, not Fuse")
    added = data.get("added_tokens")
    expected = [(i, token, True) for i, token in enumerate(SPECIAL_TOKENS)]
    if not (isinstance(added, list) and all(isinstance(entry, dict) for entry in added)
            and [(entry.get("id"), entry.get("content"), entry.get("special")) for entry in added] == expected
            and not any(entry.get(flag) for entry in added for flag in ("lstrip", "rstrip", "single_word"))):
        raise _Malformed(f"added_tokens must be exactly the special tokens {list(SPECIAL_TOKENS)} at ids 0, 1, 2")


def _check_vocab(vocab: list) -> None:
    """Specials at 0, 1, 2, then distinct single characters in sorted order (what ``__init__`` builds)."""
    for i, token in enumerate(vocab):
        if not isinstance(token, str):
            raise _Malformed(f"token {i} is {_short(token)}, not a string")
    if tuple(vocab[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise _Malformed(f"ids 0, 1, 2 must be {list(SPECIAL_TOKENS)}, found {_short(vocab[:len(SPECIAL_TOKENS)])}")
    if len(vocab) == len(SPECIAL_TOKENS):
        raise _Malformed("it has no characters after the special tokens")
    for i in range(len(SPECIAL_TOKENS), len(vocab)):
        token = vocab[i]
        if len(token) != 1:
            raise _Malformed(f"token {i} is {_short(token)}, not a single character")
        if _is_surrogate(token):
            raise _Malformed(f"token {i} is the lone surrogate {token!r}, not a character")
        if i > len(SPECIAL_TOKENS) and not vocab[i - 1] < token:
            raise _Malformed(f"the characters must be distinct and sorted, but token {i} ({token!r}) "
                             f"does not come after token {i - 1} ({vocab[i - 1]!r})")


def _is_surrogate(char: str) -> bool:
    return 0xD800 <= ord(char) <= 0xDFFF
