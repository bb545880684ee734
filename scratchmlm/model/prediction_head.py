"""BERT's masked-LM head: a transform, then a decoder that shares the token embeddings.

    h'     = LayerNorm(act(h W_t + b_t))        the transform      [batch, seq, d_model] -> same
    logits = h' E^T + b                          the decoder        -> [batch, seq, vocab]

``E`` ``[vocab, d_model]`` is the embedding table itself (tied weights: one tensor, passed in by
the model, so the head owns only ``b``). A token's output score is then the dot product of the
transformed hidden vector with that token's input vector, and the vocabulary costs parameters
once, not twice. ``act`` is the feed-forward's activation (GELU, the exact erf form, in BERT).
"""

import torch
import torch.nn.functional as F
from torch import nn


class MaskedLMHead(nn.Module):
    def __init__(self, d_model: int, vocab_size: int, activation: str = "gelu", layer_norm_eps: float = 1e-12):
        super().__init__()
        activations = {"gelu": nn.GELU, "relu": nn.ReLU}
        if activation not in activations:
            raise ValueError(f"activation must be one of {sorted(activations)}, got {activation!r}")
        self.dense = nn.Linear(d_model, d_model)
        self.activation = activations[activation]()
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, token_embeddings: torch.Tensor) -> torch.Tensor:
        """``hidden`` ``[batch, seq, d_model]``, ``token_embeddings`` ``E`` ``[vocab, d_model]``
        -> logits ``[batch, seq, vocab]``."""
        transformed = self.norm(self.activation(self.dense(hidden)))
        return F.linear(transformed, token_embeddings, self.bias)
