"""BERT masking: choose which positions the model must predict, and what it sees there.

For every maskable position, independently:

* it is **selected** with probability ``select_prob`` (0.15);
* a selected position becomes exactly one of

  - ``[MASK]``                          with probability ``mask_token_prob``   (0.8),
  - a random *real* token               with probability ``random_token_prob`` (0.1),
  - itself, unchanged                   with the remaining probability          (0.1);

* ``labels`` hold the original id at selected positions and ``-100`` (ignored by the loss)
  everywhere else.

One uniform draw ``u`` per selected position decides the kind: ``u < 0.8`` -> ``[MASK]``,
``0.8 <= u < 0.9`` -> random, else unchanged, so the three outcomes are disjoint and cover the
selection exactly. (Drawing "random" and "unchanged" independently of each other, as some
implementations do, overlaps them and yields about 81/10/9 instead.)

Two variants select differently but keep the 15% budget and the 80/10/10 rule:
``WholeWordMasker`` selects whole words, ``SpanMasker`` contiguous spans of geometric length.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .errors import ScratchMLMError

IGNORE_INDEX = -100

# What happened at each position, as stored in ``MaskedBatch.kinds``.
NOT_SELECTED, MASKED, RANDOMISED, UNCHANGED = 0, 1, 2, 3
KIND_NAMES = {MASKED: "mask", RANDOMISED: "random", UNCHANGED: "unchanged"}


@dataclass
class MaskedBatch:
    """The masker's output, all ``[batch, seq]`` on the input's device.

    ``inputs``: what the model sees. ``labels``: original ids at selected positions, ``-100``
    elsewhere. ``kinds``: ``NOT_SELECTED`` / ``MASKED`` / ``RANDOMISED`` / ``UNCHANGED`` per position.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    kinds: torch.Tensor

    @property
    def selected(self) -> torch.Tensor:
        return self.labels != IGNORE_INDEX

    def to(self, device) -> "MaskedBatch":
        return MaskedBatch(self.inputs.to(device), self.labels.to(device), self.kinds.to(device))


def check_probabilities(select_prob: float, mask_token_prob: float, random_token_prob: float) -> None:
    """The masker's three probabilities: ``select_prob`` in (0, 1] (with 0 nothing is ever scored),
    the other two in [0, 1] and together at most 1 (the rest stays unchanged)."""
    def is_number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not is_number(select_prob) or not 0.0 < select_prob <= 1.0:
        raise ScratchMLMError(f"select_prob must be a probability in (0, 1] (with 0 nothing is ever scored), "
                              f"got {select_prob!r}.")
    for name, value in (("mask_token_prob", mask_token_prob), ("random_token_prob", random_token_prob)):
        if not is_number(value) or not 0.0 <= value <= 1.0:
            raise ScratchMLMError(f"{name} must be a probability in [0, 1], got {value!r}.")
    if mask_token_prob + random_token_prob > 1.0 + 1e-12:
        raise ScratchMLMError(f"mask_token_prob + random_token_prob must be at most 1 (the rest stays unchanged), "
                              f"got {mask_token_prob} + {random_token_prob} = {mask_token_prob + random_token_prob}.")


def check_span(span_mean: float, select_prob: float) -> None:
    """``span_mean`` is at least 1, and ``select_prob`` is reachable with spans of that mean length
    (see ``SpanMasker``: the chain's start probability ``r`` is at most 1)."""
    if not (isinstance(span_mean, (int, float)) and not isinstance(span_mean, bool) and span_mean >= 1.0):
        raise ScratchMLMError(f"span_mean must be at least 1 (a span holds at least one token), got {span_mean!r}.")
    if select_prob >= 1.0 or span_start_prob(span_mean, select_prob) > 1.0:
        raise ScratchMLMError(
            f"select_prob {select_prob} with span_mean {span_mean} is not reachable: spans are separated by at "
            f"least one unselected token, so select_prob must be at most span_mean / (span_mean + 1) = "
            f"{span_mean / (span_mean + 1):.3f}. Lower --select-prob or raise --span-mean.")


def span_start_prob(span_mean: float, select_prob: float) -> float:
    """``r = q p / (1 - p)`` with ``q = 1 / span_mean``: a span starts outside one with this probability."""
    return (1.0 / span_mean) * select_prob / (1.0 - select_prob)


def _check_arguments(masker, ids, rng, rows: bool = False) -> None:
    """A masker takes an integer tensor of ids (``[batch, seq]`` when ``rows``) and a
    ``torch.Generator`` on the same device."""
    name = type(masker).__name__
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32):
        raise ScratchMLMError(f"{name} expects an integer tensor of token ids, e.g. [batch, seq] int64.")
    if rows and ids.dim() != 2:
        raise ScratchMLMError(f"{name} expects ids [batch, seq] (its words and spans run along each row), "
                              f"got shape {tuple(ids.shape)}; use ids[None] for one sequence.")
    if not isinstance(rng, torch.Generator):
        raise ScratchMLMError(f"{name} needs an explicit torch.Generator, e.g. torch.Generator().manual_seed(0).")
    if rng.device.type != ids.device.type:
        raise ScratchMLMError(
            f"The random generator rng is on {rng.device} but the ids are on {ids.device}; "
            f"create it with torch.Generator(device=ids.device)."
        )


class BertMasker:
    """BERT's 15% / 80-10-10 masking.

    Args:
        mask_id: the ``[MASK]`` id.
        replacement_ids: ids a "random" position may become (the real characters; never a special).
        never_select_ids: ids that are never selected (the specials, plus any the caller names).
        select_prob, mask_token_prob, random_token_prob: the three probabilities; the
            "unchanged" probability is ``1 - mask_token_prob - random_token_prob``.
    """

    def __init__(self, mask_id: int, replacement_ids, never_select_ids=(),
                 select_prob: float = 0.15, mask_token_prob: float = 0.8,
                 random_token_prob: float = 0.1):
        check_probabilities(select_prob, mask_token_prob, random_token_prob)
        replacement_ids = torch.as_tensor(list(replacement_ids), dtype=torch.long)
        never = sorted(set(int(i) for i in never_select_ids) | {int(mask_id)})
        if replacement_ids.numel() == 0 and random_token_prob > 0:
            raise ScratchMLMError("random_token_prob > 0 needs at least one replacement id.")
        if bool(torch.isin(replacement_ids, torch.tensor(never)).any()):
            raise ScratchMLMError("replacement_ids must not contain [MASK] or any never-selected id.")
        self.mask_id = int(mask_id)
        self.replacement_ids = replacement_ids
        self.never_select_ids = torch.tensor(never, dtype=torch.long)
        self.select_prob = float(select_prob)
        self.mask_token_prob = float(mask_token_prob)
        self.random_token_prob = float(random_token_prob)

    @classmethod
    def for_tokenizer(cls, tokenizer, extra_never_select_ids=(), **probabilities) -> "BertMasker":
        """The masker for a ``CharTokenizer``: specials (and ``extra_never_select_ids``) are never
        selected nor inserted."""
        excluded = set(int(i) for i in extra_never_select_ids)
        return cls(
            mask_id=tokenizer.mask_id,
            replacement_ids=[i for i in range(tokenizer.first_real_id, tokenizer.vocab_size)
                             if i not in excluded],
            never_select_ids=tuple(tokenizer.special_ids) + tuple(extra_never_select_ids),
            **probabilities,
        )

    @classmethod
    def from_config(cls, tokenizer, train_config) -> "BertMasker":
        """The masker a ``TrainConfig`` describes (its three probabilities) for ``tokenizer``."""
        return cls.for_tokenizer(tokenizer, select_prob=train_config.select_prob,
                                 mask_token_prob=train_config.mask_token_prob,
                                 random_token_prob=train_config.random_token_prob)

    def to(self, device) -> "BertMasker":
        """This masker with its id tables on ``device`` (so that masking there copies nothing)."""
        moved = copy.copy(self)
        moved.replacement_ids = self.replacement_ids.to(device)
        moved.never_select_ids = self.never_select_ids.to(device)
        return moved

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, rng: torch.Generator) -> MaskedBatch:
        """Mask ``ids`` ``[batch, seq]`` (any shape works) with randomness from ``rng``.

        ``ids`` is never modified. Everything is computed on ``ids.device``; ``rng`` must
        live on that device too.
        """
        _check_arguments(self, ids, rng)
        # BEGIN SOLUTION masking
        # HINT: maskable = not one of self.never_select_ids (torch.isin); a position is selected when a
        # HINT: uniform draw torch.rand(ids.shape, generator=rng, device=ids.device) falls below select_prob
        # HINT: draw one more uniform per position for the kind, then let _replace_selected (below) apply 80/10/10
        maskable = ~torch.isin(ids, self.never_select_ids.to(ids.device))
        selected = (torch.rand(ids.shape, generator=rng, device=ids.device) < self.select_prob) & maskable
        kind_draw = torch.rand(ids.shape, generator=rng, device=ids.device)
        return _replace_selected(self, ids, selected, kind_draw, rng)
        # END SOLUTION

    def __repr__(self) -> str:
        unchanged = 1.0 - self.mask_token_prob - self.random_token_prob
        return (f"{type(self).__name__}(select={self.select_prob}, mask={self.mask_token_prob}, "
                f"random={self.random_token_prob}, unchanged={unchanged:.3g})")


# -- the 80/10/10 rule, shared by BertMasker and the whole-word and span maskers --------------------
def _replace_selected(masker: BertMasker, ids: torch.Tensor, selected: torch.Tensor,
                      kind_draw: torch.Tensor, rng: torch.Generator) -> MaskedBatch:
    """BERT's 80/10/10 rule applied to the ``selected`` positions of ``ids`` ``[batch, seq]``:
    ``kind_draw`` (uniform in [0, 1), one per position) below ``mask_token_prob`` -> ``[MASK]``,
    below ``mask_token_prob + random_token_prob`` -> a random real token, else unchanged.

    ``labels`` hold ``ids`` at the selected positions and ``IGNORE_INDEX`` elsewhere; ``kinds`` say
    ``MASKED``, ``RANDOMISED``, ``UNCHANGED`` or ``NOT_SELECTED`` per position (uint8).
    """
    # BEGIN SOLUTION masking
    # HINT: one kind_draw decides all three kinds, so "random" must also be "not [MASK]" (else 81/10/9)
    # HINT: random ids: masker.replacement_ids[torch.randint(len(...), ids.shape, generator=rng, ...)]
    # HINT: build the outputs with torch.where; never write into ids itself
    to_mask = selected & (kind_draw < masker.mask_token_prob)
    to_randomise = selected & ~to_mask & (kind_draw < masker.mask_token_prob + masker.random_token_prob)
    unchanged = selected & ~to_mask & ~to_randomise
    replacements = masker.replacement_ids.to(ids.device)
    if replacements.numel():
        which = torch.randint(len(replacements), ids.shape, generator=rng, device=ids.device)
        random_tokens = replacements[which].to(ids.dtype)
    else:
        random_tokens = ids
    inputs = torch.where(to_mask, torch.full_like(ids, masker.mask_id), ids)
    inputs = torch.where(to_randomise, random_tokens, inputs)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX)).long()
    kinds = (to_mask * MASKED + to_randomise * RANDOMISED + unchanged * UNCHANGED).to(torch.uint8)
    return MaskedBatch(inputs=inputs, labels=labels, kinds=kinds)
    # END SOLUTION


def _first_position_of_run(run_starts: torch.Tensor) -> torch.Tensor:
    """For ``run_starts`` ``[batch, seq]`` (True where a word or span begins), the position where the
    run holding each position began, ``[batch, seq]``: a running maximum of the start positions."""
    positions = torch.arange(run_starts.shape[1], device=run_starts.device).expand_as(run_starts)
    return torch.cummax(torch.where(run_starts, positions, 0), dim=1).values


class WholeWordMasker(BertMasker):
    """Whole-word masking: every token of a word is selected, or none is.

    Each word is selected with probability ``select_prob`` (one draw per word), so every token is
    still selected with probability 0.15 -- the same budget as BERT -- but a model can no longer
    fill ``" nim" [MASK]`` from the word's other half. Each selected token then follows the
    80/10/10 rule on its own draw, as in BERT's whole-word masking.

    Where words begin is read from two per-id tables that the tokenizer provides: position ``i``
    continues the word of position ``i - 1`` when ``ends_inside_word[ids[i-1]]`` and
    ``starts_inside_word[ids[i]]`` both hold. For characters, both mean "a letter or an
    apostrophe" (a word is such a run); for subwords, a ``##`` token continues the word before it
    (the tokenizer's word ids). A word cut by the window's edge counts as a word.
    """

    def __init__(self, mask_id: int, replacement_ids, starts_inside_word, ends_inside_word,
                 never_select_ids=(), **probabilities):
        super().__init__(mask_id, replacement_ids, never_select_ids, **probabilities)
        self.starts_inside_word = torch.as_tensor(starts_inside_word, dtype=torch.bool)
        self.ends_inside_word = torch.as_tensor(ends_inside_word, dtype=torch.bool)
        if self.starts_inside_word.shape != self.ends_inside_word.shape or self.starts_inside_word.dim() != 1:
            raise ScratchMLMError("starts_inside_word and ends_inside_word must be 1-D tables of the same "
                                  "length, one entry per token id.")

    @classmethod
    def for_tokenizer(cls, tokenizer, **probabilities) -> "WholeWordMasker":
        return cls(mask_id=tokenizer.mask_id,
                   replacement_ids=range(tokenizer.first_real_id, tokenizer.vocab_size),
                   starts_inside_word=tokenizer.starts_inside_word, ends_inside_word=tokenizer.ends_inside_word,
                   never_select_ids=tokenizer.special_ids, **probabilities)

    def to(self, device) -> "WholeWordMasker":
        moved = super().to(device)
        moved.starts_inside_word = self.starts_inside_word.to(device)
        moved.ends_inside_word = self.ends_inside_word.to(device)
        return moved

    def word_starts(self, ids: torch.Tensor) -> torch.Tensor:
        """``[batch, seq]`` bool: True where a word begins (always at position 0)."""
        if int(ids.max()) >= len(self.starts_inside_word) or int(ids.min()) < 0:
            raise ScratchMLMError(f"Token id {int(ids.max())} is outside this masker's word tables "
                                  f"({len(self.starts_inside_word)} ids); build it from the same tokenizer.")
        continues = self.starts_inside_word[ids]
        continues[:, 1:] &= self.ends_inside_word[ids[:, :-1]]
        continues[:, 0] = False
        return ~continues

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, rng: torch.Generator) -> MaskedBatch:
        """Mask whole words of ``ids`` ``[batch, seq]`` with randomness from ``rng``."""
        _check_arguments(self, ids, rng, rows=True)
        maskable = ~torch.isin(ids, self.never_select_ids.to(ids.device))
        word_draw = torch.rand(ids.shape, generator=rng, device=ids.device)      # read at each word's start
        word_start = _first_position_of_run(self.word_starts(ids))
        selected = (word_draw.gather(1, word_start) < self.select_prob) & maskable
        kind_draw = torch.rand(ids.shape, generator=rng, device=ids.device)      # one per token
        return _replace_selected(self, ids, selected, kind_draw, rng)


class SpanMasker(BertMasker):
    """Span masking (SpanBERT): contiguous spans with geometric lengths of mean ``span_mean``.

    Along each row the positions alternate between *outside* and *inside* a span, as a two-state
    Markov chain: inside, a span ends after each token with probability ``1 / span_mean`` (so its
    length is geometric, ``P(L = k) = (1 - q)^(k-1) q`` with ``q = 1 / span_mean``, mean
    ``span_mean``); outside, a span starts with probability ``r``. The chain's stationary share of
    inside positions is ``r / (r + q)``; choosing ``r = q * p / (1 - p)`` for ``p = select_prob``
    and starting each row in that stationary state makes **every position selected with
    probability exactly p** (0.15, BERT's budget), at the window's edges too. Spans never touch:
    one unselected position at least lies between two.

    As in SpanBERT, the 80/10/10 rule is drawn once per span: a whole span becomes ``[MASK]``, or
    random tokens, or stays as it is.
    """

    def __init__(self, mask_id: int, replacement_ids, never_select_ids=(), span_mean: float = 3.0,
                 **probabilities):
        super().__init__(mask_id, replacement_ids, never_select_ids, **probabilities)
        check_span(span_mean, self.select_prob)
        self.span_mean = float(span_mean)
        self.end_prob = 1.0 / self.span_mean
        self.start_prob = span_start_prob(self.span_mean, self.select_prob)

    @classmethod
    def for_tokenizer(cls, tokenizer, span_mean: float = 3.0, **probabilities) -> "SpanMasker":
        return cls(mask_id=tokenizer.mask_id,
                   replacement_ids=range(tokenizer.first_real_id, tokenizer.vocab_size),
                   never_select_ids=tokenizer.special_ids, span_mean=span_mean, **probabilities)

    def inside_spans(self, rows: int, length: int, rng: torch.Generator, device) -> torch.Tensor:
        """``[rows, length]`` bool: the Markov chain described above, True inside a span."""
        draw = torch.rand((rows, length), generator=rng, device=device)
        inside = torch.empty((rows, length), dtype=torch.bool, device=device)
        inside[:, 0] = draw[:, 0] < self.select_prob                    # the stationary start
        for i in range(1, length):
            stays_inside = draw[:, i] >= self.end_prob
            starts_span = draw[:, i] < self.start_prob
            inside[:, i] = torch.where(inside[:, i - 1], stays_inside, starts_span)
        return inside

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, rng: torch.Generator) -> MaskedBatch:
        """Mask spans of ``ids`` ``[batch, seq]`` with randomness from ``rng``."""
        _check_arguments(self, ids, rng, rows=True)
        maskable = ~torch.isin(ids, self.never_select_ids.to(ids.device))
        inside = self.inside_spans(ids.shape[0], ids.shape[1], rng, ids.device)
        span_starts = inside.clone()
        span_starts[:, 1:] &= ~inside[:, :-1]
        span_draw = torch.rand(ids.shape, generator=rng, device=ids.device)      # read at each span's start
        kind_draw = span_draw.gather(1, _first_position_of_run(span_starts))
        return _replace_selected(self, ids, inside & maskable, kind_draw, rng)
