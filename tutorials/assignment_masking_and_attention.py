# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Assignment: BERT masking and multi-head attention
#
# **Learning objectives**
# - Implement BERT's 15% / 80-10-10 masking so that its statistics are exactly right.
# - Implement multi-head self-attention from raw weight matrices, with a padding mask.
# - Read a grader's report: where your output differs, by how much, and which known mistake it matches.
#
# Write your code between the marked lines of the two cells that say **Your code**, then run the
# check cell under each. The checks are the ones `scratchmlm check masking` and
# `scratchmlm check attention` run; here they call your functions directly. Tutorials 02 and 03
# explain both pieces. Runs in a few seconds.

# %%
import math

import torch

from scratchmlm.classroom.checks import check_attention, check_masking
from scratchmlm.masking import IGNORE_INDEX, MASKED, NOT_SELECTED, RANDOMISED, UNCHANGED, MaskedBatch

# %% [markdown]
# ## Part 1: BERT masking
#
# For every position whose id is not in `never_select_ids`, independently:
# - select it with probability `select_prob`;
# - a selected position becomes `[MASK]` with probability `mask_token_prob`, a random id drawn
#   uniformly from `replacement_ids` with probability `random_token_prob`, and stays unchanged
#   otherwise. The three outcomes must be disjoint: decide them with **one** uniform draw.
#
# Return a `MaskedBatch(inputs, labels, kinds)`, all `[batch, seq]`: `labels` hold the original id
# at selected positions and `IGNORE_INDEX` (-100) elsewhere; `kinds` hold `NOT_SELECTED`, `MASKED`,
# `RANDOMISED` or `UNCHANGED` (as `torch.uint8`). Take every random number from `rng`, and never
# modify `ids`.

# %%
# Your code
def my_masker(ids, rng, mask_id, replacement_ids, never_select_ids, select_prob=0.15,
              mask_token_prob=0.8, random_token_prob=0.1):
    # BEGIN SOLUTION masking
    # HINT: torch.isin finds the maskable positions; torch.rand(ids.shape, generator=rng) draws uniforms
    replacement_ids = torch.as_tensor(list(replacement_ids), dtype=torch.long)
    never = torch.as_tensor(sorted(set(int(i) for i in never_select_ids) | {int(mask_id)}), dtype=torch.long)
    selected = (torch.rand(ids.shape, generator=rng) < select_prob) & ~torch.isin(ids, never)
    kind_draw = torch.rand(ids.shape, generator=rng)
    to_mask = selected & (kind_draw < mask_token_prob)
    to_randomise = selected & ~to_mask & (kind_draw < mask_token_prob + random_token_prob)
    unchanged = selected & ~to_mask & ~to_randomise
    random_tokens = replacement_ids[torch.randint(len(replacement_ids), ids.shape, generator=rng)].to(ids.dtype)
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(to_randomise, random_tokens, inputs)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX)).long()
    kinds = (to_mask * MASKED + to_randomise * RANDOMISED + unchanged * UNCHANGED).to(torch.uint8)
    return MaskedBatch(inputs, labels, kinds)
    # END SOLUTION


# %%
check_masking(run_masker=my_masker)

# %% [markdown]
# ## Part 2: multi-head self-attention
#
# `x` is `[batch, seq, d_model]`; `weights` holds `w_q, w_k, w_v, w_o` (`[d_model, d_model]`, used
# as `x @ w.T`, like `torch.nn.Linear`) and the biases `b_q, b_k, b_v, b_o` (`[d_model]`). With
# `h = num_heads` heads of size `d_k = d_model / h`:
#
#     Q, K, V = x w_q^T + b_q, ...                    split into heads: [batch, h, seq, d_k]
#     scores  = Q K^T / sqrt(d_k)                     [batch, h, seq, seq]
#     scores[..., j] = -inf  where key j is padding   (key_padding_mask [batch, seq], True = padding)
#     weights = softmax(scores) over the keys
#     out     = concat(weights V) w_o^T + b_o         [batch, seq, d_model]
#
# No causal mask: every position sees both sides.

# %%
# Your code
def my_attention(weights, x, num_heads, key_padding_mask=None):
    # BEGIN SOLUTION attention
    # HINT: view [batch, seq, h, d_k] then transpose(1, 2) gives [batch, h, seq, d_k]
    batch, seq, d_model = x.shape
    d_k = d_model // num_heads

    def heads(w, b):
        return (x @ w.T + b).view(batch, seq, num_heads, d_k).transpose(1, 2)

    q, k, v = heads(weights["w_q"], weights["b_q"]), heads(weights["w_k"], weights["b_k"]), heads(weights["w_v"], weights["b_v"])
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    merged = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, seq, d_model)
    return merged @ weights["w_o"].T + weights["b_o"]
    # END SOLUTION


# %%
check_attention(run_attention=my_attention)

# %% [markdown]
# ## When a check fails
# A failing report names the first index where your output differs, the largest error, and,
# when your output equals what a known mistake produces on the same input, that mistake in words,
# e.g. *"softmax taken over the queries (dim=-2) instead of over the keys (dim=-1)"*. Try it:
# change `dim=-1` to `dim=-2` in your attention and run its check again.
