"""Adapters: the only place the graded checks touch your code.

Each ``run_*`` function receives plain inputs and raw weights (float64 tensors named as in the
papers, not as any module stores them), builds *your* component, loads the weights into it, runs
it and returns the output. The versions below fit scratchmlm's reference layout (for example, its
attention keeps W_q, W_k, W_v as one fused ``qkv`` layer). If your implementation stores its
weights differently, say three separate ``nn.Linear`` layers, change the loading lines here, and
only here: the checks judge what your code computes, not how it is laid out.

Weight conventions: a linear map ``y = x W^T + b`` has ``W`` of shape ``[out, in]``, as in
``torch.nn.Linear``. Every run is in float64 with dropout off unless the call says otherwise.
"""

from __future__ import annotations

import torch

from ...masking import BertMasker, MaskedBatch
from ...model import Encoder, EncoderLayer, MultiHeadAttention
from ...noam import NoamScheduler, noam_lr
from ...step import StepResult, masked_cross_entropy, train_step


def run_masker(ids: torch.Tensor, rng: torch.Generator, mask_id: int, replacement_ids, never_select_ids,
               select_prob: float = 0.15, mask_token_prob: float = 0.8,
               random_token_prob: float = 0.1) -> MaskedBatch:
    """Part 1. Mask ``ids`` ``[batch, seq]``; returns ``inputs``, ``labels`` and ``kinds``."""
    masker = BertMasker(mask_id, replacement_ids, never_select_ids, select_prob, mask_token_prob,
                        random_token_prob)
    return masker(ids, rng)


def load_attention(attention: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``w_q, b_q, w_k, b_k, w_v, b_v`` (``[d_model, d_model]``, ``[d_model]``) and
    ``w_o, b_o`` into scratchmlm's ``MultiHeadAttention``."""
    with torch.no_grad():
        attention.qkv.weight.copy_(torch.cat([weights["w_q"], weights["w_k"], weights["w_v"]]))
        attention.qkv.bias.copy_(torch.cat([weights["b_q"], weights["b_k"], weights["b_v"]]))
        attention.out.weight.copy_(weights["w_o"])
        attention.out.bias.copy_(weights["b_o"])


def make_attention(weights: dict[str, torch.Tensor], num_heads: int, dropout: float = 0.0) -> torch.nn.Module:
    """Part 2. *Your* multi-head attention module in float64 with ``weights`` loaded, in eval mode.
    The checks call it as ``module(x, key_padding_mask)`` and, for the attention weights,
    ``module(x, key_padding_mask, return_weights=True)``; they also set ``module.train()`` and
    back-propagate through it, to see that every parameter gets its gradient."""
    d_model = weights["w_q"].shape[1]
    attention = MultiHeadAttention(d_model, num_heads, dropout=dropout).to(weights["w_q"].dtype).eval()
    load_attention(attention, weights)
    return attention


def run_attention(weights: dict[str, torch.Tensor], x: torch.Tensor, num_heads: int,
                  key_padding_mask: torch.Tensor | None = None, dropout: float = 0.0,
                  return_weights: bool = False):
    """Part 2. Multi-head self-attention of ``x`` ``[batch, seq, d_model]`` in eval mode;
    ``key_padding_mask`` ``[batch, seq]`` is True at padding keys. ``dropout`` is the module's dropout
    probability (eval mode must ignore it). Returns ``[batch, seq, d_model]``, and with
    ``return_weights`` also the attention weights ``[batch, heads, seq, seq]``."""
    attention = make_attention(weights, num_heads, dropout)
    with torch.no_grad():
        if return_weights:
            return attention(x, key_padding_mask, return_weights=True)
        return attention(x, key_padding_mask)


def run_encoder_layer(weights: dict[str, torch.Tensor], x: torch.Tensor, num_heads: int, d_ff: int,
                      norm_first: bool, dropout: float = 0.0,
                      key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Part 3. One encoder layer in eval mode. ``weights``: the attention's (as in
    ``run_attention``), the feed-forward's ``w_1 [d_ff, d_model], b_1, w_2 [d_model, d_ff], b_2``
    (GELU between them), and the two LayerNorms' ``norm1_weight, norm1_bias, norm2_weight,
    norm2_bias``: ``norm1`` is the one around the attention sub-layer, ``norm2`` around the
    feed-forward. ``dropout`` is the layer's dropout probability (eval mode must ignore it)."""
    layer = make_encoder_layer(weights, num_heads, d_ff, norm_first, dropout)
    with torch.no_grad():
        return layer(x, key_padding_mask)


def run_masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Part 4. The mean cross-entropy over positions whose label is not -100, and their count."""
    return masked_cross_entropy(logits, labels)


def run_train_step(model: torch.nn.Module, ids: torch.Tensor, masker, rng: torch.Generator,
                   optimizer: torch.optim.Optimizer, scheduler, clip_norm: float) -> StepResult:
    """Part 4. One training step; ``masker(ids, rng)`` returns the ``MaskedBatch`` to train on."""
    return train_step(model, ids, masker, rng, optimizer, scheduler, clip_norm)


def run_noam(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """Part 5. The Noam learning rate of optimizer step ``step`` (1-based)."""
    return noam_lr(step, d_model, warmup, factor)


def make_noam_scheduler(optimizer: torch.optim.Optimizer, d_model: int, warmup: int, factor: float = 1.0):
    """Part 5. The Noam scheduler of ``optimizer``: right after construction the optimizer's
    learning rate must be the one of step 1; each ``scheduler.step()`` moves to the next step's."""
    return NoamScheduler(optimizer, d_model, warmup, factor)


def make_encoder_layer(weights: dict[str, torch.Tensor], num_heads: int, d_ff: int, norm_first: bool,
                       dropout: float = 0.0) -> torch.nn.Module:
    """Part 3. *Your* encoder layer in float64 with ``weights`` (named as in ``run_encoder_layer``)
    loaded, in eval mode. The checks call it as ``layer(x, key_padding_mask)``; they also set
    ``layer.train()`` and back-propagate through it, to see that every parameter gets its gradient."""
    d_model = weights["w_q"].shape[1]
    layer = EncoderLayer(d_model, num_heads, d_ff, dropout=dropout, norm_first=norm_first).to(
        weights["w_q"].dtype).eval()
    load_encoder_layer(layer, weights)
    return layer


def load_encoder_layer(layer: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy one encoder layer's weights (named as in ``run_encoder_layer``) into scratchmlm's
    ``EncoderLayer``; ``run_encoder_layer`` and ``run_encoder`` both load through here."""
    load_attention(layer.attention, weights)
    with torch.no_grad():
        layer.feed_forward.linear1.weight.copy_(weights["w_1"])
        layer.feed_forward.linear1.bias.copy_(weights["b_1"])
        layer.feed_forward.linear2.weight.copy_(weights["w_2"])
        layer.feed_forward.linear2.bias.copy_(weights["b_2"])
        for norm, name in ((layer.norm1, "norm1"), (layer.norm2, "norm2")):
            norm.weight.copy_(weights[f"{name}_weight"])
            norm.bias.copy_(weights[f"{name}_bias"])


def run_encoder(layer_weights: list[dict[str, torch.Tensor]], final_norm: dict[str, torch.Tensor] | None,
                x: torch.Tensor, num_heads: int, d_ff: int, norm_first: bool,
                key_padding_mask: torch.Tensor | None = None, dropout: float = 0.0) -> torch.Tensor:
    """Part 3. The whole encoder stack in eval mode (``dropout`` is its layers' dropout probability,
    which eval mode must ignore): one layer per entry of
    ``layer_weights`` (each named as in ``run_encoder_layer``), then, for a pre-norm stack, the final
    LayerNorm with ``final_norm["weight"]``, ``final_norm["bias"]`` (``None`` for a post-norm stack,
    which has none). Returns ``[batch, seq, d_model]``."""
    encoder = Encoder(len(layer_weights), x.shape[-1], num_heads, d_ff, dropout=dropout,
                      norm_first=norm_first).to(x.dtype).eval()
    for layer, weights in zip(encoder.layers, layer_weights):
        load_encoder_layer(layer, weights)
    with torch.no_grad():
        if final_norm is not None:
            encoder.final_norm.weight.copy_(final_norm["weight"])
            encoder.final_norm.bias.copy_(final_norm["bias"])
        return encoder(x, key_padding_mask)
