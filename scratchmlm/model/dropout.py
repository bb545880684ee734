"""Inverted dropout, with a cheaper source of random bits on the CPU.

In training, each element is kept with probability ``1 - p`` and scaled by ``1 / (1 - p)`` so
that the expected output equals the input; in evaluation it is the identity:

    dropout(x)[i] = x[i] * keep[i] / (1 - p),        keep[i] ~ Bernoulli(1 - p)

``forward`` takes one of three paths:

(a) **eval mode, or p == 0**: the identity; ``x`` itself is returned.
(b) **CPU**: a cheaper source of random bits, and integer arithmetic. ``torch.nn.Dropout`` draws
    one random float per element from torch's Mersenne Twister (32 bits a call, one thread), and on
    a CPU that draw is the most expensive part of a small transformer's training step. Here one
    63-bit draw from torch's generator seeds numpy's SFC64 generator, whose 64-bit outputs are
    read as four 15-bit integers ``u`` (each 16-bit quarter with its top bit cleared). An element
    is kept when ``u >= round(p * 32768)``: the same definition with ``p`` rounded to a multiple
    of 1/32768 (0.1 becomes 0.100006), for a tenth of the cost of a Bernoulli draw per element
    (0.26 against 2.5 ms for the 524,288 attention weights of a seed-model layer). The comparison is
    written as integer arithmetic, ``clamp(u - (threshold - 1), 0, 1)``, because a bool result
    and its conversion to float are several times slower on a CPU than integer operations.
(c) **any other device** (a GPU, where random numbers are cheap): ``F.dropout`` with ``p`` as given.

Paths (b) and (c) draw from the global torch generator, like ``nn.Dropout``, so
``torch.manual_seed`` makes them reproducible (and a checkpoint of torch's generator state resumes
them bit for bit).

Because of the rounding in (b), the constructor accepts only the ``p`` that (b) can represent:
``p == 0``, or ``1/65536 < p < 1 - 1/65536``. A smaller positive ``p`` would round to 0 (nothing
dropped) and a larger one to 1 (everything dropped); both raise ``ValueError`` on every device, so
a model behaves the same wherever it runs.
"""

import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 32768                                             # 2^15 values of a 15-bit uniform


def check_dropout(p: float) -> None:
    """``p`` is 0 or one of the probabilities the 15-bit threshold can represent, or a one-line
    ``ValueError`` says why not and what to use."""
    allowed = "dropout must be 0 or between 1/65536 and 1 - 1/65536"
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p < 1.0:
        raise ValueError(f"{allowed}, got {p!r}: a probability must be a number in [0, 1); use 0 for no dropout.")
    threshold = round(p * LEVELS)
    if p > 0 and threshold == 0:
        raise ValueError(f"{allowed}, got {p!r}, which would round to 0 on the CPU (p is rounded to a multiple of "
                         f"1/32768), dropping nothing; use p = 0 for no dropout, or 1/65536 < p < 1 - 1/65536 "
                         f"(the smallest is 1/32768 ≈ 3.05e-05).")
    if threshold == LEVELS:
        raise ValueError(f"{allowed}, got {p!r}, which would round to 1 on the CPU (p is rounded to a multiple of "
                         f"1/32768), dropping everything; use 1/65536 < p < 1 - 1/65536 (the largest is "
                         f"32767/32768 ≈ 0.99997).")


class Dropout(nn.Module):
    def __init__(self, p: float = 0.1):
        super().__init__()
        check_dropout(p)
        threshold = round(p * LEVELS)                      # keep when a 15-bit uniform u >= this
        self.p = p
        self.threshold = threshold
        self.scale = 1.0 / (1.0 - self.threshold / LEVELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        uniform15 = random_15_bit_integers(x.numel()).view(x.shape)
        keep = (uniform15 - (self.threshold - 1)).clamp_(0, 1)       # 1 where uniform15 >= threshold, else 0
        return x * keep.to(x.dtype).mul_(self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def random_15_bit_integers(count: int) -> torch.Tensor:
    """``count`` independent integers, uniform in [0, 32768), as an int16 tensor ``[count]``.

    Seeded by one draw from the global torch generator; numpy's SFC64 then gives 64 random bits
    per call, four integers' worth.
    """
    seed = int(torch.empty((), dtype=torch.int64).random_())       # 63 bits from torch's generator
    words = np.random.SFC64(seed).random_raw((count + 3) // 4)    # uint64, 64 random bits each
    return (torch.from_numpy(words.view(np.int16)) & 0x7FFF)[:count]
