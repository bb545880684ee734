"""Multi-head self-attention, written out.

For input ``x`` ``[batch, seq, d_model]`` and ``h`` heads of size ``d_k = d_model / h``:

    Q, K, V = x W_q, x W_k, x W_v                       each split into heads: [batch, h, seq, d_k]
    scores  = Q K^T / sqrt(d_k)                         [batch, h, seq, seq]
    scores[..., j] = -inf   where key j is padding (the most negative float: in the written-out
                                                        path a row of only padding stays finite)
    weights = softmax(scores, dim=-1)                   each row sums to 1
    heads   = weights V                                 [batch, h, seq, d_k]
    out     = concat(heads) W_o                         [batch, seq, d_model]

``W_q, W_k, W_v`` are stored as one ``d_model -> 3 d_model`` linear layer (one matmul instead of
three; mathematically identical). No causal mask: every position sees the whole sequence, which
is what lets a masked language model use the context on *both* sides of a gap.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import Dropout


def check_heads(d_model: int, num_heads: int) -> None:
    """``d_model`` splits into ``num_heads`` heads of ``d_model / num_heads`` dimensions each, or a
    one-line ``ValueError`` says which number of heads would fit."""
    for name, value in (("d_model", d_model), ("num_heads", num_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if d_model % num_heads != 0:
        fitting = max(h for h in range(1, min(num_heads, d_model, 4096) + 1) if d_model % h == 0)
        raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads}): each head gets "
                         f"d_model / num_heads dimensions. Try num_heads {fitting}.")


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.1):
        super().__init__()
        check_heads(d_model, num_heads)
        self.num_heads = num_heads
        self.d_k = d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout_p = dropout
        self.dropout = Dropout(dropout)
        # True: use torch's fused kernel for the same formula when weights are not requested.
        # The written-out path below is the definition; tests check the two agree.
        self.fused = False

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                return_weights: bool = False):
        """``x`` ``[batch, seq, d_model]``; ``key_padding_mask`` ``[batch, seq]``, True = padding.

        Returns ``[batch, seq, d_model]``, and the weights ``[batch, heads, seq, seq]`` when
        ``return_weights``.
        """
        # BEGIN SOLUTION attention
        # HINT: self.qkv(x) is [batch, seq, 3 * d_model] = q, k, v side by side, each split into num_heads
        # HINT: blocks of d_k; bring each to [batch, heads, seq, d_k] with view and permute/transpose
        # HINT: scores [batch, heads, seq, seq]; padding keys get the dtype's lowest value *before* the softmax
        # HINT: softmax over the keys (the last dim); self.dropout on the weights; self.fused may stay False
        batch, seq, d_model = x.shape
        # [batch, seq, 3, heads, d_k] -> 3 x [batch, heads, seq, d_k]
        q, k, v = self.qkv(x).view(batch, seq, 3, self.num_heads, self.d_k).permute(2, 0, 3, 1, 4)

        if self.fused and not return_weights:
            mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
            heads = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
            weights = None
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)            # [batch, heads, seq, seq]
            if key_padding_mask is not None:
                scores = scores.masked_fill(key_padding_mask[:, None, None, :], torch.finfo(scores.dtype).min)
            weights = scores.softmax(dim=-1)
            heads = self.dropout(weights) @ v                                  # [batch, heads, seq, d_k]

        merged = heads.transpose(1, 2).reshape(batch, seq, d_model)           # concat the heads
        output = self.out(merged)
        return (output, weights) if return_weights else output
        # END SOLUTION
