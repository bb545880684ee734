"""The same masked language model built from ``torch.nn.TransformerEncoderLayer``.

Used only by the experiments, to compare scratchmlm's written-out encoder against PyTorch's own
implementation of the same architecture (pre-norm, GELU, same sizes, same embeddings and
generator, same parameter count). It takes the place of ``scratchmlm.TransformerMLM`` anywhere:
``model(ids) -> logits [batch, seq, vocab]``.
"""

import math

import torch
from torch import nn

from scratchmlm.model import sinusoidal_positions


class TorchEncoderMLM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int = 128, num_heads: int = 8, num_layers: int = 6,
                 d_ff: int = 256, max_len: int = 32, dropout: float = 0.1, init_std: float = 0.02):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.token = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.token.weight, std=d_model ** -0.5)
        self.register_buffer("position", sinusoidal_positions(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, d_ff, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model),
                                             enable_nested_tensor=False)
        self.generator = nn.Linear(d_model, vocab_size)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=init_std)
                nn.init.zeros_(module.bias)
        for layer in self.encoder.layers:   # the attention's packed input projection
            nn.init.normal_(layer.self_attn.in_proj_weight, std=init_std)
            nn.init.zeros_(layer.self_attn.in_proj_bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token(ids) * math.sqrt(self.d_model) + self.position[: ids.shape[1]]
        return self.generator(self.encoder(self.dropout(x)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
