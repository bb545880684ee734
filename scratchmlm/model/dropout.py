"""Inverted dropout, with a cheaper source of random bits on the CPU.

In training, each element is kept with probability ``1 - p`` and scaled by ``1 / (1 - p)`` so
that the expected output equals the input; in evaluation it is the identity:

    dropout(x)[i] = x[i] * keep[i] / (1 - p),        keep[i] ~ Bernoulli(1 - p)

``torch.nn.Dropout`` draws one random number per element, and on a CPU that draw is the most
expensive part of a small transformer's training step. Here one draw serves two elements:
``torch.random_`` fills an int32 with 31 uniform random bits, which are read as two 15-bit
integers ``u`` (bits 0-14 and 16-30), and an element is kept when ``u >= round(p * 32768)``. That
is the same definition with ``p`` rounded to a multiple of 1/32768 (0.1 becomes 0.100006), at
about a third of the cost. On a GPU, where random numbers are cheap, it simply calls
``F.dropout``. Both draw from the global torch generator, like ``nn.Dropout``, so
``torch.manual_seed`` makes them reproducible.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Dropout(nn.Module):
    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * 32768)                  # keep when a 15-bit uniform u >= this
        self.scale = 1.0 / (1.0 - self.threshold / 32768)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        random_bits = torch.empty((x.numel() + 1) // 2, dtype=torch.int32).random_()   # 31 bits each
        uniform15 = (random_bits.view(torch.int16) & 0x7FFF)[: x.numel()].view(x.shape)
        keep = (uniform15 >= self.threshold).to(x.dtype)
        return x * (keep * self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"
