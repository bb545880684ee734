"""SubwordTokenizer: BPE or WordPiece vocabularies, trained with Hugging Face ``tokenizers``.

A character model must spell every word out; a subword model reads ``" the"`` or ``" king"`` as one
token and only splits rare words (``" nim" "##ble"``). Both kinds learn their vocabulary from the
training split alone (so no validation text leaks into it):

* **BPE** starts from the characters and repeatedly merges the most frequent adjacent pair;
* **WordPiece** merges the pair that most raises the likelihood of the text (count of the pair
  divided by the counts of its parts).

The same text pipeline serves both, so that ``decode(encode(text)) == text`` for every text
written in the training alphabet:

1. **Pre-tokenization** cuts the text into *words*: a run of letters and apostrophes (with the one
   space before it attached: ``" king's"``), a run of digits, a run of other symbols, or a run of
   whitespace. Nothing is normalised or dropped: case, newlines and spaces all survive.
2. **The model** splits each word into vocabulary tokens. Every token after a word's first carries
   the ``##`` prefix (``" nim" "##ble"``), so a token's id alone says whether it continues a word:
   these are the tokenizer's word ids that whole-word masking groups by.
3. **Decoding** drops the ``##`` prefixes and joins the pieces without separators.

Ids: ``[PAD]`` = 0, ``[MASK]`` = 1, ``[UNK]`` = 2 (as in ``CharTokenizer``), then the learned
tokens. ``[MASK]`` in a prompt swallows the space before it (``lstrip``), because a masked word
token carries its own leading space: ``"to be or [MASK] to be"`` asks for a token like ``" not"``.

The file a run stores is the Hugging Face ``tokenizer.json``; ``tokenizers.Tokenizer.from_file``
reads it and gives the same ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import ScratchMLMError
from .files import write_atomically
from .tokenizer import MASK, PAD, SPECIAL_TOKENS, UNK

SUBWORD_KINDS = ("bpe", "wordpiece")
DEFAULT_VOCAB_SIZE = 1000
CONTINUATION = "##"          # the prefix of a token that continues a word
WORD_PATTERN = r" ?[\p{L}']+| ?\p{N}+| ?[^\s\p{L}\p{N}']+|\s+(?!\S)|\s+"


# Learning the merges. Hugging Face's BPE trainer is deterministic for plain symbols, but gives
# ``##`` symbols ids in a hash-map's (random) order, which changes how ties between equally frequent
# pairs are broken, and so the vocabulary, from one call to the next. So every character after a
# word's first is written as its own private-use twin (``"king"`` -> ``"k" + twin("i") + twin("n")
# + twin("g")``): the trainer sees plain, deterministically ordered symbols, and a token that
# starts with a twin is exactly a ``##`` token.
_MARK_OFFSET, _MARK_LIMIT = 0xF0000, 0x10000


def _mark(word: str) -> str:
    return word[0] + "".join(chr(_MARK_OFFSET + ord(char)) for char in word[1:])


def _unmark(token: str) -> str:
    """A learned token in the ``##`` notation: ``twin("b") twin("l") twin("e")`` -> ``"##ble"``."""
    if token in SPECIAL_TOKENS:
        return token
    plain = "".join(chr(ord(char) - _MARK_OFFSET) if ord(char) >= _MARK_OFFSET else char for char in token)
    return CONTINUATION + plain if ord(token[0]) >= _MARK_OFFSET else plain


def _learn_merges(text: str, vocab_size: int) -> tuple[list[str], list[tuple[str, str]]]:
    """BPE on the words of ``text``: the vocabulary (specials, characters, merged tokens, in id
    order) and the merges in the order learned, both in the ``##`` notation. Each merge joins the
    most frequent adjacent pair of symbols inside a word; ``##`` symbols are distinct from
    word-initial ones, as in BERT's WordPiece vocabularies."""
    import json

    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    splitter = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
    words = [_mark(word) for word, _ in splitter.pre_tokenize_str(text)]
    learner = Tokenizer(models.BPE(unk_token=UNK))          # no pre-tokenizer: each word is one sequence
    learner.train_from_iterator(words, trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    vocab = sorted(learned["vocab"], key=learned["vocab"].__getitem__)
    merges = [tuple(pair.split(" ") if isinstance(pair, str) else pair) for pair in learned["merges"]]
    return [_unmark(token) for token in vocab], [(_unmark(a), _unmark(b)) for a, b in merges]


def _pipeline(hf):
    """Give a Hugging Face tokenizer the pre-tokenizer, decoder and special tokens described above."""
    from tokenizers import AddedToken, Regex, decoders, pre_tokenizers

    hf.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
    hf.decoder = decoders.Sequence([decoders.Replace(CONTINUATION, ""), decoders.Fuse()])
    hf.add_special_tokens([AddedToken(PAD, special=True), AddedToken(MASK, special=True, lstrip=True),
                           AddedToken(UNK, special=True)])
    return hf


class SubwordTokenizer:
    """A trained BPE or WordPiece vocabulary with ``[PAD] [MASK] [UNK]`` at ids 0, 1, 2.

    It offers what ``CharTokenizer`` offers (``encode``, ``decode``, ``vocab``, ``pieces``, the
    special ids, ``save`` / ``load``), so every part of scratchmlm takes either.
    """

    pad_id, mask_id, unk_id = 0, 1, 2
    special_ids = (0, 1, 2)
    first_real_id = len(SPECIAL_TOKENS)

    def __init__(self, hf_tokenizer):
        model = type(hf_tokenizer.model).__name__
        if model not in ("BPE", "WordPiece"):
            raise ScratchMLMError(f"A SubwordTokenizer needs a BPE or WordPiece model, not {model}.")
        self.kind = "bpe" if model == "BPE" else "wordpiece"
        self.hf = hf_tokenizer
        mapping = hf_tokenizer.get_vocab(with_added_tokens=True)
        self.vocab: list[str] = sorted(mapping, key=mapping.__getitem__)
        if [mapping[token] for token in self.vocab] != list(range(len(self.vocab))):
            raise ScratchMLMError("The tokenizer's ids are not 0 .. vocab_size - 1 without gaps.")
        if tuple(self.vocab[:3]) != SPECIAL_TOKENS:
            raise ScratchMLMError(f"Ids 0, 1, 2 must be {list(SPECIAL_TOKENS)}, found {self.vocab[:3]}.")
        self.token_to_id = dict(mapping)
        #: the text each id stands for: the token without its ``##`` (specials as their names)
        self.pieces: list[str] = [token[len(CONTINUATION):] if self._continues(i, token) else token
                                  for i, token in enumerate(self.vocab)]
        self.alphabet = {piece for piece in self.pieces[self.first_real_id:] if len(piece) == 1}
        self._decode_table = np.array(self.pieces, dtype=object)
        continues = torch.tensor([self._continues(i, t) for i, t in enumerate(self.vocab)])
        #: per id: the token continues the word of the token before it (``##...``)
        self.starts_inside_word = continues
        #: per id: a word may go on after this token (every real token; never a special)
        self.ends_inside_word = torch.arange(self.vocab_size) >= self.first_real_id

    def _continues(self, token_id: int, token: str) -> bool:
        return token_id >= self.first_real_id and token.startswith(CONTINUATION) and len(token) > len(CONTINUATION)

    # -- training ------------------------------------------------------------------------------
    @classmethod
    def train(cls, text: str, kind: str = "bpe", vocab_size: int = DEFAULT_VOCAB_SIZE) -> "SubwordTokenizer":
        """Learn a ``kind`` (``bpe`` or ``wordpiece``) vocabulary of ``vocab_size`` ids (specials
        included) from ``text``. The same text and settings always give the same vocabulary."""
        from tokenizers import Tokenizer, models

        if kind not in SUBWORD_KINDS:
            raise ScratchMLMError(f"Unknown subword tokenizer {kind!r}; use bpe or wordpiece.")
        if not text:
            raise ScratchMLMError("Cannot train a subword vocabulary on an empty text.")
        if CONTINUATION in text:
            raise ScratchMLMError(f"The text contains {CONTINUATION!r}, which subword tokenizers reserve to mark "
                                  f"a word's continuation; remove it or use --tokenizer char.")
        alphabet = set(text)
        if any(ord(char) >= _MARK_LIMIT or _MARK_OFFSET <= ord(char) for char in alphabet):
            raise ScratchMLMError("Subword tokenizers accept characters up to U+FFFF outside the private-use "
                                  "plane U+F0000..; this text has others. Use --tokenizer char.")
        if vocab_size < len(SPECIAL_TOKENS) + 2 * len(alphabet):
            raise ScratchMLMError(f"--vocab-size {vocab_size} is too small: the {len(SPECIAL_TOKENS)} specials and "
                                  f"the text's {len(alphabet)} characters, each at a word's start and inside "
                                  f"one, need at least {len(SPECIAL_TOKENS) + 2 * len(alphabet)} ids.")
        vocab, merges = _learn_merges(text, vocab_size)
        mapping = {token: i for i, token in enumerate(vocab)}
        if kind == "bpe":
            hf = Tokenizer(models.BPE(mapping, merges, unk_token=UNK, continuing_subword_prefix=CONTINUATION))
        else:
            hf = Tokenizer(models.WordPiece(mapping, unk_token=UNK, continuing_subword_prefix=CONTINUATION,
                                            max_input_chars_per_word=10_000))
        return cls(_pipeline(hf))

    # -- sizes and ids ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # -- encoding ----------------------------------------------------------------------------------
    def unknown_characters(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that no token spells (they become ``[UNK]``)."""
        return sorted(set(text) - self.alphabet)

    def encode(self, text: str, strict: bool = False, parse_special: bool = True) -> torch.Tensor:
        """Encode ``text`` to a 1-D LongTensor ``[len]``.

        With ``parse_special`` (the default, for prompts) a literal ``[MASK]`` (``[PAD]``,
        ``[UNK]``) becomes its id; corpora are encoded with ``parse_special=False``. Characters no
        token spells become ``[UNK]`` (WordPiece: their whole word), or raise when ``strict``.
        """
        if strict:
            plain = text
            if parse_special:
                for token in SPECIAL_TOKENS:
                    plain = plain.replace(token, "")
            unknown = self.unknown_characters(plain)
            if unknown:
                first = next(i for i, char in enumerate(text) if char in unknown)
                raise ScratchMLMError(
                    f"Character {text[first]!r} at position {first} is not in the tokenizer's alphabet "
                    f"(unknown: {''.join(unknown)!r}). Remove it, or encode with strict=False to map "
                    f"unknown characters to {UNK}.")
        self.hf.encode_special_tokens = not parse_special
        try:
            ids = self.hf.encode(text, add_special_tokens=False).ids
        finally:
            self.hf.encode_special_tokens = False
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids, skip_special: bool = False) -> str:
        """Ids (tensor, array or list; 1-D) back to text: the pieces joined, ``##`` dropped."""
        ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = int(ids.max() if ids.max() >= self.vocab_size else ids.min())
            raise ScratchMLMError(f"Cannot decode id {bad}: ids must lie in 0..{self.vocab_size - 1} "
                                  f"for this tokenizer.")
        if skip_special:
            ids = ids[ids >= self.first_real_id]
        return "".join(self._decode_table[ids])

    def word_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Which word each token of the 1-D ``ids`` belongs to (0, 1, 2, ...): a new word starts at
        every token that does not continue the one before it."""
        starts = ~self.starts_inside_word[ids.cpu()]
        if len(starts):
            starts[0] = True
        return torch.cumsum(starts.long(), 0) - 1

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the Hugging Face ``tokenizer.json`` atomically (temporary file, then rename)."""
        write_atomically(path, self.hf.to_str(pretty=True) + "\n", "tokenizer")

    @classmethod
    def from_json(cls, text: str, path: str | Path = "tokenizer.json") -> "SubwordTokenizer":
        """A tokenizer from the contents of a ``tokenizer.json`` that :meth:`save` wrote."""
        from tokenizers import Tokenizer

        try:
            hf = Tokenizer.from_str(text)
        except Exception as error:       # tokenizers raises its own Exception for any bad file
            raise ScratchMLMError(f"{path} is not a Hugging Face tokenizer file: "
                                  f"{str(error).splitlines()[0][:200]}.") from None
        return cls(hf)

    @classmethod
    def load(cls, path: str | Path) -> "SubwordTokenizer":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ScratchMLMError(f"{path} is missing or unreadable ({type(error).__name__}).") from None
        return cls.from_json(text, path)

    def __repr__(self) -> str:
        return f"SubwordTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"
