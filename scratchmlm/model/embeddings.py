"""Token embedding scaled by sqrt(d_model), plus a position signal.

    x[b, t] = E[ids[b, t]] * sqrt(d_model) + P[t]            -> [batch, seq, d_model]

``E`` is initialised with standard deviation ``d_model ** -0.5`` so that ``E * sqrt(d_model)``
has unit scale, the same order as the sinusoidal positions (values in [-1, 1]). With the usual
N(0, 1) initialisation the scaled token vectors would be ~16x larger than the positions for
d_model = 128 (entries of RMS sqrt(d_model) = 11.3 against the positions' sqrt(1/2) = 0.71), and the
model would at first be nearly blind to order.

Sinusoidal positions (Vaswani et al. 2017):
    P[t, 2i]   = sin(t / 10000^(2i / d_model))
    P[t, 2i+1] = cos(t / 10000^(2i / d_model))
"""

import math

import torch
from torch import nn

from .dropout import Dropout


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """The fixed sinusoidal position table ``[max_len, d_model]``."""
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)          # [max_len, 1]
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64)
                          * (-math.log(10000.0) / d_model))                    # [d_model / 2]
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table.float()


class Embeddings(nn.Module):
    """ids ``[batch, seq]`` -> vectors ``[batch, seq, d_model]``.

    ``positional="sinusoidal"`` (fixed table, a buffer) or ``"learned"`` (a trained table).
    """

    def __init__(self, vocab_size: int, d_model: int, max_len: int,
                 positional: str = "sinusoidal", dropout: float = 0.1):
        super().__init__()
        if positional not in ("sinusoidal", "learned"):
            raise ValueError(f"positional must be 'sinusoidal' or 'learned', got {positional!r}")
        self.d_model = d_model
        self.max_len = max_len
        self.vocab_size = vocab_size
        self.token = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.token.weight, std=d_model ** -0.5)
        if positional == "learned":
            # same scale as the sinusoidal table (whose entries have variance 1/2)
            self.position = nn.Parameter(torch.randn(max_len, d_model) * 0.5 ** 0.5)
        else:
            self.register_buffer("position", sinusoidal_positions(max_len, d_model), persistent=False)
        self.dropout = Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"ids must be an integer tensor [batch, seq], got {ids.dtype} {list(ids.shape)}")
        seq_len = ids.shape[1]
        if seq_len > self.max_len:
            raise ValueError(f"sequence length {seq_len} exceeds max_len {self.max_len} of the position table")
        # On a GPU this check would wait for the device; there an id out of range fails in the kernel.
        if ids.device.type == "cpu" and ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < self.vocab_size:
            raise ValueError(f"ids must lie in 0..{self.vocab_size - 1} (the vocabulary), got "
                             f"{int(ids.min())}..{int(ids.max())}")
        x = self.token(ids) * math.sqrt(self.d_model) + self.position[:seq_len]
        return self.dropout(x)
