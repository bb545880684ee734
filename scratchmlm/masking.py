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
        for name, value in (("select_prob", select_prob), ("mask_token_prob", mask_token_prob),
                            ("random_token_prob", random_token_prob)):
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ScratchMLMError(f"{name} must be a probability in [0, 1], got {value!r}.")
        if mask_token_prob + random_token_prob > 1.0 + 1e-12:
            raise ScratchMLMError(
                f"mask_token_prob + random_token_prob must be at most 1 (the rest stays unchanged), "
                f"got {mask_token_prob} + {random_token_prob} = {mask_token_prob + random_token_prob}."
            )
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
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32):
            raise ScratchMLMError("BertMasker expects an integer tensor of token ids, e.g. [batch, seq] int64.")
        if not isinstance(rng, torch.Generator):
            raise ScratchMLMError("BertMasker needs an explicit torch.Generator, "
                                  "e.g. torch.Generator().manual_seed(0).")
        if rng.device.type != ids.device.type:
            raise ScratchMLMError(
                f"The random generator rng is on {rng.device} but the ids are on {ids.device}; "
                f"create it with torch.Generator(device=ids.device)."
            )
        # BEGIN SOLUTION masking
        device = ids.device
        maskable = ~torch.isin(ids, self.never_select_ids.to(device))
        selected = (torch.rand(ids.shape, generator=rng, device=device) < self.select_prob) & maskable
        kind_draw = torch.rand(ids.shape, generator=rng, device=device)
        to_mask = selected & (kind_draw < self.mask_token_prob)
        to_randomise = selected & ~to_mask & (kind_draw < self.mask_token_prob + self.random_token_prob)
        unchanged = selected & ~to_mask & ~to_randomise

        replacements = self.replacement_ids.to(device)
        if replacements.numel():
            which = torch.randint(len(replacements), ids.shape, generator=rng, device=device)
            random_tokens = replacements[which].to(ids.dtype)
        else:
            random_tokens = ids
        inputs = torch.where(to_mask, torch.full_like(ids, self.mask_id), ids)
        inputs = torch.where(to_randomise, random_tokens, inputs)
        labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX)).long()
        kinds = (to_mask * MASKED + to_randomise * RANDOMISED + unchanged * UNCHANGED).to(torch.uint8)
        return MaskedBatch(inputs=inputs, labels=labels, kinds=kinds)
        # END SOLUTION

    def __repr__(self) -> str:
        unchanged = 1.0 - self.mask_token_prob - self.random_token_prob
        return (f"BertMasker(select={self.select_prob}, mask={self.mask_token_prob}, "
                f"random={self.random_token_prob}, unchanged={unchanged:.3g})")
