"""The generator: one linear map from hidden vectors to vocabulary logits.

    logits = x W + b           [batch, seq, d_model] -> [batch, seq, vocab]

``softmax(logits)`` over the last axis is the model's distribution over the character at each
position; the loss only looks at it where the masker selected a position.
"""

import torch
from torch import nn


class Generator(nn.Module):
    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.projection = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)
