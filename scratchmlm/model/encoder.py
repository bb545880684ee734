"""Encoder layers: attention and feed-forward sub-layers, each wrapped in a residual + LayerNorm.

Pre-norm (default; stable without a long warm-up, used by GPT-2 and most modern encoders):

    x = x + dropout(Attention(LayerNorm(x)))
    x = x + dropout(FFN(LayerNorm(x)))

Post-norm (the original transformer and BERT):

    x = LayerNorm(x + dropout(Attention(x)))
    x = LayerNorm(x + dropout(FFN(x)))

A pre-norm stack leaves its residual stream un-normalised, so the ``Encoder`` ends with one more
LayerNorm; a post-norm stack is already normalised and gets none.

Every LayerNorm divides by ``sqrt(variance + layer_norm_eps)`` (1e-5, torch's default; BERT uses
1e-12). ``dropout_inside_feed_forward=False`` drops only the sub-layer outputs, not the hidden
activations between the feed-forward's two linear maps, as BERT does.
"""

import torch
from torch import nn

from .attention import MultiHeadAttention
from .dropout import Dropout
from .feed_forward import FeedForward


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1,
                 norm_first: bool = True, activation: str = "gelu", layer_norm_eps: float = 1e-5,
                 dropout_inside_feed_forward: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.attention = MultiHeadAttention(d_model, num_heads, dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout if dropout_inside_feed_forward else 0.0, activation)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                return_weights: bool = False):
        """``x`` ``[batch, seq, d_model]`` -> same shape (and the attention weights if asked)."""
        # BEGIN SOLUTION encoder
        # HINT: pre-norm:  x + dropout(sublayer(norm(x)))  for the attention, then for the feed-forward
        # HINT: post-norm: norm(x + dropout(sublayer(x))); norm1/dropout1 go with attention, norm2/dropout2 with FF
        # HINT: self.attention returns (output, weights) only when return_weights is True
        attention_input = self.norm1(x) if self.norm_first else x
        attended = self.attention(attention_input, key_padding_mask, return_weights=return_weights)
        weights = None
        if return_weights:
            attended, weights = attended
        if self.norm_first:
            x = x + self.dropout1(attended)
            x = x + self.dropout2(self.feed_forward(self.norm2(x)))
        else:
            x = self.norm1(x + self.dropout1(attended))
            x = self.norm2(x + self.dropout2(self.feed_forward(x)))
        return (x, weights) if return_weights else x
        # END SOLUTION


class Encoder(nn.Module):
    """``num_layers`` encoder layers, then a final LayerNorm for pre-norm stacks."""

    def __init__(self, num_layers: int, d_model: int, num_heads: int, d_ff: int,
                 dropout: float = 0.1, norm_first: bool = True, activation: str = "gelu",
                 layer_norm_eps: float = 1e-5, dropout_inside_feed_forward: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout, norm_first, activation, layer_norm_eps,
                         dropout_inside_feed_forward)
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if norm_first else nn.Identity()

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                return_weights: bool = False):
        """``[batch, seq, d_model]`` -> same shape; with ``return_weights`` also a list with one
        ``[batch, heads, seq, seq]`` tensor per layer."""
        # BEGIN SOLUTION encoder
        # HINT: pass x through every layer in order, then self.final_norm (an Identity for post-norm)
        all_weights = []
        for layer in self.layers:
            if return_weights:
                x, weights = layer(x, key_padding_mask, return_weights=True)
                all_weights.append(weights)
            else:
                x = layer(x, key_padding_mask)
        x = self.final_norm(x)
        return (x, all_weights) if return_weights else x
        # END SOLUTION
