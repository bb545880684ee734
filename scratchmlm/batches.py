"""Training windows and the frozen validation set.

Training batches are ``batch_size`` windows of ``seq_len`` consecutive token ids, each starting at
an independently drawn random offset: ``[batch, seq]``, built directly on the device of the token
tensor with an explicit ``torch.Generator`` (``rng``).

The validation set is frozen: fixed, evenly spaced, non-overlapping windows of the validation
split, masked once with a fixed seed on the CPU. Its sha256 fingerprint (over inputs, labels and
kinds) identifies it, so two results printed with the same fingerprint were scored on exactly the
same masked positions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ScratchMLMError
from .masking import BertMasker, MaskedBatch

VALIDATION_SEED = 1234
VALIDATION_WINDOWS = 1024


def random_windows(tokens: torch.Tensor, batch_size: int, seq_len: int,
                   rng: torch.Generator) -> torch.Tensor:
    """``batch_size`` random windows ``[batch, seq]`` of the 1-D ``tokens``, on ``tokens.device``."""
    if tokens.dim() != 1:
        raise ScratchMLMError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}.")
    if len(tokens) < seq_len:
        raise ScratchMLMError(f"The token stream ({len(tokens)}) is shorter than one window ({seq_len}).")
    starts = torch.randint(0, len(tokens) - seq_len + 1, (batch_size, 1),
                           generator=rng, device=tokens.device)          # [batch, 1]
    offsets = torch.arange(seq_len, device=tokens.device)                         # [seq]
    return tokens[starts + offsets]                                               # [batch, seq]


def evenly_spaced_windows(tokens: torch.Tensor, num_windows: int, seq_len: int) -> torch.Tensor:
    """Up to ``num_windows`` non-overlapping windows ``[n, seq]`` spread evenly over ``tokens``."""
    if len(tokens) < seq_len:
        raise ScratchMLMError(f"The validation text ({len(tokens)} tokens) is shorter than one window ({seq_len}).")
    available = len(tokens) // seq_len
    count = min(num_windows, available)
    slots = np.linspace(0, available - 1, count).round().astype(np.int64)
    starts = torch.from_numpy(slots * seq_len).to(tokens.device)
    return tokens[starts[:, None] + torch.arange(seq_len, device=tokens.device)]


@dataclass
class FrozenValidationSet:
    """Fixed windows masked once. ``batch`` is a ``MaskedBatch`` ``[n, seq]``; ``fingerprint`` its sha256."""

    batch: MaskedBatch
    originals: torch.Tensor
    fingerprint: str

    @classmethod
    def build(cls, valid_tokens: torch.Tensor, masker: BertMasker, seq_len: int,
              num_windows: int = VALIDATION_WINDOWS, seed: int = VALIDATION_SEED) -> "FrozenValidationSet":
        windows = evenly_spaced_windows(valid_tokens.cpu(), num_windows, seq_len)
        batch = masker(windows, torch.Generator().manual_seed(seed))
        return cls(batch=batch, originals=windows, fingerprint=fingerprint(batch))

    def __len__(self) -> int:
        return self.batch.inputs.shape[0]

    def to(self, device) -> "FrozenValidationSet":
        return FrozenValidationSet(self.batch.to(device), self.originals.to(device), self.fingerprint)


def fingerprint(batch: MaskedBatch) -> str:
    """sha256 of the masked inputs, labels and kinds (as little-endian int64), with their shape."""
    digest = hashlib.sha256(str(tuple(batch.inputs.shape)).encode())
    for tensor in (batch.inputs, batch.labels, batch.kinds):
        digest.update(tensor.detach().cpu().to(torch.int64).numpy().astype("<i8").tobytes())
    return digest.hexdigest()
