"""Position-wise feed-forward network: the same two-layer MLP applied at every position.

    FFN(x) = W_2 dropout(GELU(x W_1 + b_1)) + b_2        [batch, seq, d_model] -> same shape

with hidden width ``d_ff``. GELU is the default (as in BERT); ``activation="relu"`` gives the
original transformer's ReLU.
"""

import torch
from torch import nn

from .dropout import Dropout


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1, activation: str = "gelu"):
        super().__init__()
        activations = {"gelu": nn.GELU, "relu": nn.ReLU}
        if activation not in activations:
            raise ValueError(f"activation must be one of {sorted(activations)}, got {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = activations[activation]()
        self.dropout = Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))
