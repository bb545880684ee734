"""CharTokenizer: one id per character, plus three special tokens.

Ids: ``[PAD]`` = 0, ``[MASK]`` = 1, ``[UNK]`` = 2, then the corpus characters in sorted order
(so the "real" characters are exactly the ids ``3 .. vocab_size - 1``).

Bulk encoding is a vectorised lookup: the text becomes an array of Unicode code points and
``np.searchsorted`` finds each one in the sorted alphabet — no Python loop per character.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from .errors import ScratchMLMError

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
        self.characters: list[str] = chars
        self.vocab: list[str] = list(SPECIAL_TOKENS) + chars
        self.token_to_id: dict[str, int] = {token: i for i, token in enumerate(self.vocab)}
        self._sorted_code_points = _code_points("".join(chars))
        self._decode_table = np.array(self.vocab, dtype=object)

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
    def to_dict(self) -> dict:
        return {"type": "CharTokenizer", "vocab": self.vocab}

    @classmethod
    def from_dict(cls, data: dict) -> "CharTokenizer":
        vocab = data.get("vocab") if isinstance(data, dict) else None
        if not isinstance(vocab, list) or tuple(vocab[:3]) != SPECIAL_TOKENS:
            raise ScratchMLMError("Not a CharTokenizer description: expected a 'vocab' list that starts "
                                  f"with {list(SPECIAL_TOKENS)}.")
        tokenizer = cls(vocab[3:])
        if tokenizer.vocab != vocab:
            raise ScratchMLMError("CharTokenizer vocab must be the specials then sorted, distinct characters.")
        return tokenizer

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_huggingface(self):
        """An equivalent Hugging Face ``tokenizers.Tokenizer`` (WordLevel over single characters).

        Each character is its own pre-token; the three specials are added tokens, so ``[MASK]`` in
        a text is matched before splitting, exactly as :meth:`encode` does.
        """
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers

        hf = Tokenizer(models.WordLevel(dict(self.token_to_id), unk_token=UNK))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.add_special_tokens(list(SPECIAL_TOKENS))
        return hf

    def save_huggingface(self, path: str | Path) -> None:
        """Write a ``tokenizer.json`` loadable with ``tokenizers.Tokenizer.from_file``."""
        self.to_huggingface().save(str(path))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
